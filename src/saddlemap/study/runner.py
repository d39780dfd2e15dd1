"""Run a whole study into a store: the pending runs of a config, on an engine.

The runs themselves are :func:`~saddlemap.study.execution.execute`; the engines map it over
the pending specs, which this module claims one at a time in the store (a lease per run), and
this module writes each outcome into the store as it arrives.  Several runners, on one or
several machines, can work on one database at once: each claims the runs nobody holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .config import ConfigError, RunSpec, StudyConfig, load_config
from .engines import Engine, check_workers, make_engine
from .store import Owner, StudyStore

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
        by_others: runs left to other runners on the same database: running there when
            this call ended, or finished (or failed) there during this call.
    """

    total: int
    already_done: int
    run_now: int
    failed: int
    by_others: int = 0


def _config(config: StudyConfig | str | Path, max_runs: int | None) -> StudyConfig:
    if not isinstance(config, StudyConfig):
        return load_config(config, max_runs=max_runs)
    if max_runs is not None:
        return StudyConfig.from_dict(config.to_dict(), max_runs=max_runs)
    return config


def _claimed(store: StudyStore, owner: Owner, specs: Sequence[RunSpec]) -> Iterator[RunSpec]:
    """The specs ``owner`` manages to claim, claimed one by one as the engine asks."""
    for spec in specs:
        if store.claim(spec, owner):
            yield spec


def _run_claimed(store: StudyStore, runner: Engine, todo: Sequence[RunSpec],
                 progress: bool) -> tuple[int, int]:
    """Claim and run ``todo`` on ``runner``; the runs executed and the failures."""
    owner = Owner.new()
    run_now = failed = 0
    with store.leases(owner), tqdm(total=len(todo), disable=not progress, desc="study") as bar:
        for outcome in runner.map(_claimed(store, owner, todo)):
            store.write_outcome(outcome, owner)
            run_now += 1
            failed += outcome.record is None
            bar.update()
    return run_now, failed


def run_study(
    config: StudyConfig | str | Path,
    db_path: str | Path,
    *,
    engine: str = "process",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    max_runs: int | None = None,
) -> StudyReport:
    """Run every run of ``config`` not yet finished in the database at ``db_path``.

    Each run is claimed in the database (a lease) just before it starts, and each finished
    run is written (run row and plateau rows) in one transaction by this process as soon as
    it arrives, so a study killed at any moment and started again repeats no finished run
    and loses none, and runners started together on one database split the runs.

    Args:
        config: a :class:`StudyConfig` or the path of a TOML/JSON config file.
        db_path: the SQLite database (created if missing; checked before use).
        engine: ``"process"`` (a process pool), ``"serial"`` (this process) or ``"ray"``.
        workers: worker processes for the process engine (default: all cores).
        address: Ray cluster address (default: a local Ray instance).
        progress: show a tqdm progress bar.
        max_runs: the most runs the study may hold (default: the config's ``max_runs``,
            else 100,000); a larger grid is refused before it is expanded.

    Returns:
        The :class:`StudyReport`.

    Raises:
        ConfigError: a malformed config, too many runs, an unknown engine, or ``workers``
            out of range; raised before any work.
        StoreError: a database that is not a study database or fails its checks.
    """
    config = _config(config, max_runs)
    if engine not in ENGINES:
        raise ConfigError(f"engine: unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    check_workers(workers)
    specs = config.runs()
    with StudyStore(db_path) as store:
        store.record_study(config)
        todo = store.pending(specs)
        run_now = failed = 0
        if todo:
            runner = make_engine(engine, workers=workers, address=address)
            run_now, failed = _run_claimed(store, runner, todo, progress)
    return StudyReport(len(specs), len(specs) - len(todo), run_now, failed, len(todo) - run_now)
