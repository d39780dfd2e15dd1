"""Saddle witnesses per hidden layer of an MLP: null neurons and negative-ratio splits.

For hidden layer j (0-based; outgoing weights W_{j+1} into z_{j+2}) and a point θ, with
δ_{j+2} = ∂R/∂z_{j+2} the back-propagated residual and h̃_j the layer's (augmented) inputs,
the **residual function** of the layer is vector-valued (docs/theory-deep.md §2):

    φ_j(u) = Σ_i δ_{j+2,i} σ(uᵀh̃_{j,i}) ∈ R^{n_{j+2}},
    ∇φ_j(u) = Σ_i δ_{j+2,i} σ'(uᵀh̃_{j,i}) h̃_{j,i}ᵀ,

and ∂R/∂W_{j+1}[:, k] = φ_j(w̃_k), so at a critical point every neuron of the layer is a
zero of φ_j.  Two constructions give a way down from a critical point θ* of the narrower
network after an output-preserving embedding (docs/theory-deep.md §3):

* :func:`null_neuron_witness`: a null neuron (u, 0) at a zero u of φ_j keeps θ* critical;
  its block of the Hessian is [[A, ∇φ_j(u)], [∇φ_j(u)ᵀ, 0]] (outgoing, incoming), which is
  indefinite when ∇φ_j(u) ≠ 0: with ξ the top right singular vector of ∇φ_j(u)
  (∇φ_j(u)ξ = s₁ζ) and η = −tζ, the curvature is t²ζᵀAζ − 2ts₁ < 0 for small t > 0.
  Zeros of φ_j always at hand: the incoming weights w̃_k of every neuron of the layer (the
  null copy), and u = 0 where σ(0) = 0 or the next layer has a bias.
* :func:`split_witness`: split neuron k into (λ, 1 − λ) and move the copies' incoming
  weights by (1 − λ)ξ and −λξ: the first-order change of z_{j+2} cancels and the
  curvature is λ(1 − λ) ξᵀK_kξ with K_k = Σ_i (a_kᵀδ_{j+2,i}) σ''(w̃_kᵀh̃_{j,i}) h̃ h̃ᵀ
  (a_k the outgoing column; Fukumizu & Amari 2000 for one hidden layer).  A negative
  ratio (λ > 1) gives a way down where K_k has a positive eigenvalue, λ ∈ (0, 1) where it
  has a negative one.

Every witness is re-checked on the wider network: vᵀHv by a Hessian-vector product, and
the loss along θ + tv on both sides.

>>> import torch
>>> from saddlemap import Dataset
>>> from saddlemap.deep import MLP, mlp_gradient
>>> mlp = MLP([[[0.8, -0.5], [0.3, 0.9]], [[1.0, -0.7], [0.4, 0.6]], [[0.5, -1.2]]])
>>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5], [0.3, -0.8]], dtype=torch.float64)
>>> data = Dataset(X, [0.2, -0.1, 0.4, 0.0])
>>> rf = layer_residual_function(mlp, data, 0)
>>> grad = mlp.layout.split(mlp_gradient(mlp, data))[1][0]   # ∂R/∂W_1, columns φ_0(w̃_k)
>>> bool(torch.allclose(rf.phi(mlp.incoming(0)).T, grad, rtol=1e-12, atol=0))
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import Dataset, as_tensor
from ..errors import DataError, ModelError, OptionError
from ._forward import deep_forward
from .derivatives import mlp_hvp, mlp_loss
from .embedding import MLPEmbedding, add_mlp_null_neuron, split_mlp_neuron
from .mlp import MLP

__all__ = [
    "LayerResidualFunction",
    "SaddleWitness",
    "layer_residual_function",
    "null_neuron_witness",
    "split_witness",
]

#: The steps t of the loss scan along a witness, on each side (relative to ‖θ‖ + 1).
_SCAN = np.geomspace(1e-4, 1.0, 25)


@dataclass(frozen=True, eq=False)
class LayerResidualFunction:
    """φ_j, ∇φ_j and the split curvature K of hidden layer j at a point (module docstring).

    Attributes:
        layer: j.
        H: the layer's augmented inputs h̃_j on the data, (n, D).
        delta: δ_{j+2} = ∂R/∂z_{j+2}, (n, n_{j+2}) (residuals of the data term R).
        fns: σ, σ', σ''.
    """

    layer: int
    H: torch.Tensor
    delta: torch.Tensor
    fns: tuple[Any, Any, Any]

    def _z(self, U: Any) -> tuple[torch.Tensor, bool]:
        u = torch.as_tensor(U, dtype=self.H.dtype, device=self.H.device)
        single = u.ndim == 1
        u2 = u.reshape(1, -1) if single else u
        if u2.ndim != 2 or u2.shape[1] != self.H.shape[1]:
            raise OptionError(f"points must have length D={self.H.shape[1]} for hidden layer "
                              f"{self.layer}, got shape {tuple(u.shape)}")
        return self.H @ u2.T, single

    def phi(self, U: Any) -> torch.Tensor:
        """φ_j(u): shape (n_{j+2},) for one point, (p, n_{j+2}) for p points."""
        Z, single = self._z(U)
        out = self.fns[0](Z).T @ self.delta
        return out[0] if single else out

    def grad(self, U: Any) -> torch.Tensor:
        """∇φ_j(u): shape (n_{j+2}, D) or (p, n_{j+2}, D)."""
        Z, single = self._z(U)
        out = torch.einsum("nc,np,nd->pcd", self.delta, self.fns[1](Z), self.H)
        return out[0] if single else out

    def curvature(self, u: Any, a: Any) -> torch.Tensor:
        """K = Σ_i (aᵀδ_{j+2,i}) σ''(uᵀh̃_{j,i}) h̃_{j,i} h̃_{j,i}ᵀ for one u (D,) and a."""
        Z, _ = self._z(torch.as_tensor(u).reshape(-1))
        a_t = torch.as_tensor(a, dtype=self.H.dtype, device=self.H.device).reshape(-1)
        coef = (self.delta @ a_t) * self.fns[2](Z[:, 0])
        return (self.H * coef[:, None]).T @ self.H

    def terms(self, u: Any) -> float:
        """Σ_i ‖δ_{j+2,i}‖₁ max(|σ(uᵀh̃_i)|, 1): the size of φ_j's terms, for "φ_j(u) = 0"."""
        Z, _ = self._z(torch.as_tensor(u).reshape(-1))
        size = self.fns[0](Z[:, 0]).abs().clamp(min=1.0)
        return float((self.delta.abs().sum(1) * size).sum())


def _hidden(net: MLP, layer: Any) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not (
        0 <= layer < net.depth - 1
    ):
        raise ModelError(f"hidden layer {layer!r} is out of range: this MLP has hidden layers "
                         f"0 to {net.depth - 2}")
    return int(layer)


def layer_residual_function(net: MLP, data: Dataset, layer: int) -> LayerResidualFunction:
    """The residual function φ_j of hidden layer j of ``net`` on ``data`` (R's, no penalty)."""
    j = _hidden(net, layer)
    fw = deep_forward(net, data, order=1)
    H = fw.h[j]
    if net.biases[j] is not None:
        H = torch.cat([H, torch.ones_like(H[:, :1])], dim=1)
    delta = fw.delta[j + 2]
    assert delta is not None  # a pass of order 1 has every δ
    act = net.activation
    return LayerResidualFunction(j, H, delta, (act.fn, act.d1, act.d2))


@dataclass(frozen=True, eq=False)
class SaddleWitness:
    """A direction down from an embedded critical point, with its checks.

    Attributes:
        kind: ``"null neuron"`` or ``"split"``.
        layer: the hidden layer.
        embedding: the embedding that made the wider network (``embedding.net``).
        direction: unit v in the wider network's flat layout.
        curvature: vᵀHv, measured by a Hessian-vector product on the wider network.
        predicted: the curvature the construction predicts (module docstring).
        loss: R at the wider network (= R at the narrower one).
        best_step: the t of the lowest loss found along θ + tv (either sign).
        best_loss: R there.
        verified: vᵀHv < 0 beyond rounding, or a strict decrease of R along v.
        evidence: what was measured, in words.
    """

    kind: str
    layer: int
    embedding: MLPEmbedding
    direction: torch.Tensor
    curvature: float
    predicted: float
    loss: float
    best_step: float
    best_loss: float
    verified: bool
    evidence: tuple[str, ...]

    @property
    def net(self) -> MLP:
        """The wider network the witness is a saddle direction of."""
        return self.embedding.net

    @property
    def stepped(self) -> MLP:
        """The wider network moved to the lowest point found along the witness."""
        theta = self.net.flatten()
        return self.net.unflatten(theta + self.best_step * self.direction)


def _finish(kind: str, layer: int, emb: MLPEmbedding, v: torch.Tensor, predicted: float,
            data: Dataset, scale: float, evidence: list[str]) -> SaddleWitness:
    """Normalise v, measure vᵀHv and scan R along ±v."""
    norm = float(torch.linalg.vector_norm(v))
    v = v / norm
    predicted /= norm * norm
    net = emb.net
    curvature = float(v @ mlp_hvp(net, data, v))
    loss = mlp_loss(net, data)
    theta = net.flatten()
    reach = 1.0 + float(torch.linalg.vector_norm(theta))
    steps = np.concatenate([-_SCAN[::-1], _SCAN]) * reach
    losses = [mlp_loss(net.unflatten(theta + float(t) * v), data) for t in steps]
    best = int(np.argmin(losses))
    eps = torch.finfo(net.dtype).eps
    # vᵀHv carries rounding of a few ε times the size of the terms it sums
    negative = curvature < -math.sqrt(eps) * max(scale, abs(curvature))
    decrease = losses[best] < loss - 64 * eps * max(abs(loss), 1e-300)
    evidence += [
        f"vᵀHv = {curvature:.6g} by a Hessian-vector product (construction: {predicted:.6g})",
        f"R along θ + tv: {loss:.10g} → {losses[best]:.10g} at t = {steps[best]:.3g}",
    ]
    return SaddleWitness(kind, layer, emb, v, curvature, predicted, loss, float(steps[best]),
                         float(losses[best]), negative or decrease, tuple(evidence))


def _zero_candidates(net: MLP, rf: LayerResidualFunction, j: int) -> list[tuple[str, torch.Tensor]]:
    cands = [(f"w̃_{k} (a null copy of neuron {k})", net.incoming(j)[k])
             for k in range(net.widths[j])]
    zero = torch.zeros(rf.H.shape[1], dtype=rf.H.dtype, device=rf.H.device)
    if net.activation.zero_at_origin or net.biases[j + 1] is not None:
        cands.append(("u = 0", zero))
    return cands


def null_neuron_witness(
    net: MLP, data: Dataset, layer: int, u: Any = None, zero_rtol: float = 1e-9
) -> SaddleWitness:
    """A null neuron at a regular zero of φ_j and its direction of negative curvature.

    Args:
        net: a critical point θ* (checked where it matters: φ_j(u) = 0 is checked).
        data: the data.
        layer: j, the hidden layer to widen.
        u: the null neuron's incoming weights (length D of the layer, with the bias); by
            default the zero of φ_j among the layer's own incoming weights (and 0 where
            φ_j(0) = 0) with the largest ‖∇φ_j(u)‖.
        zero_rtol: u is a zero when ‖φ_j(u)‖ ≤ zero_rtol times the size of φ_j's terms.

    Returns:
        The :class:`SaddleWitness` on the network widened by (u, 0).

    Raises:
        ModelError: u is not a zero of φ_j (the message gives ‖φ_j(u)‖), or no zero is
            regular (∇φ_j = 0 at every candidate: a non-strict case, not constructed here).
    """
    j = _hidden(net, layer)
    rf = layer_residual_function(net, data, j)
    if u is not None:
        try:
            point = as_tensor(u, "u", net.dtype, net.device).reshape(-1)
        except DataError as exc:
            raise ModelError(str(exc)) from None
        cands = [("the given u", point)]
    else:
        cands = _zero_candidates(net, rf, j)
    scored = []
    for label, c in cands:
        phi = float(torch.linalg.vector_norm(rf.phi(c)))
        if phi > zero_rtol * rf.terms(c):
            if u is not None:
                raise ModelError(f"u is not a zero of φ_{j}: ‖φ_{j}(u)‖ = {phi:.3e} exceeds "
                                 f"{zero_rtol:g} × {rf.terms(c):.3e} (the size of its terms)")
            continue
        scored.append((float(torch.linalg.matrix_norm(rf.grad(c), ord=2)), label, c, phi))
    if not scored:
        raise ModelError(f"no zero of φ_{j} among the candidates: is the network critical?")
    s1, label, point, phi = max(scored, key=lambda item: item[0])
    if s1 <= 1e-6 * rf.terms(point):
        raise ModelError(f"every zero of φ_{j} tried is singular (‖∇φ_{j}(u)‖ = {s1:.2e}): "
                         "no strict-saddle direction from a null neuron there")
    emb = add_mlp_null_neuron(net, j, point)
    G = rf.grad(point)
    Uo, S, Vh = torch.linalg.svd(G)
    zeta, xi = Uo[:, 0], Vh[0]
    wide = emb.net
    m = wide.widths[j] - 1  # the null neuron, last in its layer
    v_out = _direction(wide, j, m, incoming=None, outgoing=zeta)
    alpha = float(v_out @ mlp_hvp(wide, data, v_out))  # ζᵀAζ
    t = float(S[0]) / alpha if alpha > 0 else 1.0
    v = _direction(wide, j, m, incoming=xi, outgoing=-t * zeta)
    predicted = t * t * alpha - 2 * t * float(S[0])
    evidence = [f"null neuron at {label} in hidden layer {j}: ‖φ_{j}(u)‖ = {phi:.2e}, "
                f"‖∇φ_{j}(u)‖₂ = {s1:.3e}"]
    return _finish("null neuron", j, emb, v, predicted, data, abs(alpha) + float(S[0]),
                   evidence)


def _direction(net: MLP, j: int, k: int, incoming: torch.Tensor | None,
               outgoing: torch.Tensor | None) -> torch.Tensor:
    """A flat vector moving neuron k of hidden layer j: its w̃_k and/or outgoing column."""
    v = torch.zeros(net.num_params, dtype=net.dtype, device=net.device)
    parts = net.layout.split(v)
    if incoming is not None:
        n_in = net.layout.sizes[j]
        parts[j][0][k] = incoming[:n_in]
        if parts[j][1] is not None:
            parts[j][1][k] = incoming[n_in]  # type: ignore[index]
    if outgoing is not None:
        parts[j + 1][0][:, k] = outgoing
    return v


def split_witness(
    net: MLP, data: Dataset, layer: int, neuron: int, ratio: float | None = None
) -> SaddleWitness:
    """A split of neuron k with ratios (λ, 1 − λ) and its Fukumizu–Amari direction.

    Args:
        net: a critical point θ* (the curvature formula holds at any point).
        data: the data.
        layer: j, the hidden layer.
        neuron: k.
        ratio: λ; by default 2 (the negative ratio −1 for the second copy) where K_k has a
            positive eigenvalue, else ½ where it has a negative one.

    Returns:
        The :class:`SaddleWitness` on the split network: copy 1 (slot k) moved by (1 − λ)ξ,
        copy 2 (the last slot) by −λξ, ξ the eigenvector of K_k whose eigenvalue μ makes
        λ(1 − λ)μ most negative.

    Raises:
        ModelError: K_k = 0 (no second-order way down by splitting), or λ ∈ {0, 1}.
    """
    j = _hidden(net, layer)
    if isinstance(neuron, bool) or not 0 <= int(neuron) < net.widths[j]:
        raise ModelError(f"neuron {neuron!r} is out of range for hidden layer {j} of width "
                         f"{net.widths[j]}")
    k = int(neuron)
    rf = layer_residual_function(net, data, j)
    K = rf.curvature(net.incoming(j)[k], net.weights[j + 1][:, k])
    mu, vecs = torch.linalg.eigh(K)
    scale = max(float(mu.abs().max()), 1e-300)
    tol = 1e-10 * max(scale, float(rf.delta.abs().sum()))
    if ratio is None:
        if float(mu[-1]) > tol:
            ratio = 2.0
        elif float(mu[0]) < -tol:
            ratio = 0.5
        else:
            raise ModelError(f"K of neuron {k} in hidden layer {j} is zero (max |μ| = "
                             f"{scale:.2e}): splitting gives no second-order way down")
    lam = float(ratio)
    if not math.isfinite(lam) or lam in (0.0, 1.0):
        raise ModelError(f"ratio must be finite and not 0 or 1, got {ratio!r}")
    coef = lam * (1.0 - lam)
    pick = int(torch.argmin(coef * mu))
    xi, mu_pick = vecs[:, pick], float(mu[pick])
    emb = split_mlp_neuron(net, j, k, [lam, 1.0 - lam])
    wide = emb.net
    v = (_direction(wide, j, k, incoming=(1.0 - lam) * xi, outgoing=None)
         + _direction(wide, j, wide.widths[j] - 1, incoming=-lam * xi, outgoing=None))
    evidence = [f"split of neuron {k} in hidden layer {j} with ratios ({lam:g}, {1 - lam:g}); "
                f"K has eigenvalues in [{float(mu[0]):.3e}, {float(mu[-1]):.3e}], "
                f"ξ for μ = {mu_pick:.3e}"]
    return _finish("split", j, emb, v, coef * mu_pick, data, scale * (1 + lam * lam), evidence)
