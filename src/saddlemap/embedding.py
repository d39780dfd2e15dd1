"""Critical embedding operators: wider networks with exactly the same output function.

Each operator maps a network θ of width m to a wider one T(θ) = Aθ + o (docs/theory.md §5; the
Embedding Principle of Zhang, Zhang, Luo & Xu, arXiv:2105.14573 and arXiv:2111.15527; the
critical embedding operators of Zhang, Zhang & Luo, arXiv:2405.17501):

* :func:`split` (E1): neuron k → copies (ρ_c a_k, w̃_k), Σ_c ρ_c = 1;
* :func:`null_copy` (E2a): append (0, w̃_k);
* :func:`add_null_neuron` (E2b, E2c): append (0, 0), or (0, u) with u on Z_f = {φ_f = 0};
* :func:`add_zero_sum_group` (E3): append (b_c, u), c = 1..s, Σ_c b_c = 0, u ∈ Z'_f;
* :func:`three_fold_split`: every neuron k → (a_k, w̃_k), (a_k, w̃_k), (−a_k, w̃_k);
* :func:`compose`: one embedding after another.

The output g(T(θ), x) = g(θ, x) for every θ and every input x, so R(Aθ + o) = R(θ) for every
θ, data set and loss; differentiating twice gives H_old(θ) = Aᵀ H_new(Aθ + o) A, and since
A is injective the numbers of positive, zero and negative Hessian eigenvalues never
decrease (the irreversibility theorem of the Embedding Principle).  A *sample-independent*
embedding maps every critical point to a critical point for every data set and loss; the
others (null neurons on Z_f, zero-sum groups) do so only for the data whose φ_f vanishes
at the new neurons' input weights.

**Layout.** The first copy of a split neuron stays in its slot; every new neuron is appended
after the last neuron, in the order stated by each operator; the output bias c stays last.
A is dense, (P_new × P_old), with entries 0, 1, −1 and the ratios ρ_c (products of them
for composed embeddings); each row of a single operator's A has at most one nonzero entry,
so Aθ + o is computed exactly.  Being dense, A costs P_new · P_old numbers: fine up to a
few thousand parameters, as the dense Hessian it is meant to be used with.

>>> import torch
>>> from saddlemap import Dataset, TwoLayerNet, hessian
>>> net = TwoLayerNet([0.6], [[1.4]], activation="tanh")
>>> emb = split(net, 0, [0.5, 0.5])
>>> emb.net.a.flatten().tolist(), emb.net.W.flatten().tolist()
([0.3, 0.3], [1.4, 1.4])
>>> emb.matrix.tolist()
[[0.5, 0.0], [0.0, 1.0], [0.5, 0.0], [0.0, 1.0]]
>>> data = Dataset([-1.0, 0.5, 2.0], [-1.0, 0.5, 0.0])
>>> A = emb.matrix
>>> bool(torch.allclose(A.T @ hessian(emb.net, data) @ A, hessian(net, data)))
True
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .data import Dataset, as_tensor
from .derivatives import residual_function
from .errors import ModelError
from .network import ParamLayout, TwoLayerNet
from .tolerances import Tolerances
from .zero_set import ZeroSet

__all__ = [
    "Embedding",
    "add_null_neuron",
    "add_zero_sum_group",
    "compose",
    "null_copy",
    "split",
    "three_fold_split",
]

#: A new neuron copies old neuron k with its output weights scaled: (k, scale); or, as None,
#: it is a fixed neuron set by the offset.
_Source = tuple[int, float] | None

#: Sums that must vanish (Σρ − 1, Σb) may miss by this many ulps of Σ|terms|.
_SUM_ULPS = 16


@dataclass(frozen=True, eq=False)
class Embedding:
    """An output-preserving affine embedding θ_new = A θ_old + offset, with its result.

    Attributes:
        net: the wider network, the embedding applied to the network it was built from.
        matrix: A, shape (P_new, P_old); entries 0, 1, −1 and split ratios (and products
            of them when composed).
        offset: o, shape (P_new,); zero for linear embeddings.
        kind: ``"split"``, ``"null_copy"``, ``"null_at_zero"``, ``"null_on_zero_set"``,
            ``"zero_sum"``, ``"three_fold"`` or ``"composed"``.
        sample_independent: whether criticality is preserved for every data set and loss.
        description: one line in words.

    >>> from saddlemap import TwoLayerNet
    >>> emb = null_copy(TwoLayerNet([1.0, 2.0], [[0.5], [1.5]]), 1)
    >>> emb.net.a.flatten().tolist(), emb.net.W.flatten().tolist(), emb.is_linear
    ([1.0, 2.0, 0.0], [0.5, 1.5, 1.5], True)
    >>> other = TwoLayerNet([3.0, 4.0], [[0.1], [0.2]])
    >>> emb(other).flatten().tolist() == emb.apply(other.flatten()).tolist()
    True
    """

    net: TwoLayerNet
    matrix: torch.Tensor
    offset: torch.Tensor
    kind: str
    sample_independent: bool
    description: str

    def __post_init__(self) -> None:
        P_new = self.net.num_params
        if self.matrix.ndim != 2 or self.matrix.shape[0] != P_new:
            raise ModelError(
                f"matrix must have shape ({P_new}, P_old) for a network of {P_new} parameters, "
                f"got {tuple(self.matrix.shape)}"
            )
        if tuple(self.offset.shape) != (P_new,):
            raise ModelError(f"offset must have shape ({P_new},), got {tuple(self.offset.shape)}")
        _ = self.source_layout  # raises when P_old fits no layout of the same kind

    @property
    def source_layout(self) -> ParamLayout:
        """The layout of the networks this embedding maps (the narrower ones)."""
        new = self.net.layout
        P_old = int(self.matrix.shape[1])
        rest = P_old - new.output_dim * int(new.output_bias)
        if rest < 0 or rest % new.neuron_size:
            raise ModelError(
                f"matrix has {P_old} columns, which is no network of neurons of size "
                f"{new.neuron_size} ({_describe(new, width=False)})"
            )
        return dataclasses.replace(new, width=rest // new.neuron_size)

    @property
    def is_linear(self) -> bool:
        """Whether the offset is zero, i.e. θ ↦ Aθ."""
        return not bool(self.offset.any())

    def apply(self, theta: torch.Tensor) -> torch.Tensor:
        """A θ + offset for a flat vector θ (P_old,) or a batch of them (..., P_old)."""
        t = as_tensor(theta, "theta", None)
        if not t.is_floating_point():
            t = t.to(self.matrix.dtype)
        P_old = int(self.matrix.shape[1])
        if t.ndim == 0 or t.shape[-1] != P_old:
            raise ModelError(
                f"theta must have length {P_old} (the source network's parameters), "
                f"got shape {tuple(t.shape)}"
            )
        A = self.matrix.to(dtype=t.dtype, device=t.device)
        return t @ A.T + self.offset.to(dtype=t.dtype, device=t.device)

    def __call__(self, net: TwoLayerNet) -> TwoLayerNet:
        """The same embedding applied to another network of the source layout."""
        source = self.source_layout
        if net.layout != source:
            raise ModelError(
                f"this embedding maps networks of {_describe(source)}, got {_describe(net.layout)}"
            )
        return TwoLayerNet.from_flat(self.apply(net.flatten()), self.net.layout, net.activation)


# ----------------------------------------------------------------------------- helpers
def _describe(layout: ParamLayout, width: bool = True) -> str:
    parts = [f"width {layout.width}"] if width else []
    parts += [f"d={layout.input_dim}", f"K={layout.output_dim}"]
    parts.append("hidden bias" if layout.hidden_bias else "no hidden bias")
    parts.append("output bias" if layout.output_bias else "no output bias")
    return ", ".join(parts)


def _fmt(values: Sequence[float] | torch.Tensor) -> str:
    items = values.flatten().tolist() if isinstance(values, torch.Tensor) else list(values)
    return "(" + ", ".join(f"{float(v):.6g}" for v in items) + ")"


def _linear_part(old: ParamLayout, sources: Sequence[_Source], like: torch.Tensor) -> torch.Tensor:
    """A: each new neuron j with source (k, s) gets a_j = s a_k and w̃_j = w̃_k; c stays c."""
    new = dataclasses.replace(old, width=len(sources))
    A = like.new_zeros(new.num_params, old.num_params)
    K, q = old.output_dim, old.neuron_size
    copies = [(j, src) for j, src in enumerate(sources) if src is not None]
    if copies:
        j = torch.tensor([c[0] for c in copies], device=like.device)
        k = torch.tensor([c[1][0] for c in copies], device=like.device)
        scale = like.new_tensor([c[1][1] for c in copies])
        within = torch.arange(q, device=like.device)
        rows = (j[:, None] * q + within).flatten()
        cols = (k[:, None] * q + within).flatten()
        ones = like.new_ones(len(copies), q - K)
        A[rows, cols] = torch.cat([scale[:, None].expand(-1, K), ones], dim=1).flatten()
    if old.output_bias:
        A[-K:, -K:] = torch.eye(K, dtype=like.dtype, device=like.device)
    return A


def _offset(
    new: ParamLayout, fixed: dict[int, tuple[torch.Tensor, torch.Tensor]], like: torch.Tensor
) -> torch.Tensor:
    """o: zero except the fixed neurons j, whose (a_j, w̃_j) it holds."""
    o = like.new_zeros(new.num_params)
    for j, (a, w) in fixed.items():
        o[new.neuron_slice(j)] = torch.cat([a, w])
    return o


def _make(
    net: TwoLayerNet,
    sources: Sequence[_Source],
    kind: str,
    sample_independent: bool,
    description: str,
    fixed: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Embedding:
    old = net.layout
    new = dataclasses.replace(old, width=len(sources))
    theta = net.flatten()
    A = _linear_part(old, sources, theta)
    o = _offset(new, fixed or {}, theta)
    # each row of A has at most one nonzero entry: A θ is exact
    wide = TwoLayerNet.from_flat(A @ theta + o, new, net.activation)
    return Embedding(wide, A, o, kind, sample_independent, description)


def _identity_sources(net: TwoLayerNet) -> list[_Source]:
    return [(k, 1.0) for k in range(net.width)]


def _neuron_index(net: TwoLayerNet, neuron: Any) -> int:
    try:
        k = operator.index(neuron)
    except TypeError:
        raise ModelError(f"neuron must be an integer index, got {neuron!r}") from None
    if isinstance(neuron, bool):
        raise ModelError(f"neuron must be an integer index, got {neuron!r}")
    if net.width == 0:
        raise ModelError("the network has no neurons to copy")
    if not 0 <= k < net.width:
        raise ModelError(
            f"neuron index {k} is out of range for a network of width {net.width} "
            f"(valid: 0 to {net.width - 1})"
        )
    return k


def _reals(values: Any, name: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ModelError(f"{name} must be a sequence of real numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise ModelError(f"{name} must be finite, got {_fmt(out)}")
    return out


def _ratios(ratios: Sequence[float], dtype: torch.dtype) -> list[float]:
    rho = _reals(ratios, "ratios")
    if len(rho) < 2:
        raise ModelError(f"a split needs at least 2 ratios, got {len(rho)}: {_fmt(rho)}")
    total = math.fsum(rho)
    tol = _SUM_ULPS * torch.finfo(dtype).eps * max(1.0, math.fsum(abs(r) for r in rho))
    if abs(total - 1.0) > tol:
        raise ModelError(f"split ratios must sum to 1, got Σρ = {total!r} for {_fmt(rho)}")
    return rho


def _zero_sum_weights(net: TwoLayerNet, weights: Any) -> torch.Tensor:
    """Weights as (s, K): a row b_c per neuron; a 1-d (s,) gives b_c on every output."""
    try:
        b = as_tensor(weights, "weights", torch.float64)
    except ValueError as exc:
        raise ModelError(f"weights must be real numbers: {exc}") from None
    K = net.output_dim
    b = b.reshape(-1, 1).expand(-1, K) if b.ndim == 1 else b
    if b.ndim != 2 or b.shape[1] != K:
        raise ModelError(f"weights must have shape (s,) or (s, {K}), got {tuple(b.shape)}")
    if b.shape[0] < 2:
        raise ModelError(f"a zero-sum group needs at least 2 neurons, got {b.shape[0]}")
    if not bool(torch.isfinite(b).all()):
        raise ModelError(f"weights must be finite, got {_fmt(b)}")
    for col in b.T.tolist():
        total = math.fsum(col)
        tol = _SUM_ULPS * torch.finfo(net.dtype).eps * math.fsum(abs(v) for v in col)
        if abs(total) > tol:
            raise ModelError(f"zero-sum weights must sum to 0, got Σb = {total!r} for {_fmt(col)}")
    if int(b.abs().sum(1).gt(0).sum()) < 2:
        raise ModelError(f"a zero-sum group needs at least two nonzero weights, got {_fmt(b)}")
    return b.to(dtype=net.dtype, device=net.device)


def _input_weight(net: TwoLayerNet, value: Any, name: str) -> torch.Tensor:
    """An input weight of length d (bias 0 appended when there is a hidden bias) or D."""
    try:
        u = as_tensor(value, name, net.dtype, net.device)
    except ValueError as exc:
        raise ModelError(f"{name} must be real numbers: {exc}") from None
    u = u.reshape(1) if u.ndim == 0 else u
    d, D = net.input_dim, net.layout.aug_dim
    if u.ndim != 1:
        raise ModelError(f"{name} must be a vector, got shape {tuple(u.shape)}")
    if u.shape[0] == d and D == d + 1:
        u = torch.cat([u, u.new_zeros(1)])
    elif u.shape[0] != D:
        allowed = f"d={d} or D={D} (with the hidden bias)" if D > d else f"d={d}"
        raise ModelError(f"{name} has length {u.shape[0]}; this network takes length {allowed}")
    if not bool(torch.isfinite(u).all()):
        raise ModelError(f"{name} must be finite, got {_fmt(u)}")
    return u


def _zero_neuron_harmless(net: TwoLayerNet) -> bool:
    """Whether a neuron (0, 0) keeps every critical point critical: ∂R/∂a = σ(0) Σ_i e_i = 0.

    True when σ(0) = 0, and when there is an output bias (criticality in c is Σ_i e_i = 0).
    """
    return net.activation.zero_at_origin or net.c is not None


def _zero_set(net: TwoLayerNet, data: Dataset, tolerances: Tolerances | None) -> ZeroSet:
    return ZeroSet(residual_function(net, data), tolerances or Tolerances())


def _on_zero_set(zs: ZeroSet, u: torch.Tensor, name: str) -> float:
    """‖φ(u)‖, after checking that u is on Z_f."""
    point = zs.point(u)
    if not zs.contains(u):
        raise ModelError(
            f"{name} = {_fmt(u)} is not on Z_f: ‖φ({name})‖ = {point.phi_norm:.3e} exceeds the "
            f"zero_set tolerance {zs.tolerance:g} × {zs.phi_terms(u):.3e} (the size of its terms)"
        )
    return point.phi_norm


def _on_singular_set(zs: ZeroSet, u: torch.Tensor, name: str) -> float:
    """‖∇φ(u)‖, after checking that u is a singular point (on Z'_f)."""
    point = zs.point(u)
    if point.regular:
        raise ModelError(
            f"{name} = {_fmt(u)} is not on Z'_f: ‖∇φ({name})‖ = {point.grad_norm:.3e} exceeds "
            f"the singular tolerance {zs.tolerances.singular:g} × {zs.grad_terms(u):.3e} (the "
            "size of its terms); a zero-sum group is critical only where φ = 0 and ∇φ = 0"
        )
    return point.grad_norm


# --------------------------------------------------------------------------- operators
def split(net: TwoLayerNet, neuron: int, ratios: Sequence[float]) -> Embedding:
    """E1 splitting: neuron k → copies (ρ_c a_k, w̃_k), c = 1..s, with Σ_c ρ_c = 1.

    Sample-independent and linear (Embedding Principle, arXiv:2105.14573, Zhang, Zhang &
    Luo, arXiv:2405.17501, docs/theory.md §5).  The first copy stays in slot k, the others are
    appended at the end in the order of ``ratios``.  A ratio of 0 makes a null copy.

    Args:
        net: the network to embed.
        neuron: k, the neuron to split (0-based).
        ratios: ρ_1, ..., ρ_s, at least two real numbers summing to 1 (to a few ulps of
            the network's dtype); any sign is allowed.

    Returns:
        The :class:`Embedding` of width m + s − 1.

    Raises:
        ModelError: k out of range, fewer than 2 ratios, non-finite ratios, Σρ ≠ 1.

    >>> from saddlemap import TwoLayerNet
    >>> emb = split(TwoLayerNet([1.0, 2.0], [[0.5], [1.5]]), 0, [2.0, -1.0])
    >>> emb.net.a.flatten().tolist(), emb.net.W.flatten().tolist()
    ([2.0, 2.0, -1.0], [0.5, 1.5, 0.5])
    """
    k = _neuron_index(net, neuron)
    rho = _ratios(ratios, net.dtype)
    m = net.width
    sources = _identity_sources(net)
    sources[k] = (k, rho[0])
    sources += [(k, r) for r in rho[1:]]
    slots = ", ".join(str(j) for j in [k, *range(m, m + len(rho) - 1)])
    description = f"split neuron {k} with ratios {_fmt(rho)} into slots {slots}"
    return _make(net, sources, "split", True, description)


def null_copy(net: TwoLayerNet, neuron: int) -> Embedding:
    """E2a null copy: append (0, w̃_k), a split with ratios (1, 0).

    Sample-independent and linear (docs/theory.md §5; Zhang, Zhang & Luo, arXiv:2405.17501): at a
    critical point w̃_k ∈ Z_f, so the null neuron is critical for every data set and loss.

    Args:
        net: the network to embed.
        neuron: k, the neuron whose input weights the null neuron copies.

    Returns:
        The :class:`Embedding` of width m + 1.

    Raises:
        ModelError: k out of range.

    >>> from saddlemap import TwoLayerNet
    >>> emb = null_copy(TwoLayerNet([1.0], [[0.5]]), 0)
    >>> emb.net.a.flatten().tolist(), emb.net.W.flatten().tolist(), emb.sample_independent
    ([1.0, 0.0], [0.5, 0.5], True)
    """
    k = _neuron_index(net, neuron)
    description = f"null copy (0, w̃_{k}) of neuron {k} appended as slot {net.width}"
    return _make(net, [*_identity_sources(net), (k, 0.0)], "null_copy", True, description)


def add_null_neuron(
    net: TwoLayerNet,
    w: Any = None,
    *,
    data: Dataset | None = None,
    seed: int = 0,
    tolerances: Tolerances | None = None,
) -> Embedding:
    """E2b/E2c null neuron: append (0, u), with u = 0 or u on Z_f = {u : φ_f(u) = 0}.

    docs/theory.md §5 (Zhang, Zhang & Luo, arXiv:2405.17501):

    * ``w`` and ``data`` both None (E2b, kind ``"null_at_zero"``): u = 0.  The neuron is
      the constant σ(0), its gradient ∂R/∂a = σ(0) Σ_i e_i: sample-independent when
      σ(0) = 0 or the network has an output bias (then Σ_i e_i = 0 at every critical
      point); otherwise critical only where Σ_i e_i = 0, and marked sample-dependent.
    * ``w`` given (E2c, kind ``"null_on_zero_set"``): u = w (length d, a zero hidden bias
      appended, or D = d + 1 with the hidden bias).  With ``data``, φ(u) = 0 is checked
      by :meth:`ZeroSet.contains <saddlemap.ZeroSet.contains>`.
    * ``w`` None and ``data`` given (E2c): u is
      :meth:`ZeroSet.nearest_to_origin <saddlemap.ZeroSet.nearest_to_origin>` of Z_f of
      ``net`` on ``data``: the regular point of smallest norm found (a singular one if there
      is no regular one).  With σ(0) = 0 that is u = 0 whenever
      ∇φ(0) ≠ 0.

    Sample-dependent unless u = 0 and (σ(0) = 0 or an output bias).  Linear iff u = 0.

    Args:
        net: the network to embed (for E2c a critical point of R on ``data``).
        w: the null neuron's input weights, or None.
        data: the data whose Z_f the null neuron must lie on.
        seed: seed of the random starts of the search on Z_f for D ≥ 2.
        tolerances: ``zero_set`` decides φ(u) = 0 (default :class:`~saddlemap.Tolerances`).

    Returns:
        The :class:`Embedding` of width m + 1, the null neuron in slot m.

    Raises:
        ModelError: ``w`` of the wrong length or not finite; u not on Z_f (the message
            gives ‖φ(u)‖); no point of Z_f found.
        DataError: ``data`` that does not fit ``net``.

    >>> from saddlemap import Dataset, TwoLayerNet
    >>> net = TwoLayerNet([0.610515537972], [[1.433931221329]], activation="tanh")
    >>> data = Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
    >>> emb = add_null_neuron(net, data=data)  # E2c finds the simple zero u = 0 of φ
    >>> emb.kind, abs(float(emb.net.W[1, 0])) < 1e-12
    ('null_on_zero_set', True)
    >>> add_null_neuron(net).sample_independent  # E2b: tanh(0) = 0
    True
    """
    m, K = net.width, net.output_dim
    zs = _zero_set(net, data, tolerances) if data is not None else None
    u, notes = _null_point(net, w, zs, seed)
    independent = not bool(u.any()) and _zero_neuron_harmless(net)
    fixed = {m: (u.new_zeros(K), u)}
    sources = [*_identity_sources(net), None]
    if w is None and data is None:
        description = f"null neuron (0, 0) appended as slot {m}"
        if not independent:
            sigma0 = float(net.activation.fn(torch.zeros(1, dtype=torch.float64))[0])
            description += (
                f"; σ(0) = {sigma0:.6g} ≠ 0 and no output bias, so it is critical only "
                "where Σ_i e_i = 0"
            )
        return _make(net, sources, "null_at_zero", independent, description, fixed)
    description = f"null neuron (0, u) with u = {_fmt(u)} appended as slot {m}; " + ", ".join(notes)
    if not independent:
        description += "; critical only for data whose φ vanishes at u"
    return _make(net, sources, "null_on_zero_set", independent, description, fixed)


def _null_point(
    net: TwoLayerNet, w: Any, zs: ZeroSet | None, seed: int
) -> tuple[torch.Tensor, list[str]]:
    """The null neuron's input weights u and what is known about φ(u)."""
    notes = []
    if w is not None:
        u = _input_weight(net, w, "w")
    elif zs is not None:
        point = zs.nearest_to_origin(seed)
        if point is None:
            where = "on [−12, 12]" if net.layout.aug_dim == 1 else (
                f"by projection from 64 random starts (seed {seed})"
            )
            raise ModelError(
                f"no point of Z_f = {{u : φ(u) = 0}} was found {where}; pass w explicitly"
            )
        u = torch.tensor(point.u, dtype=net.dtype, device=net.device)
        notes.append(f"the {'regular' if point.regular else 'singular'} point of Z_f of least norm")
    else:
        return net.W_aug.new_zeros(net.layout.aug_dim), notes
    if zs is None:
        notes.append("u ∈ Z_f not checked (no data)")
    else:
        phi = _on_zero_set(zs, u, "w" if w is not None else "u")
        notes.append(f"‖φ(u)‖ = {phi:.1e}")
    return u, notes


def add_zero_sum_group(
    net: TwoLayerNet,
    u: Any,
    weights: Sequence[float],
    *,
    data: Dataset | None = None,
    tolerances: Tolerances | None = None,
) -> Embedding:
    """E3 zero-sum group: append s ≥ 2 neurons (b_c, u), Σ_c b_c = 0, at u ∈ Z'_f.

    docs/theory.md §5, §6 (Zhang, Zhang & Luo, arXiv:2405.17501).  The group is the zero function,
    so outputs are kept for every θ; it is critical only where φ(u) = 0 (∂R/∂a_c = φ(u))
    and ∇φ(u)ᵀ b_c = 0, i.e. u ∈ Z'_f = {φ = 0, ∇φ = 0}: sample-dependent and affine
    (the offset holds the group).  The neurons are appended in the order of ``weights``.

    Args:
        net: the network to embed.
        u: the group's input weights, length d (a zero hidden bias appended) or D = d + 1.
        weights: b_1, ..., b_s: s ≥ 2 reals summing to 0 (to a few ulps), at least two
            nonzero; for K > 1 a row (K,) per neuron, or one real b_c used for every output.
        data: when given, check u ∈ Z'_f with :class:`~saddlemap.ZeroSet` (φ(u) = 0 and
            ∇φ(u) = 0 to the ``zero_set`` and ``singular`` tolerances).
        tolerances: the tolerances of those checks (default :class:`~saddlemap.Tolerances`;
            ``singular`` is loose, 1e-6, since a double zero known to δ leaves ‖∇φ‖ ≈ √δ).

    Returns:
        The :class:`Embedding` of width m + s, the group in slots m, ..., m + s − 1.

    Raises:
        ModelError: u of the wrong length; fewer than 2 weights, weights not summing to 0,
            fewer than two nonzero; u not on Z_f or Z'_f (the message gives the measured
            ‖φ(u)‖ or ‖∇φ(u)‖).
        DataError: ``data`` that does not fit ``net``.

    >>> import torch
    >>> from saddlemap import TwoLayerNet
    >>> net = TwoLayerNet([1.0], [[0.5]], activation="tanh")
    >>> emb = add_zero_sum_group(net, [2.0], [0.3, -0.3])
    >>> emb.net.a.flatten().tolist(), emb.net.W.flatten().tolist(), emb.is_linear
    ([1.0, 0.3, -0.3], [0.5, 2.0, 2.0], False)
    >>> X = torch.linspace(-2.0, 2.0, 5, dtype=torch.float64).unsqueeze(1)
    >>> bool(torch.allclose(emb.net(X), net(X), rtol=0, atol=1e-15))
    True
    """
    u_t = _input_weight(net, u, "u")
    b = _zero_sum_weights(net, weights)
    note = "u ∈ Z'_f not checked (no data)"
    if data is not None:
        zs = _zero_set(net, data, tolerances)
        phi = _on_zero_set(zs, u_t, "u")
        grad = _on_singular_set(zs, u_t, "u")
        note = f"u ∈ Z'_f: ‖φ(u)‖ = {phi:.1e}, ‖∇φ(u)‖ = {grad:.1e}"
    m, s = net.width, b.shape[0]
    fixed = {m + c: (b[c], u_t) for c in range(s)}
    sources = [*_identity_sources(net), *([None] * s)]
    shown = _fmt(b[:, 0]) if net.output_dim == 1 else _fmt(b)
    description = (
        f"zero-sum group of {s} neurons (b_c, u), b = {shown}, u = {_fmt(u_t)}, appended as "
        f"slots {m} to {m + s - 1}; {note}; critical only for data with u ∈ Z'_f"
    )
    return _make(net, sources, "zero_sum", False, description, fixed)


def three_fold_split(net: TwoLayerNet) -> Embedding:
    """Three-fold global split: every neuron k → (a_k, w̃_k), (a_k, w̃_k), (−a_k, w̃_k).

    Embedding Principle, Example 5.1 (Zhang, Zhang, Luo & Xu, arXiv:2111.15527; docs/theory.md §5,
    §7.4): sample-independent and linear; at a critical point with some a_j G(w̃_j) ≠ 0 the
    result is a strict saddle.  Slot k keeps the first copy; the other two copies of neuron
    k go to slots m + 2k (ratio 1) and m + 2k + 1 (ratio −1), in neuron order.

    Args:
        net: the network to embed, width m.

    Returns:
        The :class:`Embedding` of width 3m.

    >>> from saddlemap import TwoLayerNet
    >>> emb = three_fold_split(TwoLayerNet([1.0, 2.0], [[0.5], [1.5]]))
    >>> emb.net.a.flatten().tolist(), emb.net.W.flatten().tolist()
    ([1.0, 2.0, 1.0, -1.0, 2.0, -2.0], [0.5, 1.5, 0.5, 0.5, 1.5, 1.5])
    """
    m = net.width
    extra = [(k, r) for k in range(m) for r in (1.0, -1.0)]
    description = (
        f"three-fold split (1, 1, −1) of all {m} neurons: neuron k in slots k, {m} + 2k and "
        f"{m} + 2k + 1"
    )
    return _make(net, [*_identity_sources(net), *extra], "three_fold", True, description)


def compose(first: Embedding, second: Embedding) -> Embedding:
    """``second`` after ``first``: θ ↦ A₂(A₁θ + o₁) + o₂, i.e. A = A₂A₁, o = A₂o₁ + o₂.

    Sample-independent when both are (docs/theory.md §5).  ``second`` must map networks of the
    layout of ``first.net``; the result's network is ``second`` applied to ``first.net``.

    Args:
        first: the embedding applied first.
        second: the embedding applied to the result of ``first``.

    Returns:
        The composed :class:`Embedding`, kind ``"composed"``.

    Raises:
        ModelError: ``second`` does not map networks of the layout of ``first.net``.

    >>> from saddlemap import TwoLayerNet
    >>> one = split(TwoLayerNet([1.0], [[0.5]]), 0, [0.5, 0.5])
    >>> both = compose(one, null_copy(one.net, 1))
    >>> both.net.a.flatten().tolist(), both.kind, both.sample_independent
    ([0.5, 0.5, 0.0], 'composed', True)
    """
    if second.source_layout != first.net.layout:
        raise ModelError(
            f"cannot compose: the second embedding maps networks of "
            f"{_describe(second.source_layout)}, the first produces {_describe(first.net.layout)}"
        )
    A2 = second.matrix.to(dtype=first.matrix.dtype, device=first.matrix.device)
    o2 = second.offset.to(dtype=first.offset.dtype, device=first.offset.device)
    return Embedding(
        net=second(first.net),
        matrix=A2 @ first.matrix,
        offset=A2 @ first.offset + o2,
        kind="composed",
        sample_independent=first.sample_independent and second.sample_independent,
        description=f"{first.description}; then {second.description}",
    )
