"""The forward and backward pass every closed-form derivative of an MLP shares (private).

With h_0 = X, z_{j+1} = h_j W_jᵀ + b_j, h_{j+1} = σ(z_{j+1}) (hidden layers) and g = z_L:
S1[j] = σ'(z_j), the residual δ_L = ∇_g ℓ / n and, going down, back_j = δ_{j+1} W_j,
δ_j = back_j ∘ S1[j] (δ_j = ∂R/∂z_j, each row one sample).  For second derivatives also
bS2_j = back_j ∘ σ''(z_j), the coefficient of the second-order term of δ's tangent.
Lists are indexed by layer j = 0..L (entries that do not exist are None).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._forward import checked_data
from ..data import Dataset
from .mlp import MLP


@dataclass(frozen=True, eq=False)
class DeepForward:
    """The pass at θ on the data: h, σ', δ, back and bS2 per layer (see the module docstring)."""

    net: MLP
    data: Dataset
    h: list[torch.Tensor]
    S1: list[torch.Tensor | None]
    g: torch.Tensor
    delta: list[torch.Tensor | None]
    back: list[torch.Tensor | None]
    bS2: list[torch.Tensor | None]

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.g.shape[0])

    def curvature_apply(self, v: torch.Tensor) -> torch.Tensor:
        """∇²ℓ v_i / n for v of shape (..., n, K)."""
        return self.data.loss.hess_apply(self.g, self.data.targets, v) / self.n


def _layer(z: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return z if b is None else z.add_(b)


def deep_forward(net: MLP, data: Dataset, order: int = 2) -> DeepForward:
    """The pass for derivatives up to ``order`` (0: outputs, 1: + δ, 2: + bS2)."""
    data = checked_data(net, data)
    L, act = net.depth, net.activation
    h: list[torch.Tensor] = [data.X]
    S1: list[torch.Tensor | None] = [None] * (L + 1)
    S2: list[torch.Tensor | None] = [None] * (L + 1)
    for j in range(L - 1):
        z = _layer(h[j] @ net.weights[j].T, net.biases[j])
        if order == 0:
            h.append(act(z))
        elif order == 1:
            s, S1[j + 1] = act.with_first_derivative(z)
            h.append(s)
        else:
            s, S1[j + 1], S2[j + 1] = act.with_derivatives(z)
            h.append(s)
    g = _layer(h[-1] @ net.weights[-1].T, net.biases[-1])
    delta: list[torch.Tensor | None] = [None] * (L + 1)
    back: list[torch.Tensor | None] = [None] * (L + 1)
    bS2: list[torch.Tensor | None] = [None] * (L + 1)
    if order >= 1:
        delta[L] = data.loss.grad(g, data.targets) / data.n
        for j in range(L - 1, 0, -1):
            back[j] = delta[j + 1] @ net.weights[j]  # type: ignore[operator]
            delta[j] = back[j] * S1[j]  # type: ignore[operator]
            if order >= 2:
                bS2[j] = back[j] * S2[j]  # type: ignore[operator]
    return DeepForward(net, data, h, S1, g, delta, back, bS2)
