"""Reference derivatives of an MLP by generic autodiff (``torch.func``): the yardstick.

R(θ) + P(θ) as a plain function of the flat vector θ (the layout of
:class:`~saddlemap.deep.MLPLayout`); the closed forms of :mod:`saddlemap.deep.derivatives`
are tested against these, and :mod:`benchmarks` times both.

>>> import torch
>>> from saddlemap import Dataset
>>> from saddlemap.deep import MLP, mlp_gradient
>>> mlp = MLP([[[0.6]], [[1.4]], [[-0.3]]], biases=[[0.1], [0.2], None], activation="erf")
>>> data = Dataset([[-1.0], [0.5], [2.0]], [-1.0, 0.5, 0.0])
>>> bool(torch.allclose(mlp_gradient_autodiff(mlp, data), mlp_gradient(mlp, data), rtol=1e-12))
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch.func import grad, hessian, jvp

from ..data import Dataset
from ..errors import OptionError
from ._forward import checked_data
from .derivatives import penalty_mask
from .mlp import MLP

__all__ = [
    "mlp_gradient_autodiff",
    "mlp_hessian_autodiff",
    "mlp_hvp_autodiff",
    "mlp_loss_function",
    "mlp_output_function",
]

FlatFn = Callable[[torch.Tensor], torch.Tensor]


def mlp_output_function(net: MLP, data: Dataset) -> FlatFn:
    """θ ↦ g(θ, X), the outputs (n, K) as a function of the flat vector θ (P,)."""
    data = checked_data(net, data)
    layout, act, X = net.layout, net.activation.fn, data.X

    def outputs(theta: torch.Tensor) -> torch.Tensor:
        h = X
        for j, (W, b) in enumerate(layout.split(theta)):
            h = h @ W.T if b is None else h @ W.T + b
            if j < layout.depth - 1:
                h = act(h)
        return h

    return outputs


def mlp_loss_function(net: MLP, data: Dataset) -> FlatFn:
    """θ ↦ R(θ) + P(θ) = (1/n) Σ ℓ(g(θ, x_i), y_i) + (λ/2)‖Mθ‖² (P = 0 without a penalty)."""
    data = checked_data(net, data)
    outputs = mlp_output_function(net, data)
    penalty = data.penalty
    mask = None if penalty is None else penalty_mask(net.layout, penalty, net.flatten())

    def objective(theta: torch.Tensor) -> torch.Tensor:
        value = data.loss.value(outputs(theta), data.targets).mean()
        if penalty is not None and mask is not None:
            masked = theta * mask
            value = value + 0.5 * penalty.weight_decay * (masked * masked).sum()
        return value

    return objective


def mlp_gradient_autodiff(net: MLP, data: Dataset) -> torch.Tensor:
    """∇(R + P)(θ) by reverse mode, shape (P,)."""
    return grad(mlp_loss_function(net, data))(net.flatten())


def mlp_hvp_autodiff(
    net: MLP,
    data: Dataset,
    v: torch.Tensor,
    method: Literal["forward_over_reverse", "double_backward"] = "forward_over_reverse",
) -> torch.Tensor:
    """H v by ``jvp(grad(L))`` or by double backward ``∇(∇L · v)``, shape (P,)."""
    fn = mlp_loss_function(net, data)
    theta = net.flatten()
    v = torch.as_tensor(v, dtype=theta.dtype, device=theta.device)
    if method == "forward_over_reverse":
        return jvp(grad(fn), (theta,), (v,))[1]
    if method == "double_backward":
        theta = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(theta), theta, create_graph=True)
        (hv,) = torch.autograd.grad(g @ v, theta)
        return hv
    raise OptionError(f"unknown method {method!r}; use 'forward_over_reverse' or "
                      "'double_backward'")


def mlp_hessian_autodiff(net: MLP, data: Dataset) -> torch.Tensor:
    """∇²(R + P)(θ) by ``torch.func.hessian``, shape (P, P)."""
    return hessian(mlp_loss_function(net, data))(net.flatten())
