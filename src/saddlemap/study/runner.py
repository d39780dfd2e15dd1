"""Run one teacher–student experiment, and a whole study into a store.

:func:`run_one` is pure: the same :class:`~saddlemap.study.config.RunSpec` always gives the
same record.  :func:`execute` wraps it for the engines (timing, errors caught) and is a
top-level function, so it pickles under the ``spawn`` start method.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, RunSpec, StudyConfig, load_config

__all__ = ["Outcome", "StudyReport", "execute", "run_one", "run_study"]

ENGINES = ("process", "serial", "ray")


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Build the teacher–student problem of ``spec``, train with a plateau monitor, report.

    Args:
        spec: the run.

    Returns:
        A JSON-serialisable record: ``run_id``, ``spec`` (dict), ``final_loss``, ``steps``
        and ``plateaus`` (a list of dicts with start, end, duration, loss, width, verdict,
        kind).
    """
    import torch

    from ..monitor import PlateauMonitor
    from ..problems import teacher_student
    from ..training import train

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
            "verdict": str(p.verdict),
            "kind": None if p.kind is None else str(p.kind),
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


@dataclass(frozen=True)
class StudyReport:
    """Counts of a :func:`run_study` call.

    Attributes:
        total: runs in the study.
        already_done: runs found finished in the store and skipped.
        run_now: runs executed by this call (failures included).
        failed: runs of this call that raised (stored with status ``"failed"``; they are
            retried by the next call).
    """

    total: int
    already_done: int
    run_now: int
    failed: int


def run_study(
    config: StudyConfig | str | Path,
    db_path: str | Path,
    *,
    engine: str = "process",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
) -> StudyReport:
    """Run every run of ``config`` not yet finished in the database at ``db_path``.

    Each finished run is written (run row and plateau rows) in one transaction by this
    process as soon as it arrives, so a study killed at any moment and started again
    repeats no finished run and loses none.

    Args:
        config: a :class:`StudyConfig` or the path of a TOML/JSON config file.
        db_path: the SQLite database (created if missing).
        engine: ``"process"`` (a process pool), ``"serial"`` (this process) or ``"ray"``.
        workers: worker processes for the process engine (default: all cores).
        address: Ray cluster address (default: a local Ray instance).
        progress: show a tqdm progress bar.

    Returns:
        The :class:`StudyReport`.

    Raises:
        ConfigError: a malformed config or an unknown engine.
    """
    from tqdm.auto import tqdm

    from .engines import make_engine
    from .store import StudyStore

    if not isinstance(config, StudyConfig):
        config = load_config(config)
    if engine not in ENGINES:
        raise ConfigError(f"engine: unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    specs = config.runs()
    failed = 0
    with StudyStore(db_path) as store:
        store.record_study(config)
        todo = store.pending(specs)
        if todo:
            runner = make_engine(engine, workers=workers, address=address)
            with tqdm(total=len(todo), disable=not progress, desc="study") as bar:
                for outcome in runner.map(todo):
                    store.write_outcome(outcome)
                    failed += outcome.record is None
                    bar.update()
    return StudyReport(len(specs), len(specs) - len(todo), len(todo), failed)
