"""The study database: an embedded SQLite file in WAL mode.

Tables:

* ``study``: one row per :func:`~saddlemap.study.runner.run_study` call: config JSON,
  saddlemap and torch versions, creation time.
* ``runs``: one row per finished run: ``run_id`` (primary key), spec JSON, status (``"ok"``
  or ``"failed"``), final loss, steps, seconds, error.
* ``plateaus``: the plateaus of the ``"ok"`` runs: run_id, index, start, end, duration,
  loss, width, verdict, kind.

A run's row and its plateau rows are written in one transaction, after the run completed,
so the database never holds a half-written run: a study killed at any moment (even by
SIGKILL) loses at most the runs in flight.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from .._version import __version__
from .config import RunSpec, StudyConfig
from .execution import Outcome

__all__ = ["PLATEAU_COLUMNS", "RUN_COLUMNS", "StudyStore"]

RUN_COLUMNS = ("run_id", "spec", "status", "final_loss", "steps", "seconds", "error")
PLATEAU_COLUMNS = (
    "run_id", "index", "start", "end", "duration", "loss", "width", "verdict", "kind",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    config TEXT NOT NULL,
    saddlemap_version TEXT NOT NULL,
    torch_version TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    final_loss REAL,
    steps INTEGER,
    seconds REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS plateaus (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    "index" INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    duration INTEGER NOT NULL,
    loss REAL NOT NULL,
    width INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    kind TEXT,
    PRIMARY KEY (run_id, "index")
);
"""


def _quoted(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


class StudyStore:
    """A connection to a study database; use it as a context manager.

    Args:
        path: the SQLite file (created with its tables if missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(_SCHEMA)

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def record_study(self, config: StudyConfig) -> None:
        """Add a ``study`` row: the config, the library versions and the time."""
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with self._transaction():
            self._conn.execute(
                "INSERT INTO study (config, saddlemap_version, torch_version, created) "
                "VALUES (?, ?, ?, ?)",
                (json.dumps(config.to_dict(), sort_keys=True), __version__,
                 str(torch.__version__), created),
            )

    def done_ids(self) -> set[str]:
        """Ids of the runs stored with status ``"ok"``."""
        rows = self._conn.execute("SELECT run_id FROM runs WHERE status = 'ok'")
        return {r[0] for r in rows}

    def pending(self, specs: Iterable[RunSpec]) -> list[RunSpec]:
        """The specs whose run is not stored as finished (failed runs count as pending)."""
        done = self.done_ids()
        return [s for s in specs if s.run_id not in done]

    def write_outcome(self, outcome: Outcome) -> None:
        """Store one run, its row and its plateau rows, in one transaction."""
        spec = outcome.spec
        rec = outcome.record
        row: tuple[Any, ...]
        if rec is None:
            row = (spec.run_id, spec.canonical_json(), "failed", None, None,
                   outcome.seconds, outcome.error)
        else:
            row = (spec.run_id, spec.canonical_json(), "ok", rec["final_loss"], rec["steps"],
                   outcome.seconds, None)
        plateaus = [
            (spec.run_id, i, p["start"], p["end"], p["duration"], p["loss"], p["width"],
             p["verdict"], p["kind"])
            for i, p in enumerate(rec["plateaus"] if rec is not None else [])
        ]
        with self._transaction():
            self._conn.execute("DELETE FROM plateaus WHERE run_id = ?", (spec.run_id,))
            self._conn.execute(
                f"INSERT OR REPLACE INTO runs ({_quoted(RUN_COLUMNS)}) VALUES (?,?,?,?,?,?,?)",
                row,
            )
            self._conn.executemany(
                f"INSERT INTO plateaus ({_quoted(PLATEAU_COLUMNS)}) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                plateaus,
            )

    def runs(self) -> list[dict[str, Any]]:
        """All run rows as dicts (``spec`` parsed), ordered by run_id."""
        cur = self._conn.execute(f"SELECT {_quoted(RUN_COLUMNS)} FROM runs ORDER BY run_id")
        out = []
        for r in cur:
            d = dict(zip(RUN_COLUMNS, r, strict=True))
            d["spec"] = json.loads(d["spec"])
            out.append(d)
        return out

    def plateaus(self) -> list[dict[str, Any]]:
        """All plateau rows as dicts, ordered by run_id and index."""
        cur = self._conn.execute(
            f'SELECT {_quoted(PLATEAU_COLUMNS)} FROM plateaus ORDER BY run_id, "index"'
        )
        return [dict(zip(PLATEAU_COLUMNS, r, strict=True)) for r in cur]

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on an exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
