"""Escape from a saddle: build the way down, check it, step off, and find where it leads.

``escape`` classifies the point (:func:`saddlemap.classify`), takes the best witness —
the negative-curvature direction of a strict saddle, or the escape curve of a non-strict one
(docs/theory.md §7.1: the loss falls by exactly ‖φ‖²/(2M) for the squared loss) — scans the loss
along it on both sides, steps to the lowest point found, trains from there and refines to the
next critical point, and reports the whole path.  A point with no second-order way down
(a local minimum, or undetermined) can be widened by the three-fold split of the Embedding
Principle (``widen=True``), which turns a critical point with some K_j ≠ 0 into a strict
saddle of the wider network (docs/theory.md §7.4).

>>> from saddlemap import Dataset, TwoLayerNet
>>> data = Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
>>> a, w = 0.610515537972, 1.433931221329
>>> out = escape(TwoLayerNet([2 * a, -a], [[w], [w]]), data, steps=200)
>>> out.escaped, out.loss_after_step < out.loss_before, out.method.value
(True, True, 'negative-curvature direction')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .analysis import Analysis, as_analysis
from .critical_points import CriticalPoint, find_critical_point
from .data import Dataset
from .descent import scan_loss
from .embedding import three_fold_split
from .network import TwoLayerNet
from .reduction import reduce
from .saddles import Classification, classify
from .tolerances import Tolerances
from .training import train
from .verdicts import EscapeMethod, Kind

__all__ = ["EscapeResult", "escape"]


@dataclass(frozen=True, eq=False)
class EscapeResult:
    """The way out of a saddle and where it led.

    Attributes:
        start: the classification of the starting point (kind, witness, evidence).
        method: the :class:`~saddlemap.EscapeMethod`.
        path_t: the step parameters scanned along the direction or curve.
        path_loss: R at each of them (the "down on one side, up on the other" picture).
        step: the parameter t taken.
        loss_before: R at the start.
        loss_after_step: R right after the step.
        end: the certificate of the critical point reached after training and refinement.
        end_width: the minimal width of the end point (its reduction).
        escaped: whether the end point has a strictly lower loss than the start.
        notes: what happened, in words.
    """

    start: Classification
    method: EscapeMethod
    path_t: np.ndarray
    path_loss: np.ndarray
    step: float
    loss_before: float
    loss_after_step: float
    end: CriticalPoint | None
    end_width: int | None
    escaped: bool
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """What the escape did, a few lines."""
        lines = [f"start: {self.start.kind.value}; escape by {self.method.value}"]
        if self.method is not EscapeMethod.NONE:
            lines.append(
                f"R: {self.loss_before:.10g} → {self.loss_after_step:.10g} after the step "
                f"(t = {self.step:.3g})"
            )
        if self.end is not None:
            lines.append(
                f"→ {self.end.verdict.value} at R = {self.end.loss:.10g}, minimal width "
                f"{self.end_width}"
            )
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def escape(
    net: TwoLayerNet | Analysis,
    data: Dataset | None = None,
    *,
    tolerances: Tolerances | None = None,
    widen: bool = False,
    optimizer: str = "lbfgs",
    steps: int = 2000,
    refine: bool = True,
) -> EscapeResult:
    """Escape from the critical point ``net`` and follow training to the next one.

    Args:
        net: a critical point (a strict or non-strict saddle, or any point: the result says
            what it is), or an :class:`~saddlemap.Analysis` of one (its classification is
            reused).
        data: the data.
        tolerances: the analysis tolerances.
        widen: when there is no second-order way down, apply the three-fold split and
            escape in the wider network.
        optimizer: how to train after the step (``"lbfgs"``, ``"gd"``, ``"adam"``).
        steps: training steps after the step.
        refine: refine the trained point to a critical point and certify it.
    """
    an = as_analysis(net, data, tolerances)
    start = classify(an)
    net, data = an.net, an.data
    before = an.loss
    scale = 0.5 * max(1.0, float(net.flatten().abs().max()))
    if start.kind is Kind.STRICT_SADDLE and start.direction is not None:
        theta, v = net.flatten(), start.direction

        def along(t: float) -> TwoLayerNet:
            return net.unflatten(theta + t * v)

        method, point = EscapeMethod.NEGATIVE_CURVATURE, along
    elif start.kind is Kind.NON_STRICT_SADDLE and start.curve is not None:
        method, point = EscapeMethod.ESCAPE_CURVE, start.curve.point
    elif widen and start.kind in (Kind.LOCAL_MINIMUM, Kind.UNDETERMINED):
        return _escape_widened(an, start, optimizer, steps, refine)
    else:
        why = {
            Kind.NOT_CRITICAL: "not critical: keep training",
            Kind.GLOBAL_MINIMUM: "a global minimum: nothing lowers R",
        }.get(start.kind, "no second-order way down; try widen=True")
        return EscapeResult(start, EscapeMethod.NONE, np.zeros(0), np.zeros(0), 0.0, before,
                            before, None, None, False, (why,))
    ts, losses = scan_loss(point, data, scale)
    best = int(np.argmin(losses))
    if losses[best] >= before:
        return EscapeResult(start, method, ts, losses, 0.0, before, before, None, None, False,
                            ("no decrease found along the witness at the scanned steps",))
    stepped = point(float(ts[best]))
    end, width, notes = _follow(stepped, data, optimizer, steps, refine, an.tolerances)
    escaped = end is not None and end.loss < before
    return EscapeResult(start, method, ts, losses, float(ts[best]), before,
                        float(losses[best]), end, width, escaped, tuple(notes))


def _follow(
    net: TwoLayerNet, data: Dataset, optimizer: str, steps: int, refine: bool,
    tolerances: Tolerances,
) -> tuple[CriticalPoint | None, int | None, list[str]]:
    run = train(net, data, optimizer=optimizer, steps=steps, grad_tol=1e-9)  # type: ignore[arg-type]
    notes = [f"trained {run.steps} {optimizer} steps to R = {run.loss:.10g}"]
    if not refine:
        return None, None, notes
    end = find_critical_point(run.net, data, tolerances=tolerances)
    width = reduce(end.net, data.X, tolerances=tolerances).width
    if not end.converged:
        notes.append("the trained point did not refine to a critical point: " + end.verdict.value)
    return end, width, notes


def _escape_widened(
    an: Analysis, start: Classification, optimizer: str, steps: int, refine: bool
) -> EscapeResult:
    wide = three_fold_split(an.net).net
    inner = escape(wide, an.data, tolerances=an.tolerances, widen=False, optimizer=optimizer,
                   steps=steps, refine=refine)
    notes = (f"three-fold split to width {wide.width}: {inner.start.kind.value}", *inner.notes)
    return EscapeResult(start, EscapeMethod.THREE_FOLD_SPLIT, inner.path_t, inner.path_loss,
                        inner.step, an.loss, inner.loss_after_step, inner.end, inner.end_width,
                        inner.escaped, notes)
