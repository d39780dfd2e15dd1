"""The built-in demonstration: a teacher–student run that stalls, diagnosed end to end.

A soft committee machine (erf, orthonormal teacher of width 2, d = 4, n = 400, label noise
0.05; docs/theory.md §9) is learned by a student of width 4 from a small initialisation with
full-batch gradient descent at a safe step, until the loss falls by less than 0.2 % over 200
steps.  The stalled point is then refined, classified, escaped and compressed by
:func:`~saddlemap.diagnose`.
"""

from __future__ import annotations

import dataclasses

from .diagnosis import Report, diagnose
from .problems import teacher_student
from .training import TrainState, train
from .verdicts import Note, NoteCode

__all__ = ["StallDetector", "run_demo"]


class StallDetector:
    """A training callback: stop when R fell by less than ``rtol`` · R over ``window`` steps."""

    def __init__(self, window: int = 200, rtol: float = 2e-3) -> None:
        self.window, self.rtol = window, rtol
        self.losses: list[float] = []

    def __call__(self, state: TrainState) -> bool:
        """Record the loss; True once training has stalled."""
        self.losses.append(state.loss)
        if len(self.losses) <= self.window:
            return False
        return self.losses[-self.window - 1] - state.loss <= self.rtol * state.loss


def run_demo(seed: int = 2, steps: int = 5000) -> Report:
    """Train the demo problem until it stalls, then diagnose it (about 10 s on 2 cores)."""
    prob = teacher_student(2, 4, d=4, n=400, activation="erf", seed=seed, orthonormal=True,
                           init_scale=0.05, noise=0.05)
    stall = StallDetector()
    run = train(prob.student, prob.data, optimizer="gd", steps=steps, callbacks=[stall])
    rep = diagnose(run.net, prob.data, escape_steps=1000)
    how = "stalled" if run.stop_reason == "callback" else f"stopped ({run.stop_reason})"
    note = (f"demo: erf teacher of width 2 (d = 4, n = 400, noise 0.05), student of width 4 "
            f"trained by gradient descent for {run.steps} steps; {how} at R = {run.loss:.6g}")
    return dataclasses.replace(rep, notes=(Note(NoteCode.OTHER, note), *rep.notes))
