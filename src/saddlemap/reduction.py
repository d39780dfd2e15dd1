"""The critical reduction operator: the minimal-width network with the same output.

``reduce`` (Zhang, Zhang & Luo, arXiv:2405.17501, critical reduction operator; docs/theory.md §4):

1. canonicalise each neuron for the activation's symmetry (odd: the first nonzero
   coordinate of w̃ positive, a flipped with it; sigmoid: the same, the constant 2aσ(0) into
   the output bias; softplus-class: the same when the linear terms aw̃ of the flips cancel;
   ReLU-type: scale w̃ to unit length, a·‖w̃‖ into a);
2. group neurons with equal w̃ (within ``tol``) and sum their output weights;
3. drop groups whose summed output weight is zero (null neurons, zero-sum groups), and
   neurons that are the zero function (w̃ = 0 with σ(0) = 0) or a constant the output bias
   absorbs;
4. check the kept neurons for remaining linear dependence on probe points, and report it.

Grouping sorts the neurons by a random projection of w̃ and compares only neighbours, so it
costs O(m log m), not O(m²); a neuron alone in its group is kept without tensor work.

The dependence check (step 4) is one SVD of the feature matrix [σ(X̃W̃ᵀ), 1] on at least
2r + 8 probe points up to :data:`EXACT_RANK_WIDTH` kept neurons: O(r³), exact.  Above, it
is windowed, O(r · w²) for windows of w = :data:`RANK_WINDOW`: the neurons are sorted by a
random projection of their sign-canonical input weights, cut into windows of w neurons in
two tilings (the second offset by w/2), and each window's features are checked by SVD on
2w + 8 probe points.  Guarantee: every dependence among neurons within w/2 consecutive
places of that order is found (near-equal neurons, ±w̃ pairs with their single canonical
form, neurons differing only in the bias, and — with more than dim-span neurons per window
— a polynomial activation's finite span); the reported count is then a lower bound (null
vectors of disjoint windows are independent), and a dependence spread wider goes unseen.

>>> from saddlemap import TwoLayerNet
>>> net = TwoLayerNet([0.3, 0.7, 0.5, -0.5], [[1.0], [1.0], [2.0], [2.0]], activation="tanh")
>>> red = reduce(net)
>>> red.width, red.groups, red.net.a.flatten().tolist()
(1, ((0, 1),), [1.0])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .activations import Symmetry
from .errors import OptionError
from .network import TwoLayerNet
from .tolerances import Tolerances

__all__ = ["Reduction", "canonical_signs", "default_tolerances", "reduce"]


@dataclass(frozen=True, eq=False)
class Reduction:
    """The reduced network and how the original neurons map onto it.

    Attributes:
        net: the reduced network, width r.
        groups: for each kept neuron j, the original neurons merged into it.
        assignment: for each original neuron, its kept neuron j, or -1 if dropped.
        signs: for each original neuron, +1, or -1 where it was flipped (w̃ → −w̃).
        dropped_null: groups dropped because their output weights sum to zero (null neurons
            and zero-sum groups), as tuples of original neurons.
        dropped_zero: neurons dropped as zero or constant functions.
        tol: the tolerance for equal input weights (absolute).
        a_tol: the tolerance for a zero summed output weight (absolute).
        output_change: max |g_original − g_reduced| over the data and the probe points.
        rank_deficiency: how many kept neurons (with the constant, if there is an output
            bias) are linearly dependent on the probe points; 0 means none was found.
        notes: what was applied and what could not be settled, in words.
    """

    net: TwoLayerNet
    groups: tuple[tuple[int, ...], ...]
    assignment: tuple[int, ...]
    signs: tuple[int, ...]
    dropped_null: tuple[tuple[int, ...], ...]
    dropped_zero: tuple[int, ...]
    tol: float
    a_tol: float
    output_change: float
    rank_deficiency: int
    notes: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        """r, the width of the reduced network."""
        return self.net.width

    @property
    def original_width(self) -> int:
        """m, the width before reduction."""
        return len(self.assignment)

    @property
    def is_minimal(self) -> bool:
        """Whether r is the minimal width: no dependence was left among the kept neurons."""
        return self.rank_deficiency == 0


def default_tolerances(
    net: TwoLayerNet, tolerances: Tolerances | None = None
) -> tuple[float, float]:
    """(tol, a_tol): ``merge`` · max(1, max|w̃|) for input weights, · max(1, max|a|) for outputs."""
    merge = (tolerances or Tolerances()).resolved(net.dtype).merge_value
    w_scale = max(1.0, float(net.W_aug.abs().max()) if net.width else 1.0)
    a_scale = max(1.0, float(net.a.abs().max()) if net.width else 1.0)
    return merge * w_scale, merge * a_scale


def _check_tolerance(value: float | None, name: str) -> None:
    if value is not None and not (isinstance(value, (int, float)) and 0 <= value < math.inf):
        raise OptionError(f"{name} must be a finite number ≥ 0, got {value!r}")


def canonical_signs(w_aug: torch.Tensor) -> torch.Tensor:
    """+1 or −1 per row so that the first nonzero coordinate becomes positive."""
    nonzero = w_aug != 0
    first = nonzero.to(torch.uint8).argmax(1)  # 0 for an all-zero row, whose sign stays +1
    lead = w_aug.gather(1, first.unsqueeze(1)).squeeze(1)
    return torch.where(lead < 0, -1.0, 1.0).to(w_aug.dtype)


@dataclass
class _Work:
    """Neurons being reduced: a (m, K), w̃ (m, D), output bias (K,) or None."""

    a: torch.Tensor
    w: torch.Tensor
    c: torch.Tensor | None
    signs: torch.Tensor
    notes: list[str]
    norms: torch.Tensor | None = None  # ReLU-type: original ‖w̃_k‖, restored on output


def _canonicalise(net: TwoLayerNet, tol: float) -> _Work:
    a, w = net.a.clone(), net.W_aug.clone()
    c = None if net.c is None else net.c.clone()
    ones = torch.ones(net.width, dtype=net.dtype, device=net.device)
    work = _Work(a, w, c, ones, [])
    sym = net.activation.symmetry
    if sym is Symmetry.NON_ANALYTIC:
        # ReLU-type: positively homogeneous, σ(λz) = λσ(z) for λ > 0: merge by direction.
        norms = torch.linalg.vector_norm(w, dim=1)
        scale = torch.where(norms > 0, norms, torch.ones_like(norms))
        work.a, work.w, work.norms = a * scale.unsqueeze(1), w / scale.unsqueeze(1), scale
        work.notes.append(
            f"{net.activation.name} is not analytic: neurons merged by direction "
            "(a·‖w̃‖ onto unit w̃); the theory's minimality does not cover it"
        )
        return work
    if sym not in (Symmetry.ODD, Symmetry.ODD_PLUS_CONSTANT, Symmetry.ODD_PART_LINEAR):
        return work
    signs = canonical_signs(w)
    flipped = signs < 0
    if not bool(flipped.any()):
        return work
    if sym is Symmetry.ODD_PLUS_CONSTANT:
        # aσ(z) = −aσ(−z) + 2aσ(0): a flip leaves a constant, which only c can absorb.
        if c is None:
            work.notes.append("sigmoid-class neurons at ±w̃ kept apart: no output bias to absorb")
            return work
        sigma0 = float(net.activation.fn(torch.zeros(1, dtype=net.dtype))[0])
        work.c = c + 2 * sigma0 * a[flipped].sum(0)
    if sym is Symmetry.ODD_PART_LINEAR:
        # aσ(z) = aσ(−z) + az: flips leave Σ a w̃ᵀx̃, exact only if its x-part cancels.
        linear = a[flipped].T @ w[flipped]  # (K, D)
        d = net.input_dim
        if float(linear[:, :d].abs().max()) > tol * max(1.0, float(a.abs().max())):
            work.notes.append(
                f"{net.activation.name}-class neurons at ±w̃ kept apart: their linear parts "
                "do not cancel"
            )
            return work
        if net.b is not None and bool((linear[:, d] != 0).any()):
            if c is None:
                work.notes.append(f"{net.activation.name}-class flips need an output bias")
                return work
            work.c = c + linear[:, d]
        # σ(−z) carries the same a: only w̃ flips
    else:
        work.a = a * signs.unsqueeze(1)
    work.w = w * signs.unsqueeze(1)
    work.signs = signs
    return work


def _group(w: torch.Tensor, tol: float) -> list[list[int]]:
    """Groups of rows of w equal within tol, in O(m log m) for well-separated clusters.

    Rows are sorted by a random projection; a gap above tol between neighbours separates
    groups, and only runs of several rows between gaps are compared row by row.
    """
    m = w.shape[0]
    if m == 0:
        return []
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(w.shape[1], generator=gen, dtype=w.dtype).to(w.device)
    direction = direction / torch.linalg.vector_norm(direction)
    proj = w @ direction
    order = torch.argsort(proj)
    gaps = proj[order].diff() > tol
    starts = torch.cat([torch.zeros(1, dtype=torch.long, device=w.device),
                        torch.nonzero(gaps).flatten() + 1,
                        torch.full((1,), m, dtype=torch.long, device=w.device)])
    sizes = starts.diff()
    groups: list[list[int]] = [[k] for k in order[starts[:-1][sizes == 1]].tolist()]
    for lo, hi in zip(starts[:-1][sizes > 1].tolist(), starts[1:][sizes > 1].tolist(),
                      strict=True):
        block = order[lo:hi]
        while block.numel():
            ref = w[block[0]]
            close = torch.linalg.vector_norm(w[block] - ref, dim=1) <= tol
            groups.append(block[close].tolist())
            block = block[~close]
    return sorted(groups, key=lambda g: min(g))


def _probe_inputs(net: TwoLayerNet, X: torch.Tensor | None, num: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    probes = torch.randn(num, net.input_dim, generator=gen, dtype=net.dtype).to(net.device)
    return probes if X is None else torch.cat([X.to(net.dtype).to(net.device), probes])


#: Up to this many kept neurons the dependence check is one SVD of all of them.
EXACT_RANK_WIDTH = 512
#: Neurons per window of the windowed dependence check above that width.
RANK_WINDOW = 64
#: Entries of the windows' feature matrices one batched SVD may hold.
_WINDOW_BATCH = 2**22


def _rank_deficiency(net: TwoLayerNet, X: torch.Tensor) -> tuple[int, float]:
    """Columns of [σ(X̃W̃ᵀ), 1] minus their numerical rank, and the smallest singular value."""
    features = net.activation(net.augment(X) @ net.W_aug.T)
    if net.c is not None:
        features = torch.cat([features, torch.ones_like(features[:, :1])], dim=1)
    if features.shape[1] == 0:
        return 0, float("inf")
    sv = torch.linalg.svdvals(features)
    cutoff = float(sv[0]) * max(features.shape) * torch.finfo(net.dtype).eps * 1e3
    return int((sv <= cutoff).sum()), float(sv[-1])


def _window_order(net: TwoLayerNet) -> torch.Tensor:
    """Neurons sorted by a random projection of the input part of their canonical w̃.

    Near-equal neurons are near in this order, a ±w̃ pair (one canonical form) sits side by
    side, and so do neurons that differ only in their bias (exp(wᵀx + b) = eᵇ exp(wᵀx)).
    """
    w = net.W_aug
    canonical = w * canonical_signs(w).unsqueeze(1)
    gen = torch.Generator().manual_seed(2)
    direction = torch.randn(net.input_dim, generator=gen, dtype=w.dtype).to(w.device)
    return torch.argsort(canonical[:, : net.input_dim] @ direction, stable=True)


def _windows_deficiency(
    net: TwoLayerNet, probes: torch.Tensor, windows: list[torch.Tensor]
) -> tuple[int, float]:
    """Σ over the windows of (columns − numerical rank) of [σ(X̃ W̃_windowᵀ), 1]."""
    Xa = net.augment(probes)
    eps = torch.finfo(net.dtype).eps
    total, smallest = 0, math.inf
    by_size: dict[int, list[torch.Tensor]] = {}
    for idx in windows:
        by_size.setdefault(idx.numel(), []).append(idx)
    for size, same in by_size.items():
        cols = size + int(net.c is not None)
        step = max(1, _WINDOW_BATCH // (Xa.shape[0] * cols))
        for start in range(0, len(same), step):
            idx = torch.stack(same[start:start + step])  # (b, size)
            z = torch.einsum("nd,bkd->bnk", Xa, net.W_aug[idx])
            features = net.activation(z)
            if net.c is not None:
                features = torch.cat([features, torch.ones_like(features[..., :1])], dim=2)
            sv = torch.linalg.svdvals(features)  # (b, cols), descending
            cutoff = sv[:, :1] * max(Xa.shape[0], cols) * eps * 1e3
            total += int((sv <= cutoff).sum())
            smallest = min(smallest, float(sv[:, -1].min()))
    return total, smallest


def _windowed_rank_deficiency(
    net: TwoLayerNet, probes: torch.Tensor, window: int = RANK_WINDOW
) -> tuple[int, float]:
    """The dependence check in windows of neighbours (see :func:`reduce`): a lower bound.

    Two tilings of :func:`_window_order` into windows of ``window`` neurons, the second
    offset by half a window; the result is the larger tiling's sum.  Null vectors of
    disjoint windows are independent (the shared constant column cannot tie them: it is
    nonzero), so each tiling's sum is at most the true deficiency.
    """
    order = _window_order(net)
    best, smallest = 0, math.inf
    for offset in (0, window // 2):
        windows = list(order[:offset].split(window)) if offset else []
        windows += list(order[offset:].split(window))
        count, low = _windows_deficiency(net, probes, [w for w in windows if w.numel()])
        best, smallest = max(best, count), min(smallest, low)
    return best, smallest


def _dependence(
    net: TwoLayerNet, X: torch.Tensor | None, num_probes: int
) -> tuple[int, float]:
    """Linear dependence among the neurons of ``net``: exact SVD, or windowed when wide."""
    r = net.width
    if r <= EXACT_RANK_WIDTH:
        return _rank_deficiency(net, _probe_inputs(net, X, max(num_probes, 2 * r + 8)))
    rows = 2 * RANK_WINDOW + 8
    if X is not None and X.shape[0] > RANK_WINDOW:  # a seeded subset of the data's rows
        pick = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(3))
        X = X[pick[:RANK_WINDOW].to(X.device)]
    extra = max(num_probes, rows - (0 if X is None else X.shape[0]))
    return _windowed_rank_deficiency(net, _probe_inputs(net, X, extra))


def reduce(
    net: TwoLayerNet,
    X: torch.Tensor | None = None,
    tol: float | None = None,
    a_tol: float | None = None,
    num_probes: int = 64,
    check_rank: bool = True,
    tolerances: Tolerances | None = None,
) -> Reduction:
    """Apply the critical reduction operator to ``net`` (see the module docstring).

    Args:
        net: the network to reduce.
        X: data inputs; the output change and the dependence check use them with
            ``num_probes`` random Gaussian probe points.
        tol: equal-weight tolerance (absolute); default ``tolerances.merge`` · max(1, max|w̃|).
        a_tol: zero output-weight tolerance (absolute); default ``tolerances.merge`` ·
            max(1, max|a|).
        num_probes: random probe inputs for the checks.
        check_rank: look for remaining linear dependence: one SVD of size probes × r up to
            :data:`EXACT_RANK_WIDTH` kept neurons, windows of neighbours above (see the
            module docstring for what the windowed check guarantees).
        tolerances: where the default ``tol`` and ``a_tol`` come from (``merge``: √ε).

    Raises:
        OptionError: a negative, NaN or infinite tolerance, or ``num_probes`` < 0.
    """
    _check_tolerance(tol, "tol")
    _check_tolerance(a_tol, "a_tol")
    if not (isinstance(num_probes, int) and num_probes >= 0):
        raise OptionError(f"num_probes must be an integer ≥ 0, got {num_probes!r}")
    default_tol, default_a_tol = default_tolerances(net, tolerances)
    tol = default_tol if tol is None else float(tol)
    a_tol = default_a_tol if a_tol is None else float(a_tol)
    work = _canonicalise(net, tol)
    sigma0 = float(net.activation.fn(torch.zeros(1, dtype=net.dtype))[0])
    groups = _group(work.w, tol)
    plain = _plain_singletons(work, groups, tol, a_tol).tolist()
    kept: list[tuple[torch.Tensor, torch.Tensor] | int] = []
    kept_groups: list[tuple[int, ...]] = []
    dropped_null: list[tuple[int, ...]] = []
    dropped_zero: list[int] = []
    assignment = [-1] * net.width
    for group in groups:
        if len(group) == 1 and plain[group[0]]:  # one neuron, kept as it is: no tensor work
            assignment[group[0]] = len(kept)
            kept.append(group[0])
            kept_groups.append((group[0],))
            continue
        rep = max(group, key=lambda k: float(torch.linalg.vector_norm(work.a[k])))
        a_sum = work.a[group].sum(0)
        w_rep = work.w[rep]
        if work.norms is not None:  # back to the representative's own scale
            a_sum, w_rep = a_sum / work.norms[rep], w_rep * work.norms[rep]
        if float(torch.linalg.vector_norm(a_sum)) <= a_tol:
            dropped_null.append(tuple(group))
            continue
        if float(torch.linalg.vector_norm(w_rep)) <= tol:
            if sigma0 == 0.0:
                dropped_zero.extend(group)
                continue
            if work.c is not None:  # a constant neuron a σ(0): into the output bias
                work.c = work.c + sigma0 * a_sum
                dropped_zero.extend(group)
                continue
        for k in group:
            assignment[k] = len(kept)
        kept.append((a_sum, w_rep))
        kept_groups.append(tuple(group))
    reduced = _build(net, work, kept)
    probes = _probe_inputs(net, X, num_probes)
    with torch.no_grad():
        change = float((net(probes) - reduced(probes)).abs().max()) if probes.numel() else 0.0
    deficiency = 0
    if check_rank and reduced.width:
        deficiency, smallest = _dependence(reduced, X, num_probes)
        if deficiency:
            work.notes.append(
                f"{deficiency} kept neuron(s) remain linearly dependent on the probe points "
                f"(smallest singular value {smallest:.2e}): the width is not minimal"
            )
    if net.activation.symmetry is Symmetry.POLYNOMIAL:
        work.notes.append(f"{net.activation.name} is a polynomial: outside the theory")
    return Reduction(
        reduced, tuple(kept_groups), tuple(assignment),
        tuple(int(s) for s in work.signs.tolist()), tuple(dropped_null),
        tuple(sorted(dropped_zero)), tol, a_tol, change, deficiency, tuple(work.notes),
    )


def _plain_singletons(
    work: _Work, groups: list[list[int]], tol: float, a_tol: float
) -> torch.Tensor:
    """For each neuron: alone in its group, with ‖a‖ > a_tol and ‖w̃‖ > tol (mask (m,)).

    Such a neuron is kept unchanged, exactly as the loop in :func:`reduce` would keep it
    (the sum of one output weight is that weight), so the loop skips its tensor work.
    """
    m = work.a.shape[0]
    alone = torch.zeros(m, dtype=torch.bool, device=work.a.device)
    single = [g[0] for g in groups if len(g) == 1]
    if not single:
        return alone
    idx = torch.tensor(single, dtype=torch.long, device=work.a.device)
    a, w = work.a[idx], work.w[idx]
    if work.norms is not None:
        a, w = a / work.norms[idx, None], w * work.norms[idx, None]
    keep = (torch.linalg.vector_norm(a, dim=1) > a_tol) & (torch.linalg.vector_norm(w, dim=1) > tol)
    alone[idx[keep]] = True
    return alone


def _build(
    net: TwoLayerNet, work: _Work, kept: list[tuple[torch.Tensor, torch.Tensor] | int]
) -> TwoLayerNet:
    """The reduced network: kept neurons are (a, w̃) pairs or indices of unchanged ones."""
    K, D, d = net.output_dim, net.W_aug.shape[1], net.input_dim
    a = net.a.new_empty(len(kept), K)
    w = net.W_aug.new_empty(len(kept), D)
    rows = [j for j, item in enumerate(kept) if isinstance(item, int)]
    if rows:
        src = torch.tensor([kept[j] for j in rows], dtype=torch.long, device=net.a.device)
        dst = torch.tensor(rows, dtype=torch.long, device=net.a.device)
        a_src, w_src = work.a[src], work.w[src]
        if work.norms is not None:
            a_src, w_src = a_src / work.norms[src, None], w_src * work.norms[src, None]
        a[dst], w[dst] = a_src, w_src
    for j, item in enumerate(kept):
        if not isinstance(item, int):
            a[j], w[j] = item
    return TwoLayerNet(
        a, w[:, :d], b=w[:, d] if net.b is not None else None, c=work.c,
        activation=net.activation,
    )
