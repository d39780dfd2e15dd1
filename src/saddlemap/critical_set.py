"""The critical set Q_m(f) of one output function f, branch by branch.

Zhang, Zhang & Luo (arXiv:2405.17501) uncover the whole critical set of a two-layer network
that represents a non-global output function f with irreducible critical representation
θ* = (a_j*, w̃_j*)_{j ≤ r}.  A width-m network θ lies in Q_m(f) iff its neurons split into
(docs/theory.md §6):

* **essential clusters** I_1..I_r, nonempty: w̃_k = w̃_j* (= ±w̃_j* for odd σ, signs
  folded into a_k) and Σ_{k∈I_j} a_k = a_j*;
* **null neurons**: a_k = 0 and w̃_k ∈ Z_f = {φ_f = 0};
* **zero-sum groups**: neurons at a common u ∉ {w̃_j*} with Σ a_k = 0, at least two
  nonzero, and u ∈ Z'_f = {φ_f = 0, ∇φ_f = 0} (non-generic).

With K > 1 outputs criticality also asks ∇φ(w̃_j*)ᵀ a_k = 0 for every k in cluster j, so
each a_k lies in the κ_j-dimensional kernel of ∇φ(w̃_j*)ᵀ (κ_j = 1 generically, spanned by
a_j*; κ_j = K when f is global) — our extension of the K = 1 statement, checked numerically.

A **branch** is fixed by a pattern, the map of the m slots to clusters and null; its type is
the cluster sizes (s_1..s_r) and the number of null neurons.  Its local dimension is
Σ_j κ_j (s_j − 1) + n_null · dim Z_f, with dim Z_f = D − K at regular points (D for a
global f, where φ ≡ 0).  There are finitely many patterns (docs/theory.md §6):

    T(r, m) = Σ_j (−1)^j C(r, j) (r + 1 − j)^m  with null neurons,
    G(r, m) = r! S(m, r)                        without,

and 2r + 1 in place of r + 1 when odd activations also choose the sign of each copy.

>>> from saddlemap import Dataset, TwoLayerNet
>>> data = Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
>>> cs = CriticalSet(TwoLayerNet([0.610515537972], [[1.433931221329]]), data)
>>> cs.r, cs.count_branches(2), cs.count_branches(2, null=False)
(1, 3, 1)
>>> [(b.sizes, b.nulls, b.dimension) for b in cs.branches(2)]
[((1,), 1, 0), ((2,), 0, 1)]
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .activations import Symmetry
from .analysis import Analysis, as_analysis
from .critical_points import certify
from .data import Dataset
from .derivatives import ResidualFunction
from .errors import CriticalPointError, OptionError
from .network import TwoLayerNet
from .reduction import canonical_signs, reduce
from .tolerances import Tolerances
from .verdicts import EdgeKind
from .zero_set import ZeroSet

__all__ = ["Branch", "CriticalSet", "Decomposition", "HierarchyEdge", "count_patterns"]

#: ``branches(m)`` refuses to list more branch types than this (there are C(m, r)).
MAX_BRANCH_TYPES = 100_000
#: A null position counts as away from θ*'s neurons beyond this relative distance.
_AWAY_FROM_STAR = 1e-3


def count_patterns(r: int, m: int, null: bool = True, signs: bool = False) -> int:
    """Labelled patterns of width m over r clusters (docs/theory.md §6), by inclusion–exclusion.

    Each slot picks one of the r clusters (2r with a sign, for odd activations) or, with
    ``null``, the null label; every cluster must be picked.

    >>> count_patterns(1, 2), count_patterns(2, 3), count_patterns(2, 3, null=False)
    (3, 12, 6)
    >>> count_patterns(3, 4, null=False)
    36
    """
    _check_widths(r, m)
    per = 2 if signs else 1
    return sum(
        (-1) ** j * math.comb(r, j) * (per * (r - j) + int(null)) ** m for j in range(r + 1)
    )


def _check_widths(r: int, m: int) -> None:
    if not (isinstance(m, int) and isinstance(r, int)) or r < 0 or m < 1:
        raise OptionError(f"the width must be an integer ≥ 1 (and r ≥ 0), got m={m!r}, r={r!r}")


@dataclass(frozen=True)
class Branch:
    """A branch type of Q_m(f): cluster sizes and the number of null neurons.

    Attributes:
        sizes: s_j ≥ 1, the number of neurons in essential cluster j.
        nulls: the number of null neurons.
        dimension: local dimension Σ κ_j (s_j − 1) + nulls · dim Z_f at generic points.
        patterns: how many labelled patterns (slot assignments) have this type.
        sample_independent: True when the branch has no null neuron: it is critical for
            every data set (splits only); null neurons must sit on the data's Z_f.
    """

    sizes: tuple[int, ...]
    nulls: int
    dimension: int
    patterns: int
    sample_independent: bool

    @property
    def width(self) -> int:
        """m, the width of the networks on the branch."""
        return sum(self.sizes) + self.nulls


@dataclass(frozen=True, eq=False)
class Decomposition:
    """How the neurons of a network fall into clusters, null neurons and zero-sum groups.

    Attributes:
        clusters: for each essential cluster j, the neurons assigned to it.
        nulls: the null neurons.
        zero_sum: groups of neurons forming zero-sum groups.
        signs: +1 or −1 per neuron (−1 where an odd activation's sign twin was used).
        reasons: why the network is not in Q_m(f); empty when it is.
    """

    clusters: tuple[tuple[int, ...], ...]
    nulls: tuple[int, ...]
    zero_sum: tuple[tuple[int, ...], ...]
    signs: tuple[int, ...]
    reasons: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether the network is in Q_m(f)."""
        return not self.reasons

    @property
    def branch_type(self) -> tuple[tuple[int, ...], int]:
        """(cluster sizes, number of null neurons)."""
        return tuple(len(c) for c in self.clusters), len(self.nulls)


@dataclass(frozen=True)
class HierarchyEdge:
    """One edge of the branch hierarchy: ``lower`` embeds into (or meets) ``upper``.

    Attributes:
        lower: the branch of width m − 1 (``SPLIT``, ``NULL``) or of width m (``MEET``).
        upper: the branch of width m.
        kind: the :class:`~saddlemap.EdgeKind`.
        cluster: the cluster split or met, None for ``NULL``.
    """

    lower: Branch
    upper: Branch
    kind: EdgeKind
    cluster: int | None = None

    @property
    def label(self) -> str:
        """``"split j"``, ``"null"`` or ``"meet j"``."""
        return self.kind.value if self.cluster is None else f"{self.kind.value} {self.cluster}"


class CriticalSet:
    """Q_m(f) for the output function f of a critical point, on given data.

    Args:
        net: a critical point of any width (or an :class:`~saddlemap.Analysis` of one); it is
            reduced to θ* with :func:`reduce`.
        data: the data defining R and φ_f.
        tolerances: the analysis tolerances (``merge`` for matching neurons to θ*,
            ``zero_set`` and ``singular`` for null neurons and zero-sum groups).
        check: certify that ``net`` is critical (:class:`~saddlemap.CriticalPointError`
            otherwise).
    """

    def __init__(
        self,
        net: TwoLayerNet | Analysis,
        data: Dataset | None = None,
        *,
        tolerances: Tolerances | None = None,
        check: bool = True,
    ) -> None:
        an = as_analysis(net, data, tolerances)
        if check:
            cp = certify(an)
            if not cp.converged:
                raise CriticalPointError(
                    f"the network is not a critical point: ‖∇R‖ = {cp.grad_norm:.2e} > "
                    f"{cp.grad_tol:.1e}; refine it with find_critical_point first"
                )
        reduction = an.memo("reduction", lambda: reduce(an.net, an.data.X,
                                                        tolerances=an.tolerances))
        self.analysis = an
        self.data = an.data
        self.tolerances = an.tolerances
        self.star: TwoLayerNet = reduction.net
        self.tol: float = reduction.tol
        self.a_tol: float = reduction.a_tol
        # θ* has the outputs of ``net``, so it shares φ_f and Z_f with it.
        self.zero_set: ZeroSet = an.zero_set
        self.residual: ResidualFunction = an.residual_function
        self.is_global: bool = an.is_global
        self._odd = self.star.activation.symmetry is Symmetry.ODD
        self.kernel_dims: tuple[int, ...] = self._kernel_dims()
        self._null_cache: dict[tuple[int, int], list[torch.Tensor]] = {}

    def _kernel_dims(self) -> tuple[int, ...]:
        """κ_j = dim ker ∇φ(w̃_j*)ᵀ: the directions a cluster's output weights may take."""
        K = self.star.output_dim
        if self.is_global:
            return (K,) * self.r
        dims = []
        for j in range(self.r):
            sv = torch.linalg.svdvals(self.residual.grad(self.star.W_aug[j]))
            cutoff = self.tolerances.singular * self.zero_set.grad_terms(self.star.W_aug[j])
            dims.append(K - int((sv > cutoff).sum()))
        return tuple(dims)

    # ------------------------------------------------------------------- basic facts
    @property
    def r(self) -> int:
        """Minimal width of f: the width of θ*."""
        return self.star.width

    @property
    def zero_set_dimension(self) -> int:
        """Dim Z_f at regular points: D − K, or D when f is global (φ ≡ 0)."""
        D, K = self.star.W_aug.shape[1], self.star.output_dim
        return D if self.is_global else max(D - K, 0)

    def count_branches(self, m: int, null: bool = True, signs: bool = False) -> int:
        """Labelled patterns of width m: T(r, m) with null neurons, G(r, m) without."""
        return count_patterns(self.r, m, null, signs)

    def dimension_bounds(self, m: int) -> tuple[int, int]:
        """Bounds on dim Q_m(f) (docs/theory.md §6, K = 1: m − r ≤ dim ≤ (m − r) max(1, D − 1)).

        In general (m − r) min κ_j ≤ dim ≤ (m − r) max(max κ_j, dim Z_f).
        """
        kappa = self.kernel_dims or (self.star.output_dim,)
        return (m - self.r) * min(kappa), (m - self.r) * max(*kappa, self.zero_set_dimension)

    # ---------------------------------------------------------------------- branches
    def branches(self, m: int, null: bool = True) -> list[Branch]:
        """Branch types of width m (zero-sum groups aside), ordered by dimension.

        Raises:
            OptionError: m not an integer ≥ 1, or more than :data:`MAX_BRANCH_TYPES` types.
        """
        _check_widths(self.r, m)
        if m < self.r:
            return []
        r = self.r
        if math.comb(m, r) > MAX_BRANCH_TYPES:
            raise OptionError(
                f"width {m} has {math.comb(m, r):.3g} branch types over r = {r} clusters, "
                f"more than the {MAX_BRANCH_TYPES} this enumerates; use count_branches"
            )
        out = []
        for nulls in range(m - r + 1 if null else 1):
            for sizes in _compositions(m - nulls, r):
                patterns = math.factorial(m) // math.prod(
                    math.factorial(s) for s in (*sizes, nulls)
                )
                dim = sum(k * (s - 1) for k, s in zip(self.kernel_dims, sizes, strict=True))
                dim += nulls * self.zero_set_dimension
                out.append(Branch(sizes, nulls, dim, patterns, nulls == 0))
        return sorted(out, key=lambda b: (b.dimension, b.sizes, b.nulls))

    def hierarchy(self, m: int) -> list[HierarchyEdge]:
        """One-step embeddings from width m − 1 into width m, and where branches meet.

        Edges: ``SPLIT`` j (a neuron of cluster j split in two), ``NULL`` (a null neuron
        added), and ``MEET`` j between two width-m branches: a null neuron sliding along Z_f
        into w̃_j* joins cluster j at ratio 0.
        """
        by_type = {(b.sizes, b.nulls): b for b in self.branches(m)}
        edges = []
        for low in self.branches(m - 1) if m - 1 >= self.r else []:
            for j in range(self.r):
                sizes = tuple(s + (i == j) for i, s in enumerate(low.sizes))
                edges.append(HierarchyEdge(low, by_type[(sizes, low.nulls)], EdgeKind.SPLIT, j))
            edges.append(HierarchyEdge(low, by_type[(low.sizes, low.nulls + 1)], EdgeKind.NULL))
        for b in self.branches(m):
            if b.nulls:
                for j in range(self.r):
                    sizes = tuple(s + (i == j) for i, s in enumerate(b.sizes))
                    edges.append(HierarchyEdge(b, by_type[(sizes, b.nulls - 1)], EdgeKind.MEET, j))
        return edges

    def null_positions(self, num: int = 64, seed: int = 0) -> list[torch.Tensor]:
        """Regular points of Z_f away from the w̃_j*, where null neurons sit generically.

        All such zeros on [−12, 12] for D = 1; a projected sample of ``num`` starts above.
        Computed once per (num, seed).
        """
        key = (num, seed)
        if key not in self._null_cache:
            self._null_cache[key] = self._find_null_positions(num, seed)
        return self._null_cache[key]

    def _find_null_positions(self, num: int, seed: int) -> list[torch.Tensor]:
        if self.residual.X.shape[1] == 1:
            zeros = self.zero_set.zeros_1d()
        else:
            zeros = self.zero_set.sample(num_starts=num, seed=seed)
        points = [torch.tensor(z.u, dtype=self.star.dtype) for z in zeros if z.regular]
        star = self.star.W_aug
        twins = torch.cat([star, -star]) if self._odd else star
        return [
            p for p in points
            if bool((torch.linalg.vector_norm(twins - p, dim=1)
                     > _AWAY_FROM_STAR * (1 + p.norm())).all())
        ]

    def sample(self, branch: Branch, seed: int = 0, shuffle: bool = True) -> TwoLayerNet:
        """A random point on ``branch``.

        Random real ratios in [−0.5, 1.5] summing to 1 split each cluster; null neurons sit
        at random regular points of Z_f (or at the w̃_j* when none is found).
        """
        gen = torch.Generator().manual_seed(seed)
        star, dtype = self.star, self.star.dtype
        a_rows, w_rows = [], []
        for j, s in enumerate(branch.sizes):
            ratios = 2 * torch.rand(s, generator=gen, dtype=dtype) - 0.5
            ratios[-1] = 1 - ratios[:-1].sum()
            for rho in ratios:
                a_rows.append(rho * star.a[j])
                w_rows.append(star.W_aug[j])
        places = self.null_positions() or list(star.W_aug)
        for _ in range(branch.nulls):
            pick = int(torch.randint(len(places), (1,), generator=gen))
            a_rows.append(torch.zeros_like(star.a[0]))
            w_rows.append(places[pick].to(dtype))
        a, w = torch.stack(a_rows), torch.stack(w_rows)
        if shuffle:
            order = torch.randperm(len(a_rows), generator=gen)
            a, w = a[order], w[order]
        d = star.input_dim
        return TwoLayerNet(a, w[:, :d], b=w[:, d] if star.b is not None else None, c=star.c,
                           activation=star.activation)

    # ------------------------------------------------------------------- membership
    def decompose(self, net: TwoLayerNet) -> Decomposition:
        """Assign every neuron to a cluster, the null neurons or a zero-sum group.

        ``reasons`` lists what keeps ``net`` out of Q_m(f) (empty when it is in).
        """
        reasons = self._compatible(net)
        if reasons:
            return Decomposition((), (), (), (), tuple(reasons))
        w = net.W_aug
        signs = canonical_signs(w) if self._odd else torch.ones(net.width, dtype=w.dtype)
        w_c = w * signs.unsqueeze(1)
        a_c = net.a * signs.unsqueeze(1)
        star_w, star_a = self.star.W_aug, self.star.a  # reduce() left θ* canonical
        dist = torch.cdist(w_c, star_w)
        clusters: list[list[int]] = [[] for _ in range(self.r)]
        rest = []
        for k in range(net.width):
            j = int(dist[k].argmin())
            if float(dist[k, j]) <= self.tol * (1 + float(star_w[j].norm())):
                clusters[j].append(k)
            else:
                rest.append(k)
        nulls, zero_sum = self._classify_rest(rest, w_c, a_c, reasons)
        for j, members in enumerate(clusters):
            if not members:
                reasons.append(f"no neuron sits at w̃*_{j}: the output function differs")
                continue
            reasons += self._kernel_reasons(j, members, a_c)
            total = a_c[members].sum(0)
            if float((total - star_a[j]).norm()) > self.a_tol * (1 + float(star_a[j].norm())):
                reasons.append(
                    f"cluster {j} (neurons {members}) sums its output weights to "
                    f"{total.tolist()}, not a*_{j} = {star_a[j].tolist()}"
                )
        return Decomposition(
            tuple(tuple(c) for c in clusters), tuple(nulls), tuple(tuple(z) for z in zero_sum),
            tuple(int(s) for s in signs.tolist()), tuple(reasons),
        )

    def contains(self, net: TwoLayerNet) -> bool:
        """Whether ``net`` is in Q_m(f): its decomposition succeeds."""
        return self.decompose(net).ok

    def _kernel_reasons(self, j: int, members: list[int], a: torch.Tensor) -> list[str]:
        # K > 1: each a_k must lie in ker ∇φ(w̃_j*)ᵀ, or ∇_{w_k} R = ∇φᵀ a_k ≠ 0.
        if self.is_global or self.star.output_dim == 1:
            return []
        grad = self.residual.grad(self.star.W_aug[j])  # (K, D)
        scale = float(self.residual.e.abs().sum()) * (1 + float(a[members].abs().max()))
        return [
            f"neuron {k}'s output weight is not in ker ∇φ(w̃*_{j})ᵀ: ‖∇φᵀa‖ = {bad:.2e}"
            for k in members
            if (bad := float((grad.T @ a[k]).norm())) > self.tolerances.kernel * scale
        ]

    def _compatible(self, net: TwoLayerNet) -> list[str]:
        star = self.star
        if net.activation != star.activation:
            return [f"activation {net.activation.name} differs from {star.activation.name}"]
        if net.layout.aug_dim != star.layout.aug_dim or net.output_dim != star.output_dim:
            return ["input or output dimensions, or the hidden bias, differ from θ*"]
        if (net.c is None) != (star.c is None) or (
            net.c is not None
            and star.c is not None
            and float((net.c - star.c).abs().max()) > self.a_tol
        ):
            return ["the output bias differs from θ*'s"]
        return []

    def _classify_rest(
        self, rest: list[int], w: torch.Tensor, a: torch.Tensor, reasons: list[str]
    ) -> tuple[list[int], list[list[int]]]:
        zs = self.zero_set
        nulls: list[int] = []
        zero_sum: list[list[int]] = []
        groups: dict[int, list[int]] = {}
        for k in rest:
            if float(a[k].norm()) <= self.a_tol:
                if self.is_global or zs.contains(w[k]):
                    nulls.append(k)
                else:
                    phi = zs.point(w[k]).phi_norm
                    reasons.append(f"null neuron {k} is off Z_f: ‖φ(w̃_{k})‖ = {phi:.2e}")
                continue
            key = next((g for g in groups if float((w[g] - w[k]).norm()) <= self.tol), k)
            groups.setdefault(key, []).append(k)
        for members in groups.values():
            u = w[members[0]]
            total = float(a[members].sum(0).norm())
            singular = zs.contains(u) and zs.is_singular(u)
            if len(members) >= 2 and total <= self.a_tol and (singular or self.is_global):
                zero_sum.append(members)
            else:
                reasons.append(
                    f"neurons {members} at w̃ = {[round(x, 6) for x in u.tolist()]} are "
                    "neither a cluster of θ*, nor null, nor a zero-sum group on Z'_f"
                )
        return nulls, zero_sum


def _compositions(total: int, parts: int) -> list[tuple[int, ...]]:
    """All (s_1..s_parts) with s_i ≥ 1 summing to total."""
    if parts == 0:
        return [()] if total == 0 else []
    return [
        tuple(int(x) for x in np.diff([0, *cuts, total]))
        for cuts in itertools.combinations(range(1, total), parts - 1)
    ]
