"""Compression with a loss budget: a width–loss profile by merges, drops and refits.

:func:`~saddlemap.reduce` removes only what costs nothing (coinciding neurons, null neurons,
zero-sum groups, at a √ε tolerance), and a trained network is never exactly reducible.
:func:`compression_profile` goes further, one width at a time, and measures what each
width costs, so that a user can pick the smallest network within a loss budget.

**Exact phase.**  From the original width m, the reduction of ``reduce`` is replayed one
neuron at a time: every merge of two neurons of one of its groups (sign twins folded as
``reduce`` folds them) and every drop of a null, zero or constant neuron is a step of one
width, with the output unchanged to the merge tolerance and no refit.  (A softplus-class
flip is exact only jointly with the other flips, so those merges are left to the next
phase.)

**Greedy phase.**  Below that, each width w → w − 1 takes the best of a few candidates of
two kinds, each judged by the loss after a refit of the output layer:

* *merge* the pairs of neurons whose input weights are closest in the activation's
  symmetry class (odd activations: ‖w̃_i ∓ w̃_j‖, the sign twin folded, with the output
  bias absorbing 2σ(0)a for sigmoid; ReLU-type: the directions w̃/‖w̃‖; otherwise
  ‖w̃_i − w̃_j‖).  The merged neuron has output weight a_i + a_j and input weight the
  output-weight-weighted mean w̄ = α_i w̃_i + α_j w̃_j, α_k = a_kᵀs/‖s‖², s = a_i + a_j
  (for one output (a_i w̃_i + a_j w̃_j)/(a_i + a_j)): the first-order terms of the pair's
  output in w̃_k − w̄ cancel, so a cluster of spread δ merges with an output change of
  O(δ²).  Where that mean extrapolates by more than the pair's distance (α outside
  [−1, 2]: output weights of opposite signs that nearly cancel) the |a|-weighted mean is
  taken instead;
* *drop* the neurons of least contribution ‖a_k‖ · ‖σ(X̃w̃_k)‖ / √n.

The refit minimises R over the output layer (a and, if the network has one, the output bias
c) with the hidden layer fixed (the numerical details are in ``saddlemap._refit``).  For the
squared loss it is least squares: the Gram matrices FᵀF, Fᵀ1 and FᵀY of the features
F = σ(X̃W̃ᵀ) are kept and updated when one column changes (a merge) or goes (a drop), so a
candidate costs O(w²) to form and O(w³) to solve rather than O(nw²).  A merge's new column
costs O(n), not O(nD): the pre-activations Z = W̃X̃ᵀ are kept too, and w̄ is a combination
of w̃_i and w̃_j, so its row of Z is the same combination of theirs.

For cross-entropy and binary cross-entropy (and any other loss) the refit is the convex
problem in θ, solved by Newton (or L-BFGS), warm-started from the candidate's own output
weights.  On (nearly) separable data that optimum lies at infinity, or far out along nearly
collinear features, and the output weights grow without bound (to 10⁶ on three
well-separated blobs), so the refit adds a tiny ridge (10⁻⁸ of each neuron's mean-square
output) and stops once R falls to half the original loss, well within any budget.  Such a
refit takes tens of Hessians, so the candidates are first ranked by a loose refit: three
Newton steps with the Hessian of the current width, formed once and edited for each
candidate, and not stopped at that floor (all candidates take the same steps, so their
losses compare); the best three are refitted exactly, and the best of those is taken.

**Choice.**  The chosen width is the smallest whose loss is within the budget (and, for
classifiers, whose accuracy is).  Near zero loss a refit of the output layer alone cannot
meet a relative budget: R is then all distance to an exactly reducible network, and merging
or dropping neurons costs a few times R (a zero-noise teacher–student student of width 8
keeps width 7 at 1 %).  With ``finetune_steps``, candidate widths are fine-tuned (all
parameters) and the smallest whose fine-tuned network is within the budget is chosen (that
student: width 2).

The loss is the data term R(θ) = (1/n) Σ ℓ(g(θ, x_i), y_i) throughout, computed in float64;
a weight-decay penalty the data may carry (``data.penalty``) is ignored: the budget is on
the data term.

>>> from saddlemap import Dataset, TwoLayerNet
>>> from saddlemap.embedding import split
>>> net = TwoLayerNet([0.8], [[1.5]], activation="tanh")
>>> wide = split(net, 0, [0.25, 0.75]).net          # two copies of one neuron
>>> data = Dataset([[-1.0], [0.0], [0.5], [2.0]], [-0.5, 0.1, 0.4, 0.7])
>>> profile = compression_profile(wide, data)
>>> profile.widths, profile.chosen.width, profile.chosen.groups
((2, 1), 1, ((0, 1),))
>>> abs(profile.chosen.loss - profile.loss_before) <= 1e-12 * profile.loss_before
True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from ._greedy import exact_steps, greedy_step
from ._refit import SEPARABLE_FLOOR, Problem
from ._state import State
from .data import Dataset
from .errors import DataError, OptionError
from .network import TwoLayerNet
from .reduction import reduce
from .training import train

__all__ = ["CompressionProfile", "ProfilePoint", "compression_profile"]

FinetuneOptimizer = Literal["adam", "lbfgs"]


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True, eq=False)
class ProfilePoint:
    """The network kept at one width of a :class:`CompressionProfile`.

    Attributes:
        width: the number of hidden neurons.
        loss: the data loss R of ``net`` (float64).
        accuracy: the fraction of samples classified correctly, for cross-entropy and binary
            cross-entropy; None for other losses.
        net: the network at this width, in the original network's dtype and device; its
            output layer is refitted unless ``exact``.  (A property: ``build()`` the first
            time it is asked for, then kept, so that m networks of width up to m are not
            all held at once.)
        build: a function of no arguments that returns ``net``.
        groups: for each neuron of ``net``, in order, the original neurons merged into it.
        dropped: the original neurons dropped (after any merges into them), sorted.
        output_change: max |g_original − g_compressed| over the data (all outputs).
        exact: whether this width came from the exact reduction (no refit; the output is
            the original's to the merge tolerance).
        finetuned: the optimizer (``"adam"`` or ``"lbfgs"``) that fine-tuned all the
            parameters afterwards, or None.
    """

    width: int
    loss: float
    accuracy: float | None
    build: Callable[[], TwoLayerNet] = field(repr=False)
    groups: tuple[tuple[int, ...], ...]
    dropped: tuple[int, ...]
    output_change: float
    exact: bool = False
    finetuned: str | None = None

    @cached_property
    def net(self) -> TwoLayerNet:
        """The network at this width (``build()`` on first use, then kept)."""
        return self.build()

    def to_dict(self) -> dict[str, Any]:
        """``{"width", "loss", "accuracy"}``, JSON-serialisable."""
        return {"width": self.width, "loss": self.loss, "accuracy": self.accuracy}


@dataclass(frozen=True, eq=False)
class CompressionProfile:
    """The width–loss profile of a network, and the width chosen within the loss budget.

    Attributes:
        points: one :class:`ProfilePoint` per width, descending from the original width m
            to ``min_width``.
        loss_before: R of the given network.
        max_loss_increase: the relative budget δ: a width qualifies when its loss is at most
            ``loss_before · (1 + δ)`` (plus rounding: 64ε of it, and 64ε² of the loss of the
            zero output) and, for classifiers, its accuracy is at least
            ``accuracy_before · (1 − δ)``.
        chosen: the smallest qualifying width; with fine-tuning, the smallest whose
            fine-tuned network qualifies (then it is not one of ``points``).
        accuracy_before: the given network's accuracy (classifiers), else None.
        notes: what is worth knowing, in words (the widths fine-tuned and their losses).
    """

    points: tuple[ProfilePoint, ...]
    loss_before: float
    max_loss_increase: float
    chosen: ProfilePoint
    accuracy_before: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def widths(self) -> tuple[int, ...]:
        """The widths of the profile, descending."""
        return tuple(p.width for p in self.points)

    @property
    def losses(self) -> tuple[float, ...]:
        """The losses at those widths."""
        return tuple(p.loss for p in self.points)

    @property
    def budget(self) -> float:
        """loss_before · (1 + max_loss_increase)."""
        return self.loss_before * (1.0 + self.max_loss_increase)

    def at(self, width: int) -> ProfilePoint:
        """The point of the profile at ``width``.

        Raises:
            OptionError: no point of that width (outside [min_width, m]).
        """
        for point in self.points:
            if point.width == width:
                return point
        raise OptionError(f"the profile has widths {min(self.widths)}..{max(self.widths)}, "
                          f"not {width!r}")

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-serialisable data: budget, chosen width and every point."""
        return {
            "loss_before": self.loss_before,
            "accuracy_before": self.accuracy_before,
            "max_loss_increase": self.max_loss_increase,
            "budget": self.budget,
            "chosen": {**self.chosen.to_dict(), "finetuned": self.chosen.finetuned},
            "points": [p.to_dict() for p in self.points],
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """One line: the chosen width, its loss against the budget."""
        acc = "" if self.chosen.accuracy is None else f", accuracy {self.chosen.accuracy:.4f}"
        return (
            f"width {self.points[0].width} → {self.chosen.width}: R = {self.chosen.loss:.6g} "
            f"(before {self.loss_before:.6g}, budget {self.budget:.6g}{acc})"
        )


# ---------------------------------------------------------------------------- the API
def _check_options(
    net: TwoLayerNet, max_loss_increase: Any, min_width: Any, finetune_steps: Any,
    finetune_optimizer: Any,
) -> None:
    if isinstance(max_loss_increase, bool) or not isinstance(max_loss_increase, numbers.Real) \
            or not (0.0 <= float(max_loss_increase) < math.inf):
        raise OptionError(
            f"max_loss_increase must be a finite number ≥ 0, got {max_loss_increase!r}")
    if isinstance(min_width, bool) or not isinstance(min_width, numbers.Integral) \
            or not (1 <= int(min_width) <= net.width):
        raise OptionError(
            f"min_width must be an integer in [1, {net.width}] (the network's width), "
            f"got {min_width!r}")
    if isinstance(finetune_steps, bool) or not isinstance(finetune_steps, numbers.Integral) \
            or int(finetune_steps) < 0:
        raise OptionError(f"finetune_steps must be an integer ≥ 0, got {finetune_steps!r}")
    if finetune_optimizer not in ("adam", "lbfgs"):
        raise OptionError(
            f"finetune_optimizer must be 'adam' or 'lbfgs', got {finetune_optimizer!r}")


def _point(state: State, g0: torch.Tensor, exact: bool,
           build: Callable[[], TwoLayerNet] | None = None) -> ProfilePoint:
    g = state.outputs()
    prob = state.prob
    return ProfilePoint(
        width=state.w, loss=prob.risk(g), accuracy=prob.accuracy(g),
        build=state.net_factory() if build is None else build, groups=tuple(state.members),
        dropped=tuple(sorted(state.dropped)), output_change=float((g - g0).abs().max()),
        exact=exact,
    )


def _finetune(
    point: ProfilePoint, prob: Problem, data: Dataset, g0: torch.Tensor, steps: int,
    optimizer: FinetuneOptimizer,
) -> ProfilePoint:
    plain = Dataset(data.X, data.targets, loss=data.loss, dtype=torch.float64,
                    device=prob.device)  # the data term only: no penalty
    run = train(point.net.to(dtype=torch.float64), plain, optimizer=optimizer, steps=steps)
    with torch.no_grad():
        X = prob.Xt[:, : prob.d]
        g = run.net(X)
    net = run.net if prob.dtype == torch.float64 else run.net.to(dtype=prob.dtype)
    return ProfilePoint(
        width=point.width, loss=prob.risk(g), accuracy=prob.accuracy(g), build=lambda: net,
        groups=point.groups, dropped=point.dropped,
        output_change=float((g - g0).abs().max()), exact=False, finetuned=optimizer,
    )


def _finetuned_choice(
    points: list[ProfilePoint],
    chosen: ProfilePoint,
    min_width: int,
    qualifies: Callable[[ProfilePoint], bool],
    tune: Callable[[ProfilePoint], ProfilePoint],
    notes: list[str],
) -> ProfilePoint:
    """The smallest width whose fine-tuned network is within the budget.

    Widths below the refit choice are tried galloping up from ``min_width`` (the gaps
    doubling), then by bisection between the last width that failed and the first that
    passed: about 2 log₂ m fine-tunings.  Without one below, the refit choice itself, fine-
    tuned if that lowered its loss.
    """
    by_width = {p.width: p for p in points}
    tried: dict[int, ProfilePoint] = {}

    def ok(width: int) -> bool:
        if width not in tried:
            tried[width] = tune(by_width[width])
        return qualifies(tried[width])

    lo, hi, step = min_width, None, 1  # lo: the smallest width not yet known to fail
    while lo < chosen.width:
        width = min(lo + step - 1, chosen.width - 1)
        if ok(width):
            hi = width
            break
        lo, step = width + 1, step * 2
    if hi is not None:
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid + 1
        best = tried[hi]
    else:
        tuned = tried.get(chosen.width) or tune(chosen)
        tried[chosen.width] = tuned
        best = tuned if tuned.loss <= chosen.loss else chosen
    notes.append("fine-tuned ({}): {}".format(
        next(iter(tried.values())).finetuned,
        ", ".join(f"width {w} R = {p.loss:.6g}" for w, p in sorted(tried.items()))))
    return best


def compression_profile(
    net: TwoLayerNet,
    data: Dataset,
    *,
    max_loss_increase: float = 0.01,
    min_width: int = 1,
    finetune_steps: int = 0,
    finetune_optimizer: FinetuneOptimizer = "lbfgs",
    progress: bool = False,
) -> CompressionProfile:
    """The width–loss profile of ``net`` from its width m down to ``min_width``.

    First the exact reduction, one width at a time (no loss change); then greedy steps of
    one width, each the best merge or drop by the loss after a refit of the output layer,
    the one taken refitted exactly (see the module docstring for the maths).  The chosen
    width is the smallest whose data loss is at most R_before · (1 + ``max_loss_increase``)
    and, for classifiers (cross-entropy, binary cross-entropy), whose accuracy is at least
    accuracy_before · (1 − ``max_loss_increase``).

    Cost for the squared loss: the pre-activations X̃W̃ᵀ and features (two n × m arrays,
    O(nmD)) and their Gram matrix (O(nm²)) once; then per width O(n) for each merge
    candidate's feature column, one product O(nw) for their Gram rows, and a Cholesky solve
    of size w per candidate (O(w³)).  Measured on one core of a shared 2-core virtual
    machine: m = 256, d = 784 down to width 1 in 3–4 s at n = 10,000 and 2–3 s at n = 2,000.
    Cross-entropy on scikit-learn's digits (n = 1797, d = 64, K = 10), m = 20 to width 1:
    about 2.3 s.

    Args:
        net: the network (any dtype and device; the work is done in float64 there).
        data: the data; R is its data term, a ``data.penalty`` is ignored.
        max_loss_increase: δ ≥ 0, the relative loss budget (0.01: 1 %).
        min_width: the smallest width of the profile, in [1, m].
        finetune_steps: when > 0, networks of the profile are trained for this many steps
            (all parameters, on the data term, from their compressed values) and their loss
            measured again, and the chosen width becomes the smallest whose fine-tuned
            network is within the budget (searched galloping up from ``min_width``, then by
            bisection: about 2 log₂ m fine-tunings; the refit choice, fine-tuned if that
            lowered its loss, when no smaller width passes).  The profile's points stay as
            refitted; ``notes`` lists the widths tried.
        finetune_optimizer: ``"lbfgs"`` or ``"adam"``, for the fine-tuning.
        progress: show a progress bar (tqdm, on stderr).

    Returns:
        The :class:`CompressionProfile`.

    Raises:
        OptionError: δ negative, NaN or infinite; ``min_width`` not an integer in [1, m];
            ``finetune_steps`` < 0; an unknown fine-tuning optimizer.
        DataError: data whose d or K does not match the network.
    """
    _check_options(net, max_loss_increase, min_width, finetune_steps, finetune_optimizer)
    if data.input_dim != net.input_dim or data.output_dim != net.output_dim:
        raise DataError(
            f"the data have d={data.input_dim}, K={data.output_dim}; the network "
            f"d={net.input_dim}, K={net.output_dim}")
    delta, min_width = float(max_loss_increase), int(min_width)
    prob = Problem(net, data)
    state = State(prob, net)
    g0 = state.outputs()
    first = _point(state, g0, exact=True, build=lambda: net)
    points = [first]
    loss_before, accuracy_before = first.loss, first.accuracy
    floor = SEPARABLE_FLOOR * loss_before
    red = reduce(net.to(dtype=torch.float64) if net.dtype != torch.float64 else net,
                 check_rank=False)
    with tqdm(total=net.width - min_width, desc="compress", disable=not progress) as bar:
        for _ in exact_steps(state, red, min_width):
            points.append(_point(state, g0, exact=True))
            bar.update(1)
        if state.w > min_width:
            state.start_greedy()
        while state.w > min_width:
            greedy_step(state, floor)
            points.append(_point(state, g0, exact=False))
            bar.update(1)
            bar.set_postfix(R=f"{points[-1].loss:.4g}")
    eps = torch.finfo(torch.float64).eps
    zero_loss = prob.risk(torch.zeros_like(g0))
    limit = loss_before * (1.0 + delta) + 64 * eps * loss_before + 64 * eps**2 * zero_loss

    def qualifies(p: ProfilePoint) -> bool:
        if not p.loss <= limit:
            return False
        if accuracy_before is None or p.accuracy is None:
            return True
        return p.accuracy >= accuracy_before * (1.0 - delta) - 1e-12

    chosen = min((p for p in points if qualifies(p)), key=lambda p: p.width)
    notes: list[str] = []
    if finetune_steps > 0:
        chosen = _finetuned_choice(
            points, chosen, min_width, qualifies,
            lambda p: _finetune(p, prob, data, g0, int(finetune_steps), finetune_optimizer),
            notes,
        )
    return CompressionProfile(
        tuple(points), loss_before, delta, chosen, accuracy_before, tuple(notes))
