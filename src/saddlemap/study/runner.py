"""Run a whole study into a store: the pending runs of a config, on an engine.

The runs themselves are :func:`~saddlemap.study.execution.execute`; the engines map it over
the pending specs and this module writes each outcome into the store as it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .config import ConfigError, StudyConfig, load_config
from .engines import make_engine
from .store import StudyStore

__all__ = ["StudyReport", "run_study"]

ENGINES = ("process", "serial", "ray")


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
