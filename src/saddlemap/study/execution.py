"""One teacher–student run of a study: build the problem, train it with a plateau monitor.

:func:`run_one` is pure: the same :class:`~saddlemap.study.config.RunSpec` always gives the
same record.  :func:`execute` wraps it for the engines (timing, errors caught) and is a
top-level function, so it pickles under the ``spawn`` start method.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from ..monitor import PlateauMonitor
from ..problems import teacher_student
from ..training import train
from .config import RunSpec

__all__ = ["Outcome", "execute", "run_one"]


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Build the teacher–student problem of ``spec``, train with a plateau monitor, report.

    Args:
        spec: the run.

    Returns:
        A JSON-serialisable record: ``run_id``, ``spec`` (dict), ``final_loss``, ``steps``
        and ``plateaus`` (a list of dicts with start, end, duration, loss, width, verdict,
        kind).
    """
    prob = teacher_student(
        teacher_width=spec.teacher_width,
        width=spec.width,
        d=spec.d,
        n=spec.n,
        activation=spec.activation,
        seed=spec.seed,
        noise=spec.noise,
        init_scale=spec.init_scale,
        orthonormal=spec.committee,
    )
    student = prob.student
    if spec.committee:  # Saad & Solla: output weights fixed at 1
        student = student.replace(a=torch.ones_like(student.a))
    monitor = PlateauMonitor(
        prob.data, window=spec.window, rtol=spec.rtol, min_length=spec.min_length
    )
    result = train(
        student,
        prob.data,
        optimizer=spec.optimizer,  # type: ignore[arg-type]
        lr=spec.lr,
        steps=spec.steps,
        callbacks=[monitor],
        seed=spec.seed,
        freeze=("a",) if spec.committee else (),
    )
    plateaus = [
        {
            "start": int(p.start),
            "end": int(p.end),
            "duration": int(p.duration),
            "loss": float(p.loss),
            "width": int(p.width),
            "verdict": p.verdict.value,
            "kind": None if p.kind is None else p.kind.value,
        }
        for p in monitor.finish()
    ]
    return {
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "final_loss": float(result.loss),
        "steps": int(result.steps),
        "plateaus": plateaus,
    }


@dataclass(frozen=True)
class Outcome:
    """What an engine hands back for one run.

    Attributes:
        spec: the run.
        record: the :func:`run_one` record, or None if the run failed.
        seconds: wall-clock seconds of the run.
        error: a one-line error message if the run failed, else None.
    """

    spec: RunSpec
    record: dict[str, Any] | None
    seconds: float
    error: str | None = None


def execute(spec: RunSpec) -> Outcome:
    """Run ``spec`` with :func:`run_one`, timing it and catching any exception."""
    start = time.perf_counter()
    try:
        record = run_one(spec)
    except Exception as exc:
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return Outcome(spec, None, time.perf_counter() - start, last.splitlines()[0])
    return Outcome(spec, record, time.perf_counter() - start)
