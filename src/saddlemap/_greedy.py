"""The steps of :mod:`saddlemap.compression`, one width each (its docstring has the maths).

The exact phase replays a :class:`~saddlemap.reduction.Reduction` a merge or a drop at a
time; the greedy phase takes the best of a few merges and drops (:func:`greedy_step`),
ranked by a refit of the output layer: exact least squares for the squared loss; for
other losses a loose refit (:func:`~saddlemap._refit.rank_convex`), then the best
:data:`POLISHED` refitted exactly (:func:`~saddlemap._refit.refit_convex`) and the best of
those taken.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ._refit import (
    hessian_blocks,
    least_squares,
    rank_convex,
    refit_convex,
    use_newton,
    with_ones,
)
from ._state import Merge, State, merged
from .activations import Symmetry

if TYPE_CHECKING:
    from ._refit import Problem
    from .reduction import Reduction

__all__ = ["CANDIDATES", "exact_steps", "greedy_step"]

#: Candidates of each kind (merges, drops) ranked at every width of the greedy phase.
CANDIDATES = 4
#: Candidates of a convex loss refitted exactly, the best of the loose ranking.
POLISHED = 3


# ------------------------------------------------------------------------- exact phase
def exact_plan(red: Reduction, prob: Problem) -> list[tuple[str, int, int]]:
    """The reduction as one-width steps: ("zero", k, −1), ("merge", base, k), ("null", base, −1)."""
    ops: list[tuple[str, int, int]] = [("zero", k, -1) for k in red.dropped_zero]

    def merges(group: tuple[int, ...]) -> list[int]:
        subgroups: list[list[int]] = []
        if prob.sym is Symmetry.ODD_PART_LINEAR:  # a single flip is not exact: same signs only
            for sign in (1, -1):
                sub = [k for k in group if red.signs[k] == sign]
                if sub:
                    subgroups.append(sub)
        else:
            subgroups = [list(group)]
        for sub in subgroups:
            ops.extend(("merge", sub[0], k) for k in sub[1:])
        return [sub[0] for sub in subgroups]

    for group in red.groups:
        merges(group)
    for group in red.dropped_null:
        ops.extend(("null", base, -1) for base in merges(group))
    return ops


def exact_steps(state: State, red: Reduction, min_width: int) -> Iterator[None]:
    """Apply the exact steps one width at a time; yields after each width decrease."""
    prob = state.prob
    for op, base, other in exact_plan(red, prob):
        if state.w <= min_width:
            return
        i = state.slot_of[base]
        if op == "merge":
            j = state.slot_of[other]
            flip = red.signs[base] != red.signs[other] and prob.can_flip
            state.merge(i, j, merged(prob, state.A[i], state.W[i], state.A[j], state.W[j], flip))
        elif op == "zero":
            if prob.sigma0 != 0.0 and state.c is not None:  # the constant a σ(0) into c
                state.c = state.c + prob.sigma0 * state.A[i]
            state.drop(i)
        else:
            if float(torch.linalg.vector_norm(state.A[i])) > red.a_tol:
                continue  # softplus-class sub-group whose sum is not zero on its own
            state.drop(i)
        yield None


# ------------------------------------------------------------------------ greedy phase
@dataclass
class Candidate:
    """One way to lose a neuron, with its refitted output layer (loosely, if ``features``).

    ``theta``'s rows are the neurons as they will be after the step (row ``removed`` taken
    by the last live row, as :meth:`State.remove` does), then c.  ``features``: those
    neurons' features, for a convex refit still to be polished.
    """

    loss: float
    theta: torch.Tensor
    removed: int
    merged_into: int = -1  # merges: the row that takes the merged neuron
    merge: Merge | None = None
    z: torch.Tensor | None = None
    f: torch.Tensor | None = None
    features: torch.Tensor | None = None


def after_removal(t: torch.Tensor, j: int, w: int, square: bool) -> torch.Tensor:
    """``t`` (a copy of rows, or of rows and columns, 0..w−1) as after removing row j."""
    last = w - 1
    if j != last:
        t[j] = t[last]
        if square:
            t[:, j] = t[:, last]
    return t[:last, :last] if square else t[:last]


def closest_pairs(state: State, count: int) -> list[tuple[int, int, bool]]:
    """The ``count`` closest pairs (i < j) in the symmetry class, with the flip flag."""
    prob, w = state.prob, state.w
    assert state.H is not None
    H = state.H[:w, :w]
    upper = torch.ones(w, w, dtype=torch.bool, device=H.device).triu(1)
    k = min(count, w * (w - 1) // 2)
    sq = H.diagonal()
    if prob.by_direction:
        norms = sq.clamp_min(0).sqrt()
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        dist = 2.0 - 2.0 * H / safe[:, None] / safe[None, :]
    else:
        cross = H.abs() if prob.can_flip else H
        dist = sq[:, None] + sq[None, :] - 2.0 * cross
    dist = torch.where(upper, dist, torch.full_like(dist, math.inf))
    flat = torch.topk(dist.flatten(), k, largest=False).indices.tolist()
    return [(f // w, f % w, bool(prob.can_flip and float(H[f // w, f % w]) < 0))
            for f in flat]


def least_contributing(state: State, count: int) -> list[int]:
    """The ``count`` rows of least ‖a_k‖ · ‖σ(X̃w̃_k)‖ / √n."""
    w = state.w
    if state.G is not None:
        fnorm = state.G[:w, :w].diagonal().clamp_min(0).sqrt()
    else:
        fnorm = torch.linalg.vector_norm(state.F[:w], dim=1)
    contribution = torch.linalg.vector_norm(state.A[:w], dim=1) * fnorm
    return torch.topk(contribution, min(count, w), largest=False).indices.tolist()


def least_squares_after(
    state: State, j: int, i: int = -1, g_row: torch.Tensor | None = None,
    f: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """The least-squares refit after removing row j: O(w²) to form, O(w³) to solve.

    For a merge, row i is first replaced by features f, whose inner products with the
    live rows are g_row.
    """
    assert state.G is not None and state.s is not None and state.B is not None
    w = state.w
    G, s, B = state.G[:w, :w].clone(), state.s[:w].clone(), state.B[:w].clone()
    if i >= 0:
        assert g_row is not None and f is not None
        G[i, :], G[:, i] = g_row, g_row
        G[i, i] = f @ f
        s[i], B[i] = f.sum(), f @ state.prob.T
    return least_squares(
        state.prob, after_removal(G, j, w, True), after_removal(s, j, w, False),
        after_removal(B, j, w, False),
    )


class _ConvexRanking:
    """Loose convex refits of the candidates of one width, around its current outputs.

    The Hessian of the data term at the current outputs is formed once; a candidate's is
    that one with the removed neuron's blocks taken out and, for a merge, the merged
    neuron's blocks formed anew (one row of blocks: O(nwK²)).
    """

    def __init__(self, state: State) -> None:
        self.state, prob, w = state, state.prob, state.w
        self.g = state.outputs()
        self.H: torch.Tensor | None = None  # None: L-BFGS refits (too many parameters)
        if use_newton(prob, w - 1 + int(prob.has_c)):
            Fh = with_ones(prob, state.F[:w])
            self.H = hessian_blocks(prob, Fh, Fh, self.g)

    def refit(self, j: int, i: int = -1, merge: Merge | None = None,
              f: torch.Tensor | None = None) -> tuple[torch.Tensor, float, torch.Tensor]:
        """The loose refit after removing row j (and, for a merge, replacing row i)."""
        state, prob, w = self.state, self.state.prob, self.state.w
        F, start, c = state.F[:w].clone(), state.A[:w].clone(), state.c
        if i >= 0:
            assert merge is not None and f is not None
            F[i], start[i] = f, merge.a
            if c is not None and merge.c_gain is not None:
                c = c + merge.c_gain
        F, start = after_removal(F, j, w, False), after_removal(start, j, w, False)
        if c is not None:
            start = torch.cat([start, c[None, :]], 0)
        H = None
        if self.H is not None:
            rows = list(range(w + int(prob.has_c)))
            rows[j] = w - 1
            del rows[w - 1]
            H = self.H[rows][:, :, rows]
            if i >= 0:
                assert f is not None
                block = hessian_blocks(prob, f[None], with_ones(prob, F), self.g)[0]
                H[i], H[:, :, i] = block, block.permute(1, 2, 0)
        theta, loss = rank_convex(prob, F, start, H)
        return theta, loss, F


def candidates(state: State) -> list[Candidate]:
    """Every candidate of this width, each with its (loosely, if convex) refitted layer."""
    prob, w = state.prob, state.w
    out: list[Candidate] = []
    pairs = closest_pairs(state, CANDIDATES) if w >= 2 else []
    merges = [merged(prob, state.A[i], state.W[i], state.A[j], state.W[j], flip)
              for i, j, flip in pairs]
    rows = [state.merged_row(i, j, merge) for (i, j, _), merge in zip(pairs, merges, strict=True)]
    ranking = None if prob.squared else _ConvexRanking(state)
    g_rows = None
    if prob.squared and rows:  # the Gram rows of every merged neuron in one product
        g_rows = (state.F[:w] @ torch.stack([f for _, f in rows]).T).T
    for k, ((i, j, _), merge, (z, f)) in enumerate(zip(pairs, merges, rows, strict=True)):
        if ranking is None:
            assert g_rows is not None
            theta, loss = least_squares_after(state, j, i, g_rows[k], f)
            out.append(Candidate(loss, theta, j, i, merge, z, f))
        else:
            theta, loss, F = ranking.refit(j, i, merge, f)
            out.append(Candidate(loss, theta, j, i, merge, z, f, F))
    for j in least_contributing(state, CANDIDATES):
        if ranking is None:
            theta, loss = least_squares_after(state, j)
            out.append(Candidate(loss, theta, j))
        else:
            theta, loss, F = ranking.refit(j)
            out.append(Candidate(loss, theta, j, features=F))
    return out


def _by_loss(cand: Candidate) -> float:
    return cand.loss if math.isfinite(cand.loss) else math.inf


def greedy_step(state: State, floor: float) -> None:
    """One width less, by the best candidate, its refitted output layer installed."""
    ranked = sorted(candidates(state), key=_by_loss)
    if ranked[0].features is not None:  # loose convex refits: polish the best few
        for cand in ranked[:POLISHED]:
            assert cand.features is not None
            cand.theta, cand.loss = refit_convex(state.prob, cand.features, cand.theta, floor)
        ranked = sorted(ranked[:POLISHED], key=_by_loss)
    best = ranked[0]
    theta = best.theta
    if best.merge is not None:
        assert best.z is not None and best.f is not None
        i, j = best.merged_into, best.removed
        state.set_neuron(i, best.merge.a, best.merge.w_aug, best.z, best.f)
        state.members[i] = tuple(sorted(state.members[i] + state.members[j]))
        state.remove(j)
    else:
        state.drop(best.removed)
    w = state.w
    state.A[:w] = theta[:w]
    if state.c is not None:
        state.c = theta[w].clone()
