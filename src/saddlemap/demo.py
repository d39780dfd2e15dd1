"""The built-in demonstration: a Saad–Solla plateau, diagnosed, escaped and compressed.

The problem is the soft committee machine of Saad & Solla (docs/theory.md §9): an erf
teacher of width 2 with orthonormal input weights and output weights 1, d = 8, n = 400,
no label noise (so the optimum is R = 0), and a student of width 2 from a small
initialisation (scale 0.01) whose output weights are held at 1, trained by full-batch
gradient descent (step 0.05) under a :class:`~saddlemap.PlateauMonitor`.  Both student
neurons first learn the same direction: the loss stalls for a few hundred steps near
R ≈ 0.033, where the student computes what one neuron computes — a saddle of the width-1
network, split into two — before the symmetry breaks and R falls to 1e-7.

:func:`run_demo` then diagnoses the monitor's snapshot of that plateau (the stored state
of least ‖∇R‖ on it) with :func:`~saddlemap.diagnose`, all parameters free: the minimal
width (1 of 2), the cluster that keeps the output, the escape that takes R down by many
orders of magnitude, and the width-1 model that computes the same function within the loss
budget.  About 4 s on one core (the command, with its report and figures, about 10 s).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .diagnosis import Report, diagnose
from .errors import OptionError
from .monitor import Plateau, PlateauMonitor
from .problems import TeacherStudent, teacher_student
from .training import TrainResult, train
from .verdicts import Note, NoteCode

__all__ = ["Demo", "run_demo"]

#: The monitor settings of the demo (window, stall threshold, run length, width tolerance).
MONITOR = {"window": 50, "rtol": 1e-2, "min_length": 25, "width_tol": 0.2, "every": 5}


@dataclass(frozen=True, eq=False)
class Demo:
    """What :func:`run_demo` trained, saw and diagnosed.

    Attributes:
        problem: the teacher–student problem (teacher, data, initial student).
        training: the training run (history, final network).
        monitor: the plateau monitor that watched it (its history and plateaus).
        plateau: the plateau diagnosed (the first one the monitor found).
        report: the diagnosis of the plateau's snapshot network.
    """

    problem: TeacherStudent
    training: TrainResult
    monitor: PlateauMonitor
    plateau: Plateau
    report: Report

    @property
    def drop(self) -> float:
        """Orders of magnitude the escape takes R down: log₁₀(R_plateau / R_end).

        R_end is the loss at the end of the escape (floored at 1e-300), or, without one, the
        loss at the end of training.
        """
        esc = self.report.escape
        end = esc.end.loss if esc is not None and esc.end is not None else self.training.loss
        return math.log10(self.report.loss / max(end, 1e-300))

    def summary(self) -> str:
        """The training story in one line, then the report's three answers."""
        p = self.plateau
        line = (f"Training stalled from step {p.start} to {p.end} at R = {p.loss:.3g} "
                f"({p.verdict.value}); R = {self.training.loss:.2g} after "
                f"{self.training.steps} steps.")
        return line + "\n" + self.report.summary()


def _problem(seed: int) -> TeacherStudent:
    prob = teacher_student(2, 2, d=8, n=400, activation="erf", seed=seed, orthonormal=True,
                           init_scale=0.01)
    ones = torch.ones(2, 1, dtype=prob.student.dtype)
    return dataclasses.replace(prob, student=prob.student.replace(a=ones))


def run_demo(seed: int = 0, steps: int = 4000) -> Demo:
    """Train the soft committee machine under the plateau monitor, diagnose its plateau.

    Args:
        seed: the seed of the teacher, the data and the initial student.
        steps: the most gradient-descent steps (training stops at R ≤ 1e-7).

    Returns:
        The :class:`Demo`: problem, training run, monitor, plateau and report.

    Raises:
        OptionError: a negative seed or steps < 1, or a run in which the monitor found no
            plateau to diagnose.

    >>> demo = run_demo()
    >>> demo.plateau.verdict.value, demo.report.minimal_width, demo.drop > 6
    ('saddle of a narrower network', 1, True)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10**6:
        raise OptionError(f"steps must be an integer in [1, 1e6], got {steps!r}")
    prob = _problem(seed)
    monitor = PlateauMonitor(prob.data, **MONITOR)  # type: ignore[arg-type]
    run = train(prob.student, prob.data, optimizer="gd", lr=0.05, steps=steps, freeze=["a"],
                loss_tol=1e-7, callbacks=[monitor])
    plateaus = monitor.finish()
    if not plateaus or plateaus[0].snapshot is None:
        raise OptionError(f"seed {seed}: the monitor found no plateau in {run.steps} steps "
                          f"(R = {run.loss:.3g}); try another seed")
    plateau = plateaus[0]
    rep = diagnose(plateau.snapshot, prob.data, escape_steps=1000)
    note = (f"demo: soft committee machine (erf teacher of width 2 with orthonormal input "
            f"weights, d = 8, n = 400, no noise), student of width 2 with output weights "
            f"held at 1, gradient descent for {run.steps} steps; plateau from step "
            f"{plateau.start} to {plateau.end} at R = {plateau.loss:.4g} "
            f"({plateau.verdict.value}); the network diagnosed is the one at step "
            f"{plateau.snapshot_step} (the plateau's snapshot, least ‖∇R‖), with all "
            "parameters free")
    rep = dataclasses.replace(rep, notes=(Note(NoteCode.OTHER, note), *rep.notes))
    return Demo(prob, run, monitor, plateau, rep)
