"""Output-preserving embeddings of an MLP, per layer: splits and null neurons.

Each operator maps an MLP θ to a wider one T(θ) = Aθ + o with the same output function, for
every θ (the Embedding Principle for deep networks: Zhang, Zhang, Zhang & Xu,
"Embedding Principle: a hierarchical structure of loss landscape of deep neural
networks", arXiv:2111.15527):

* :func:`split_mlp_neuron` (one-step embedding): neuron k of hidden layer j → copies with
  the same incoming weights w̃_k and outgoing columns ρ_c W_{j+1}[:, k], Σ_c ρ_c = 1.  Linear
  and sample-independent: every critical point of R maps to a critical point, for every
  data set and loss (proved there for fully connected networks of any depth).
* :func:`add_mlp_null_neuron`: a neuron (u, 0) in hidden layer j: incoming weights u,
  outgoing column 0.  Its outgoing gradient is φ_j(u) = Σ_i δ_{j+2,i} σ(uᵀh̃_{j,i}) (δ the
  back-propagated residual of the next layer), its incoming gradient 0: critical exactly
  where φ_j(u) = 0, so sample-dependent unless u = 0 and (σ(0) = 0 or layer j + 1 has a
  bias, whose gradient Σ_i δ_{j+2,i} vanishes at a critical point).

Since R_new(Aθ + o) = R_old(θ) for all θ, H_old = Aᵀ H_new A with A injective: the numbers
of negative and of positive Hessian eigenvalues never decrease.

**Layout.** A new neuron is appended after the last neuron of its layer (the first copy of
a split stays in slot k); :class:`MLPEmbedding` stores A as a map: each new parameter is
``scale · θ_old[index]`` (or 0 where ``index`` is −1) plus ``offset``, so Aθ + o is exact.

>>> import torch
>>> from saddlemap.deep import MLP
>>> mlp = MLP([[[1.0], [2.0]], [[0.5, -1.0]], [[3.0]]], activation="tanh")
>>> emb = split_mlp_neuron(mlp, layer=1, neuron=0, ratios=[0.25, 0.75])
>>> emb.net.widths, emb.net.weights[2].tolist()
((2, 2), [[0.75, 2.25]])
>>> X = torch.linspace(-2, 2, 5, dtype=torch.float64).unsqueeze(1)
>>> bool(torch.allclose(emb.net(X), mlp(X), rtol=0, atol=1e-15))
True
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..data import as_tensor
from ..errors import DataError, ModelError
from .mlp import MLP, MLPLayout

__all__ = ["MLPEmbedding", "add_mlp_null_neuron", "split_mlp_neuron"]

#: Σρ − 1 may miss by this many ulps of Σ|ρ|.
_SUM_ULPS = 16

_Layers = list[tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True, eq=False)
class MLPEmbedding:
    """An output-preserving affine map θ_new = Aθ_old + o, and the network it made.

    Attributes:
        net: the wider network.
        source: the layout of the networks it maps.
        index: (P_new,) the old parameter each new one copies, −1 for none.
        scale: (P_new,) the factor of that copy (a split ratio on outgoing weights, else 1).
        offset: (P_new,) o: the null neuron's incoming weights, zero elsewhere.
        kind: ``"split"`` or ``"null"``.
        layer: the hidden layer it widened.
        sample_independent: whether every critical point stays critical for every data.
        description: one line in words.
    """

    net: MLP
    source: MLPLayout
    index: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    kind: str
    layer: int
    sample_independent: bool
    description: str

    @property
    def matrix(self) -> torch.Tensor:
        """A, dense, shape (P_new, P_old)."""
        A = self.scale.new_zeros(self.index.numel(), self.source.num_params)
        rows = torch.nonzero(self.index >= 0).flatten()
        A[rows, self.index[rows]] = self.scale[rows]
        return A

    @property
    def is_linear(self) -> bool:
        """Whether o = 0."""
        return not bool(self.offset.any())

    def apply(self, theta: torch.Tensor) -> torch.Tensor:
        """Aθ + o for flat vectors θ of shape (..., P_old)."""
        t = torch.as_tensor(theta, dtype=self.scale.dtype, device=self.scale.device)
        if t.ndim == 0 or t.shape[-1] != self.source.num_params:
            raise ModelError(f"theta must have length {self.source.num_params}, got shape "
                             f"{tuple(t.shape)}")
        safe = self.index.clamp(min=0)
        copied = t[..., safe] * torch.where(self.index >= 0, self.scale, 0.0)
        return copied + self.offset

    def __call__(self, net: MLP) -> MLP:
        """The same embedding applied to another MLP of the source layout."""
        if net.layout != self.source:
            raise ModelError(f"this embedding maps MLPs of layout {self.source}, got {net.layout}")
        return MLP.from_flat(self.apply(net.flatten()), self.net.layout, net.activation)


# ----------------------------------------------------------------------------- helpers
def _hidden_layer(net: MLP, layer: Any) -> int:
    try:
        j = operator.index(layer)
    except TypeError:
        raise ModelError(f"layer must be an integer index, got {layer!r}") from None
    if isinstance(layer, bool) or not 0 <= j < net.depth - 1:
        raise ModelError(f"hidden layer {layer!r} is out of range: this MLP has hidden layers "
                         f"0 to {net.depth - 2}")
    return j


def _neuron(net: MLP, j: int, neuron: Any) -> int:
    try:
        k = operator.index(neuron)
    except TypeError:
        raise ModelError(f"neuron must be an integer index, got {neuron!r}") from None
    m = net.widths[j]
    if isinstance(neuron, bool) or not 0 <= k < m:
        raise ModelError(f"neuron {neuron!r} is out of range for hidden layer {j} of width {m}")
    return k


def _ratios(ratios: Sequence[float], dtype: torch.dtype) -> list[float]:
    try:
        rho = [float(r) for r in ratios]
    except (TypeError, ValueError):
        raise ModelError(f"ratios must be a sequence of real numbers, got {ratios!r}") from None
    if len(rho) < 2:
        raise ModelError(f"a split needs at least 2 ratios, got {len(rho)}")
    if not all(math.isfinite(r) for r in rho):
        raise ModelError(f"ratios must be finite, got {rho}")
    total = math.fsum(rho)
    tol = _SUM_ULPS * torch.finfo(dtype).eps * max(1.0, math.fsum(abs(r) for r in rho))
    if abs(total - 1.0) > tol:
        raise ModelError(f"split ratios must sum to 1, got Σρ = {total!r} for {rho}")
    return rho


def _grow(layers: _Layers, j: int, rows: list[int | None], col_scale: list[float],
          fixed: torch.Tensor | None) -> _Layers:
    """Hidden layer j rebuilt neuron by neuron.

    New neuron i takes row ``rows[i]`` of W_j, b_j (``fixed`` where it is None) and column
    ``rows[i]`` of W_{j+1} times ``col_scale[i]`` (a zero column where it is None).
    """
    W, b = layers[j]
    W_next, b_next = layers[j + 1]
    new_W, new_b, cols = [], [], []
    for r, s in zip(rows, col_scale, strict=True):
        if r is None:
            assert fixed is not None
            new_W.append(fixed[: W.shape[1]])
            new_b.append(fixed[W.shape[1]:])
            cols.append(torch.zeros_like(W_next[:, 0]))
        else:
            new_W.append(W[r])
            new_b.append(b[r:r + 1] if b is not None else W.new_zeros(0))
            cols.append(W_next[:, r] * s)
    out = list(layers)
    out[j] = (torch.stack(new_W), None if b is None else torch.cat(new_b))
    out[j + 1] = (torch.stack(cols, dim=1), b_next)
    return out


def _make(net: MLP, j: int, rows: list[int | None], col_scale: list[float],
          fixed: torch.Tensor | None, kind: str, independent: bool, text: str) -> MLPEmbedding:
    layout = net.layout
    theta = net.flatten()
    values = _grow(layout.split(theta), j, rows, col_scale, fixed)
    # the same surgery on the positions (+1, so that "none" is 0) and on the factors
    positions = torch.arange(1, layout.num_params + 1, dtype=torch.float64, device=theta.device)
    zero_fixed = None if fixed is None else torch.zeros(fixed.numel(), dtype=torch.float64)
    index = _grow(layout.split(positions), j, rows, [1.0] * len(rows), zero_fixed)
    ones = torch.ones(layout.num_params, dtype=theta.dtype, device=theta.device)
    scales = _grow(layout.split(ones), j, rows, col_scale,
                   None if fixed is None else torch.zeros_like(fixed))
    offsets = _grow(layout.split(torch.zeros_like(theta)), j, rows, [0.0] * len(rows), fixed)
    wide = MLP([W for W, _ in values], [b for _, b in values], net.activation)
    new = wide.layout
    idx = (new.join(index).round().to(torch.long) - 1).to(theta.device)
    emb = MLPEmbedding(wide, layout, idx, new.join(scales), new.join(offsets), kind, j,
                       independent, text)
    assert torch.equal(emb.apply(theta), wide.flatten())  # each entry one product: exact
    return emb


# --------------------------------------------------------------------------- operators
def split_mlp_neuron(
    net: MLP, layer: int, neuron: int, ratios: Sequence[float]
) -> MLPEmbedding:
    """One-step embedding: split neuron k of hidden layer j into copies with ratios ρ_c.

    Copy c has the incoming weights of neuron k and outgoing column ρ_c W_{j+1}[:, k];
    Σ_c ρ_c = 1 keeps the output (Zhang, Zhang, Zhang & Xu, arXiv:2111.15527).  The first
    copy stays in slot k, the others are appended to the layer in the order of ``ratios``.

    Args:
        net: the network.
        layer: j, the hidden layer (0 ≤ j ≤ L − 2).
        neuron: k, the neuron (0-based).
        ratios: at least two finite reals summing to 1 (to a few ulps); any signs.

    Raises:
        ModelError: layer or neuron out of range, fewer than 2 ratios, Σρ ≠ 1.

    >>> from saddlemap.deep import MLP
    >>> mlp = MLP([[[1.0]], [[2.0]], [[3.0]]])
    >>> emb = split_mlp_neuron(mlp, 0, 0, [2.0, -1.0])
    >>> emb.net.weights[0].tolist(), emb.net.weights[1].tolist(), emb.sample_independent
    ([[1.0], [1.0]], [[4.0, -2.0]], True)
    """
    j = _hidden_layer(net, layer)
    k = _neuron(net, j, neuron)
    rho = _ratios(ratios, net.dtype)
    m = net.widths[j]
    rows: list[int | None] = [*range(m), *([k] * (len(rho) - 1))]
    scale = [1.0] * m + rho[1:]
    scale[k] = rho[0]
    slots = ", ".join(str(s) for s in [k, *range(m, m + len(rho) - 1)])
    text = f"split neuron {k} of hidden layer {j} with ratios {tuple(rho)} into slots {slots}"
    return _make(net, j, rows, scale, None, "split", True, text)


def add_mlp_null_neuron(net: MLP, layer: int, w: Any = None) -> MLPEmbedding:
    """Append a null neuron (u, 0) to hidden layer j: incoming weights u, outgoing zero.

    u = ``w`` (length n_j, a zero bias appended where the layer has biases, or n_j + 1), or
    0 by default.  The output is unchanged; criticality is kept exactly where
    φ_j(u) = 0 (module docstring): :func:`~saddlemap.deep.layer_residual_function` computes
    φ_j, and :func:`~saddlemap.deep.null_neuron_witness` finds such a u with a way down.

    Args:
        net: the network.
        layer: j, the hidden layer.
        w: the incoming weights, or None for u = 0.

    Raises:
        ModelError: layer out of range, u of the wrong length or not finite.

    >>> from saddlemap.deep import MLP
    >>> mlp = MLP([[[1.0]], [[2.0]], [[3.0]]], biases=[[0.5], None, None])
    >>> emb = add_mlp_null_neuron(mlp, 0, [0.7])
    >>> emb.net.weights[0].tolist(), emb.net.biases[0].tolist(), emb.net.weights[1].tolist()
    ([[1.0], [0.7]], [0.5, 0.0], [[2.0, 0.0]])
    """
    j = _hidden_layer(net, layer)
    n_in, D = net.layout.sizes[j], net.layout.sizes[j] + int(net.layout.bias[j])
    if w is None:
        u = net.weights[0].new_zeros(D)
    else:
        try:
            u = as_tensor(w, "w", net.dtype, net.device).reshape(-1)
        except DataError as exc:
            raise ModelError(str(exc)) from None
        if u.numel() == n_in and D == n_in + 1:
            u = torch.cat([u, u.new_zeros(1)])
        if u.numel() != D:
            raise ModelError(f"w has length {u.numel()}; hidden layer {j} takes length {n_in}"
                             + (f" or {D} (with the bias)" if D > n_in else ""))
        if not bool(torch.isfinite(u).all()):
            raise ModelError("w must be finite")
    zero = not bool(u.any())
    harmless = net.activation.zero_at_origin or net.biases[j + 1] is not None
    independent = zero and harmless
    m = net.widths[j]
    text = (f"null neuron (u, 0) with u = {[round(x, 6) for x in u.tolist()]} appended to hidden "
            f"layer {j} as slot {m}")
    if not independent:
        text += "; critical only where φ_j(u) = 0"
    return _make(net, j, [*range(m), None], [1.0] * (m + 1), u, "null", independent, text)
