"""The study database: an embedded SQLite file in WAL mode, checked before it is used.

Tables (schema version :data:`SCHEMA_VERSION`):

* ``meta``: ``schema_version`` and ``application`` records.
* ``study``: one row per distinct study config run into the database (config JSON,
  saddlemap and torch versions, time of the first run); running or resuming the same config
  again adds no row.
* ``runs``: one row per finished run: ``run_id`` (primary key), spec JSON, status (``"ok"``
  or ``"failed"``), final loss, steps, seconds, error.
* ``plateaus``: the plateaus of the ``"ok"`` runs: run_id, index, start, end, duration,
  loss, width, verdict, kind (:data:`PLATEAU_COLUMNS`), then the details of the
  refinement (:data:`PLATEAU_DETAIL_COLUMNS`, NULL in rows of earlier versions):
  snapshot_step, distance, grad_norm, lambda_min and the inertia n_negative, n_zero,
  n_positive (of the trained block's spectrum, or the full Hessian's when nothing is
  frozen), accepted (0/1), max_path_loss, and as JSON text channel (a neuron pair or
  null), clusters and null_neurons (lists of lists of neuron indices: the reduction of the
  refined point), warnings (note codes) and frozen (block names); then, for minibatch runs
  (:data:`PLATEAU_NOISE_COLUMNS`, version 4; NULL otherwise), batch_size and the noise
  measure at the snapshot: noise_lambda_min (λ_min) and noise_along_escape (vᵀΣ_B v).
* ``points``: the parameter points of each plateau, ``which`` = ``"snapshot"`` (where
  the refinement started) or ``"refined"``: the activation name, the layout (width,
  input_dim, output_dim, hidden_bias, output_bias) and ``params``, the flat parameters as
  little-endian float64 bytes (:meth:`StudyStore.point` rebuilds the network).
* ``histories``: one row per ``"ok"`` run: r0 (the first loss), the plateau rules as
  JSON, and the loss history thinned to at most 2,000 points (``points``) as blobs:
  ``step`` (little-endian int64), ``loss`` and ``grad_norm`` (little-endian float64).
* ``leases``: the runs claimed by a runner now (owner, host, process id, expiry) and the
  time of the last failed attempt of a run.

A run's row and its plateau, point and history rows are written in one transaction, after
the run completed, so the database never holds a half-written run: a study killed at any
moment (even by SIGKILL) loses at most the runs in flight.

**Checks on open.**  Before anything is written, :class:`StudyStore` checks that an existing
file is an SQLite database (its header), runs ``PRAGMA quick_check`` on a read-only
connection, reads the schema and the types of the stored values: a file with other tables (a
foreign database), tables of other columns, triggers, a schema version newer than this
saddlemap's, or rows of values of the wrong type, is refused with a one-line
:class:`~saddlemap.errors.StoreError` naming the file and the problem, and is left
untouched.  A database of an earlier layout (version 1: no ``meta`` table; version 2: no
``points`` or ``histories`` and fewer plateau columns) is migrated, in one transaction.

**Leases.**  A runner claims each run just before it starts it, in a ``BEGIN IMMEDIATE``
transaction: it writes a lease row (owner, host, pid, expiry :data:`LEASE_SECONDS` ahead,
renewed by a heartbeat thread), so concurrent runners on one database split the runs.  A
lease is stale once it expires or, on the same host, once its process is gone: a later
runner then takes the run over (a killed study resumes at once).  Runs are pure functions of
their spec, so a run taken over from a runner that was only slow gives the same row.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..errors import OptionError, SaddlemapError, StoreError
from ..network import ParamLayout, TwoLayerNet
from .config import RunSpec, StudyConfig
from .execution import Outcome

__all__ = [
    "HISTORY_COLUMNS",
    "LEASE_SECONDS",
    "PLATEAU_ALL_COLUMNS",
    "PLATEAU_COLUMNS",
    "PLATEAU_DETAIL_COLUMNS",
    "PLATEAU_NOISE_COLUMNS",
    "POINT_COLUMNS",
    "POINT_KINDS",
    "RUN_COLUMNS",
    "SCHEMA_VERSION",
    "Owner",
    "StudyStore",
]

#: The layout this saddlemap writes; versions 1 (no ``meta`` table), 2 (no points or
#: histories) and 3 (no noise columns) are migrated on open.
SCHEMA_VERSION = 4
#: Seconds a lease lasts without a heartbeat.
LEASE_SECONDS = 120.0
#: Seconds between two heartbeats of a runner (renewals of its leases).
HEARTBEAT_SECONDS = 30.0

RUN_COLUMNS = ("run_id", "spec", "status", "final_loss", "steps", "seconds", "error")
#: The plateau columns of every schema version (the summary and its exports read these).
PLATEAU_COLUMNS = (
    "run_id", "index", "start", "end", "duration", "loss", "width", "verdict", "kind",
)
#: The plateau columns version 3 added: NULL in rows stored by earlier versions.
PLATEAU_DETAIL_COLUMNS = (
    "snapshot_step", "distance", "grad_norm", "lambda_min", "n_negative", "n_zero",
    "n_positive", "accepted", "max_path_loss", "channel", "clusters", "null_neurons",
    "warnings", "frozen",
)
#: The plateau columns version 4 added (minibatch runs; NULL for full-batch runs and rows of
#: earlier versions): B, and λ_min and vᵀΣ_B v of the noise measure at the snapshot.
PLATEAU_NOISE_COLUMNS = ("batch_size", "noise_lambda_min", "noise_along_escape")
#: Every column of the ``plateaus`` table, in order.
PLATEAU_ALL_COLUMNS = PLATEAU_COLUMNS + PLATEAU_DETAIL_COLUMNS + PLATEAU_NOISE_COLUMNS
#: Detail columns holding JSON text (lists, or a pair for ``channel``).
_JSON_COLUMNS = ("channel", "clusters", "null_neurons", "warnings", "frozen")
POINT_COLUMNS = (
    "run_id", "index", "which", "activation", "width", "input_dim", "output_dim",
    "hidden_bias", "output_bias", "params",
)
HISTORY_COLUMNS = ("run_id", "r0", "rules", "points", "step", "loss", "grad_norm")
LEASE_COLUMNS = ("run_id", "owner", "host", "pid", "expires", "ended")
#: The stored parameter points of a plateau.
POINT_KINDS = ("snapshot", "refined")
_SQLITE_MAGIC = b"SQLite format 3\x00"

_TABLES_V1: dict[str, tuple[str, ...]] = {
    "study": ("id", "config", "saddlemap_version", "torch_version", "created"),
    "runs": RUN_COLUMNS,
    "plateaus": PLATEAU_COLUMNS,
}
_TABLES_V2 = {**_TABLES_V1, "meta": ("key", "value"), "leases": LEASE_COLUMNS}
_TABLES: dict[int, dict[str, tuple[str, ...]]] = {
    1: _TABLES_V1,
    2: _TABLES_V2,
    3: {**_TABLES_V2, "plateaus": PLATEAU_COLUMNS + PLATEAU_DETAIL_COLUMNS,
        "points": POINT_COLUMNS, "histories": HISTORY_COLUMNS},
}
_TABLES[4] = {**_TABLES[3], "plateaus": PLATEAU_ALL_COLUMNS}

_CREATE_V1 = (
    """CREATE TABLE study (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        config TEXT NOT NULL,
        saddlemap_version TEXT NOT NULL,
        torch_version TEXT NOT NULL,
        created TEXT NOT NULL
    )""",
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        final_loss REAL,
        steps INTEGER,
        seconds REAL,
        error TEXT
    )""",
    """CREATE TABLE plateaus (
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
    )""",
)
_MIGRATE_1_TO_2 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE leases (
        run_id TEXT PRIMARY KEY,
        owner TEXT,
        host TEXT,
        pid INTEGER,
        expires REAL,
        ended REAL
    )""",
    # one study row per config: keep the first of the rows version 1 added on every call
    "DELETE FROM study WHERE id NOT IN (SELECT min(id) FROM study GROUP BY config)",
    "CREATE UNIQUE INDEX study_config ON study(config)",
    "INSERT INTO meta (key, value) VALUES ('application', 'saddlemap study')",
    "INSERT INTO meta (key, value) VALUES ('schema_version', '2')",
)
_DETAIL_TYPES = {
    "snapshot_step": "INTEGER", "distance": "REAL", "grad_norm": "REAL", "lambda_min": "REAL",
    "n_negative": "INTEGER", "n_zero": "INTEGER", "n_positive": "INTEGER",
    "accepted": "INTEGER", "max_path_loss": "REAL", "channel": "TEXT", "clusters": "TEXT",
    "null_neurons": "TEXT", "warnings": "TEXT", "frozen": "TEXT",
}
_MIGRATE_2_TO_3 = (
    # nullable columns, appended: the rows of versions 1 and 2 stay valid as they are
    *(f'ALTER TABLE plateaus ADD COLUMN "{c}" {_DETAIL_TYPES[c]}'
      for c in PLATEAU_DETAIL_COLUMNS),
    """CREATE TABLE points (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        "index" INTEGER NOT NULL,
        which TEXT NOT NULL,
        activation TEXT NOT NULL,
        width INTEGER NOT NULL,
        input_dim INTEGER NOT NULL,
        output_dim INTEGER NOT NULL,
        hidden_bias INTEGER NOT NULL,
        output_bias INTEGER NOT NULL,
        params BLOB NOT NULL,
        PRIMARY KEY (run_id, "index", which)
    )""",
    """CREATE TABLE histories (
        run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
        r0 REAL,
        rules TEXT NOT NULL,
        points INTEGER NOT NULL,
        step BLOB NOT NULL,
        loss BLOB NOT NULL,
        grad_norm BLOB NOT NULL
    )""",
    "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
)
_MIGRATE_3_TO_4 = (
    'ALTER TABLE plateaus ADD COLUMN "batch_size" INTEGER',
    'ALTER TABLE plateaus ADD COLUMN "noise_lambda_min" REAL',
    'ALTER TABLE plateaus ADD COLUMN "noise_along_escape" REAL',
    "UPDATE meta SET value = '4' WHERE key = 'schema_version'",
)


def _quoted(columns: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


# ---------------------------------------------------------------------------- checks


def _check_file(path: Path, create: bool) -> bool:
    """Whether ``path`` is a database to create; refuse what is not an SQLite file."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if not create:
            raise StoreError(f"{path}: no such study database") from None
        return True
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the study database: {_one_line(exc)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"{path}: not a regular file, so not a study database")
    if info.st_size == 0:
        if not create:
            raise StoreError(f"{path}: an empty file, not a study database")
        return True
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the study database: {_one_line(exc)}") from None
    if not header.startswith(_SQLITE_MAGIC):
        raise StoreError(f"{path}: not an SQLite database (no SQLite header); left untouched")
    if len(header) < 100:
        raise StoreError(f"{path}: a truncated SQLite database ({len(header)} bytes)")
    return False


def _read_only(path: Path) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """``PRAGMA quick_check``: the b-trees, pages and records of the whole file."""
    rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    if rows != [("ok",)]:
        detail = _one_line(Exception(rows[0][0])) if rows else "no answer"
        raise StoreError(f"{path}: damaged database: {detail}; left untouched")


def _columns(conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
    rows = conn.execute("SELECT name FROM pragma_table_info(?)", (table,))
    return tuple(r[0] for r in rows)


def _names(names: Iterable[str]) -> str:
    shown = sorted(names)
    text = ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else "")
    return _one_line(Exception(text))


def _stored_version(conn: sqlite3.Connection, path: Path) -> int:
    try:
        meta: dict[str, Any] = dict(conn.execute("SELECT key, value FROM meta"))
        return int(meta["schema_version"])
    except (KeyError, TypeError, ValueError, sqlite3.Error):
        raise StoreError(f"{path}: damaged study database: no schema version") from None


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of the database (0: empty); refuse anything that is not a study."""
    objects = conn.execute(
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall()
    tables = {name for kind, name in objects if kind == "table"}
    triggers = {name for kind, name in objects if kind == "trigger"}
    if not tables and not triggers:
        return 0
    if triggers:
        raise StoreError(f"{path}: not a saddlemap study database (triggers {_names(triggers)})")
    if "meta" in tables and _columns(conn, "meta") == _TABLES[2]["meta"]:
        version = _stored_version(conn, path)
    elif not tables & set(_TABLES_V1):
        raise StoreError(
            f"{path}: not a saddlemap study database (it holds tables {_names(tables)})"
        )
    else:
        version = 1
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: study database schema version {version} is newer than this saddlemap "
            f"reads ({SCHEMA_VERSION}); upgrade saddlemap"
        )
    if version not in _TABLES:
        raise StoreError(f"{path}: damaged study database: schema version {version}")
    _check_tables(conn, path, tables, _TABLES[version])
    return version


def _check_tables(conn: sqlite3.Connection, path: Path, tables: set[str],
                  expected: Mapping[str, tuple[str, ...]]) -> None:
    for table, columns in expected.items():
        if table not in tables:
            raise StoreError(
                f"{path}: not a saddlemap study database (no table {table}; it holds tables "
                f"{_names(tables)})"
            )
        found = _columns(conn, table)
        if found != columns:
            raise StoreError(
                f"{path}: not a saddlemap study database (table {table} has columns "
                f"{_names(found)})"
            )


#: Rows whose values a summary cannot read: a wrong status or a value of the wrong type.
_ODD_VALUES = {
    "runs": "status NOT IN ('ok', 'failed') OR typeof(spec) != 'text'"
            " OR typeof(final_loss) NOT IN ('real', 'integer', 'null')"
            " OR typeof(steps) NOT IN ('integer', 'null')"
            " OR typeof(seconds) NOT IN ('real', 'integer', 'null')",
    "plateaus": "typeof(\"index\") != 'integer' OR typeof(start) != 'integer'"
                " OR typeof(\"end\") != 'integer' OR typeof(duration) != 'integer'"
                " OR typeof(width) != 'integer' OR typeof(loss) NOT IN ('real', 'integer')"
                " OR typeof(verdict) != 'text'",
}
_NUMBER_OR_NULL = "('real', 'integer', 'null')"
#: The checks of the tables and columns version 3 added; a point's blob must hold exactly
#: its layout's parameters, a history's blobs ``points`` values each (8 bytes a value).
_ODD_VALUES_V3 = {
    "plateaus": " OR ".join(
        [f"typeof({c}) NOT IN ('integer', 'null')"
         for c in ("snapshot_step", "n_negative", "n_zero", "n_positive", "accepted")]
        + [f"typeof({c}) NOT IN {_NUMBER_OR_NULL}"
           for c in ("distance", "grad_norm", "lambda_min", "max_path_loss")]
        + [f"typeof({c}) NOT IN ('text', 'null')" for c in _JSON_COLUMNS]
        + ["accepted NOT IN (0, 1)"]
    ),
    "points": "typeof(\"index\") != 'integer' OR which NOT IN ('snapshot', 'refined')"
              " OR typeof(activation) != 'text' OR typeof(width) != 'integer'"
              " OR typeof(input_dim) != 'integer' OR typeof(output_dim) != 'integer'"
              " OR hidden_bias NOT IN (0, 1) OR output_bias NOT IN (0, 1)"
              " OR typeof(hidden_bias) != 'integer' OR typeof(output_bias) != 'integer'"
              " OR width < 1 OR input_dim < 1 OR output_dim < 1 OR typeof(params) != 'blob'"
              " OR length(params) != 8 * (width * (output_dim + input_dim + hidden_bias)"
              " + output_dim * output_bias)",
    "histories": f"typeof(r0) NOT IN {_NUMBER_OR_NULL} OR typeof(rules) != 'text'"
                 " OR typeof(points) != 'integer' OR typeof(step) != 'blob'"
                 " OR typeof(loss) != 'blob' OR typeof(grad_norm) != 'blob'"
                 " OR length(step) != 8 * points OR length(loss) != 8 * points"
                 " OR length(grad_norm) != 8 * points",
}


#: The checks of the noise columns of version 4.
_ODD_VALUES_V4 = {
    "plateaus": "typeof(batch_size) NOT IN ('integer', 'null') OR batch_size < 1"
                f" OR typeof(noise_lambda_min) NOT IN {_NUMBER_OR_NULL}"
                f" OR typeof(noise_along_escape) NOT IN {_NUMBER_OR_NULL}",
}


def _check_values(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Refuse rows holding values of the wrong type (the tables of schema ``version``)."""
    checks = [*_ODD_VALUES.items(), *(_ODD_VALUES_V3.items() if version >= 3 else ()),
              *(_ODD_VALUES_V4.items() if version >= 4 else ())]
    for table, condition in checks:
        odd = conn.execute(f"SELECT count(*) FROM {table} WHERE {condition}").fetchone()[0]
        if odd:
            raise StoreError(f"{path}: damaged study database: {odd} row(s) of {table} hold "
                             "values of the wrong type; left untouched")


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _check_existing(path: Path) -> None:
    """Check an existing file on a read-only connection: integrity, then schema."""
    before = {s: _sibling(path, s).exists() for s in ("-wal", "-shm")}
    try:
        with contextlib.closing(_read_only(path)) as conn:
            _quick_check(conn, path)
            version = _schema_version(conn, path)
            if version:
                _check_values(conn, path, version)
    except sqlite3.OperationalError as exc:  # locked, or cannot be opened
        _drop_new_siblings(path, before)
        raise StoreError(f"{path}: cannot read the study database: {_one_line(exc)}") \
            from None
    except sqlite3.Error as exc:
        _drop_new_siblings(path, before)
        raise StoreError(f"{path}: damaged database ({_one_line(exc)}); left untouched") \
            from None
    except StoreError:
        _drop_new_siblings(path, before)
        raise


def _drop_new_siblings(path: Path, before: Mapping[str, bool]) -> None:
    """Remove the empty -wal and -shm files the read-only check made beside a bad file."""
    wal = _sibling(path, "-wal")
    with contextlib.suppress(OSError):
        if not before["-wal"] and wal.exists() and wal.stat().st_size == 0:
            wal.unlink()
            if not before["-shm"]:
                _sibling(path, "-shm").unlink()


# ---------------------------------------------------------------------------- leases


@dataclass(frozen=True)
class Owner:
    """A runner that claims runs: its host, process id, a unique token and its start time.

    Attributes:
        host: the host name.
        pid: the process id.
        token: unique to this runner.
        since: when it started (seconds since the epoch); a run that failed after this
            time is not retried by it.
    """

    host: str
    pid: int
    token: str
    since: float

    @classmethod
    def new(cls) -> Owner:
        """An owner for a runner of this process, starting now."""
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex, time.time())


def _alive(host: str | None, pid: int | None) -> bool:
    """Whether a lease holder may be running: only a process of this host can be seen dead."""
    if host != socket.gethostname() or os.name != "posix" or not isinstance(pid, int) or pid < 1:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"  # a zombie is dead
    return True


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _claimable(lease: tuple[Any, ...], owner: Owner, now: float) -> bool:
    """Whether a run with this lease row may be claimed (odd values count as stale)."""
    holder, host, pid, expires, ended = lease
    if holder is None:  # released after a failed attempt: retried unless it failed just now
        return not _is_time(ended) or ended < owner.since
    if not _is_time(expires) or not now <= expires <= now + 2 * LEASE_SECONDS:
        return True  # expired, or an expiry no runner writes
    return not _alive(host, pid)


class _Heartbeat:
    """A thread renewing the leases of an owner every :data:`HEARTBEAT_SECONDS`."""

    def __init__(self, path: Path, owner: Owner) -> None:
        self._path = path
        self._owner = owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="saddlemap-lease-heartbeat")

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None)
        try:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                with contextlib.suppress(sqlite3.Error):  # the next beat tries again
                    conn.execute("UPDATE leases SET expires = ? WHERE owner = ?",
                                 (time.time() + LEASE_SECONDS, self._owner.token))
        finally:
            conn.close()


# ---------------------------------------------------------------------------- rows


def _optional(value: Any, kind: type) -> Any:
    return None if value is None else kind(value)


def _as_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _plateau_values(p: Mapping[str, Any]) -> tuple[Any, ...]:
    """The values of a plateau record for the plateau columns after run_id and index."""
    core = (p["start"], p["end"], p["duration"], p["loss"], p["width"], p["verdict"],
            p["kind"])
    numbers = {"snapshot_step": int, "distance": float, "grad_norm": float,
               "lambda_min": float, "n_negative": int, "n_zero": int, "n_positive": int,
               "accepted": int, "max_path_loss": float}
    detail = tuple(_optional(p.get(c), numbers[c]) if c in numbers else _as_json(p.get(c))
                   for c in PLATEAU_DETAIL_COLUMNS)
    noise = (_optional(p.get("batch_size"), int), _optional(p.get("noise_lambda_min"), float),
             _optional(p.get("noise_along_escape"), float))
    return core + detail + noise


def _history_row(path: Path, run_id: str, rec: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The ``histories`` row of a run record, or None for a record without a history."""
    history = rec.get("history")
    if history is None:
        return None
    step = np.ascontiguousarray(history["step"], dtype="<i8").reshape(-1)
    values = np.ascontiguousarray(history["loss"], dtype="<f8").reshape(-1)
    grad = np.ascontiguousarray(history["grad_norm"], dtype="<f8").reshape(-1)
    if not step.size == values.size == grad.size:
        raise StoreError(f"{path}: run {run_id}: history arrays of different lengths "
                         f"({step.size}, {values.size}, {grad.size})")
    return (run_id, _optional(rec.get("r0"), float),
            json.dumps(rec.get("rules") or {}, sort_keys=True), int(step.size),
            step.tobytes(), values.tobytes(), grad.tobytes())


# ---------------------------------------------------------------------------- the store


class StudyStore:
    """A connection to a study database; use it as a context manager.

    Args:
        path: the SQLite file; created with its tables if missing (or empty) and ``create``.
        create: whether a missing file may be created (False for summaries and exports).

    Raises:
        StoreError: the file is not an SQLite database, fails ``PRAGMA quick_check``, holds
            another schema or a newer schema version, cannot be opened, or is missing and
            ``create`` is False.  Nothing is written into a file that fails a check.
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not _check_file(self.path, create):
            _check_existing(self.path)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the study database: "
                             f"{_one_line(exc)}") from None
        try:
            self._prepare()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"{self.path}: cannot use the study database: "
                             f"{_one_line(exc)}") from None
        except BaseException:
            self._conn.close()
            raise

    def _prepare(self) -> None:
        """WAL mode, then create or migrate the tables under the write lock."""
        self._conn.execute("PRAGMA trusted_schema=OFF")
        if self._conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._transaction():
            version = _schema_version(self._conn, self.path)  # again, under the lock
            for statement in (_CREATE_V1 if version == 0 else ()):
                self._conn.execute(statement)
            for statement in (_MIGRATE_1_TO_2 if version < 2 else ()):
                self._conn.execute(statement)
            for statement in (_MIGRATE_2_TO_3 if version < 3 else ()):
                self._conn.execute(statement)
            for statement in (_MIGRATE_3_TO_4 if version < 4 else ()):
                self._conn.execute(statement)

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

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        return _stored_version(self._conn, self.path)

    def record_study(self, config: StudyConfig) -> None:
        """Add a ``study`` row for ``config`` unless the database already holds one.

        The row holds the config (without ``max_runs``, a safety limit), the library
        versions and the time.
        """
        document = config.to_dict()
        document.pop("max_runs", None)
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with self._transaction():
            self._conn.execute(
                "INSERT OR IGNORE INTO study (config, saddlemap_version, torch_version, "
                "created) VALUES (?, ?, ?, ?)",
                (json.dumps(document, sort_keys=True), __version__, str(torch.__version__),
                 created),
            )

    def studies(self) -> list[dict[str, Any]]:
        """The ``study`` rows as dicts (``config`` parsed), in the order they were added."""
        cur = self._conn.execute(
            "SELECT config, saddlemap_version, torch_version, created FROM study ORDER BY id"
        )
        return [{"config": json.loads(c), "saddlemap_version": s, "torch_version": t,
                 "created": when} for c, s, t, when in cur]

    def done_ids(self) -> set[str]:
        """Ids of the runs stored with status ``"ok"``."""
        rows = self._conn.execute("SELECT run_id FROM runs WHERE status = 'ok'")
        return {r[0] for r in rows}

    def pending(self, specs: Iterable[RunSpec]) -> list[RunSpec]:
        """The specs whose run is not stored as finished (failed runs count as pending)."""
        done = self.done_ids()
        return [s for s in specs if s.run_id not in done]

    def claim(self, spec: RunSpec, owner: Owner) -> bool:
        """Lease the run of ``spec`` to ``owner`` if it is still to do and nobody holds it.

        A run is claimed unless it is stored as ``"ok"``, another runner holds a live
        lease on it, or it failed after ``owner`` started.  The check and the lease are
        one ``BEGIN IMMEDIATE`` transaction, so two runners never both claim a run.
        """
        now = time.time()
        with self._transaction():
            status = self._conn.execute(
                "SELECT status FROM runs WHERE run_id = ?", (spec.run_id,)
            ).fetchone()
            if status is not None and status[0] == "ok":
                return False
            lease = self._conn.execute(
                "SELECT owner, host, pid, expires, ended FROM leases WHERE run_id = ?",
                (spec.run_id,),
            ).fetchone()
            if lease is not None and not _claimable(lease, owner, now):
                return False
            self._conn.execute(
                f"INSERT OR REPLACE INTO leases ({_quoted(LEASE_COLUMNS)}) "
                "VALUES (?, ?, ?, ?, ?, NULL)",
                (spec.run_id, owner.token, owner.host, owner.pid, now + LEASE_SECONDS),
            )
        return True

    @contextlib.contextmanager
    def leases(self, owner: Owner) -> Iterator[None]:
        """Keep ``owner``'s leases alive (a heartbeat thread); release them on exit."""
        try:
            with _Heartbeat(self.path, owner):
                yield
        finally:
            with self._transaction():
                self._conn.execute("DELETE FROM leases WHERE owner = ?", (owner.token,))

    def write_outcome(self, outcome: Outcome, owner: Owner | None = None) -> None:
        """Store one run in one transaction: its row, plateaus, points and history.

        With ``owner``, the run's lease goes in the same transaction: an ``"ok"`` run's is
        deleted; a failed run's is released with the time of the failure.  A record
        without the details of :func:`~saddlemap.study.run_one` (points, history, the
        plateau detail columns) is stored with those missing (NULL, no rows).

        Raises:
            StoreError: a point whose parameter count does not fit its layout.
        """
        spec = outcome.spec
        rec = outcome.record
        row: tuple[Any, ...]
        if rec is None:
            row = (spec.run_id, spec.canonical_json(), "failed", None, None,
                   outcome.seconds, outcome.error)
        else:
            row = (spec.run_id, spec.canonical_json(), "ok", rec["final_loss"], rec["steps"],
                   outcome.seconds, None)
        found = rec["plateaus"] if rec is not None else []
        plateaus = [(spec.run_id, i, *_plateau_values(p)) for i, p in enumerate(found)]
        points = [point for i, p in enumerate(found)
                  for point in self._point_rows(spec.run_id, i, p)]
        history = None if rec is None else _history_row(self.path, spec.run_id, rec)
        columns = PLATEAU_ALL_COLUMNS
        with self._transaction():
            for table in ("points", "histories", "plateaus"):  # rows that reference the run
                self._conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (spec.run_id,))
            self._conn.execute(
                f"INSERT OR REPLACE INTO runs ({_quoted(RUN_COLUMNS)}) VALUES (?,?,?,?,?,?,?)",
                row,
            )
            self._conn.executemany(
                f"INSERT INTO plateaus ({_quoted(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                plateaus,
            )
            self._conn.executemany(
                f"INSERT INTO points ({_quoted(POINT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(POINT_COLUMNS))})",
                points,
            )
            if history is not None:
                self._conn.execute(
                    f"INSERT INTO histories ({_quoted(HISTORY_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(HISTORY_COLUMNS))})",
                    history,
                )
            self._settle_lease(spec.run_id, ok=rec is not None, owner=owner)

    def _point_rows(self, run_id: str, index: int,
                    plateau: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The ``points`` rows of one plateau record (none without a layout)."""
        layout, activation = plateau.get("layout"), plateau.get("activation")
        if layout is None or activation is None:
            return []
        width, d, k, hidden, output = (int(v) for v in layout)
        size = width * (k + d + hidden) + k * output
        rows = []
        for which in POINT_KINDS:
            values = plateau.get(which)
            if values is None:
                continue
            flat = np.ascontiguousarray(values, dtype="<f8").reshape(-1)
            if flat.size != size:
                raise StoreError(f"{self.path}: run {run_id} plateau {index}: the {which} "
                                 f"point has {flat.size} parameters, its layout {size}")
            rows.append((run_id, index, which, str(activation), width, d, k, hidden, output,
                         flat.tobytes()))
        return rows

    def _settle_lease(self, run_id: str, *, ok: bool, owner: Owner | None) -> None:
        if ok:
            self._conn.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
        elif owner is not None:
            self._conn.execute(
                "UPDATE leases SET owner = NULL, host = NULL, pid = NULL, expires = NULL, "
                "ended = ? WHERE run_id = ? AND owner = ?",
                (time.time(), run_id, owner.token),
            )

    def runs(self) -> list[dict[str, Any]]:
        """All run rows as dicts (``spec`` parsed), ordered by run_id.

        Raises:
            StoreError: a spec that is not a JSON object.
        """
        cur = self._conn.execute(f"SELECT {_quoted(RUN_COLUMNS)} FROM runs ORDER BY run_id")
        out = []
        for r in cur:
            d = dict(zip(RUN_COLUMNS, r, strict=True))
            d["spec"] = self._spec(d)
            out.append(d)
        return out

    def _spec(self, row: Mapping[str, Any]) -> dict[str, Any]:
        try:
            spec = json.loads(row["spec"])
        except (TypeError, ValueError, RecursionError):
            spec = None
        if not isinstance(spec, dict):
            raise StoreError(f"{self.path}: damaged study database: run "
                             f"{_one_line(Exception(row['run_id']))[:40]} has no valid spec")
        return spec

    def plateaus(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """The plateau rows as dicts, ordered by run_id and index.

        Each dict holds :data:`PLATEAU_ALL_COLUMNS`: the detail columns are None in rows
        stored before schema version 3, the noise columns None for full-batch runs and rows
        stored before version 4; ``accepted`` is a
        bool, ``channel`` a pair, ``clusters`` and ``null_neurons`` lists of lists of
        neuron indices, ``warnings`` note codes and ``frozen`` block names.

        Args:
            run_id: only this run's plateaus (default: all runs').

        Raises:
            StoreError: a detail column that is not valid JSON.
        """
        columns = PLATEAU_ALL_COLUMNS
        query = f"SELECT {_quoted(columns)} FROM plateaus"
        args: tuple[str, ...] = ()
        if run_id is not None:
            query, args = query + " WHERE run_id = ?", (run_id,)
        cur = self._conn.execute(query + ' ORDER BY run_id, "index"', args)
        out = []
        for r in cur:
            d = dict(zip(columns, r, strict=True))
            for c in _JSON_COLUMNS:
                d[c] = None if d[c] is None else self._json(d[c], d)
            if d["accepted"] is not None:
                d["accepted"] = bool(d["accepted"])
            out.append(d)
        return out

    def _json(self, text: str, row: Mapping[str, Any]) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError, RecursionError):
            raise StoreError(
                f"{self.path}: damaged study database: plateau {row['index']} of run "
                f"{_one_line(Exception(row['run_id']))[:40]} holds invalid JSON"
            ) from None

    def point(self, run_id: str, index: int, which: str = "snapshot") -> TwoLayerNet | None:
        """A stored point of a plateau, as a float64 network with its activation.

        Args:
            run_id: the run.
            index: the plateau's index in the run (0, 1, ...).
            which: ``"snapshot"`` (the mid-plateau network the refinement started from) or
                ``"refined"`` (where the refinement ended).

        Returns:
            The network, or None when no such point is stored (an unknown plateau, one not
            refined, or a run stored before schema version 3).

        Raises:
            OptionError: ``which`` is neither ``"snapshot"`` nor ``"refined"``.
            StoreError: a stored point that does not make a network (an unknown activation,
                non-finite parameters).
        """
        if which not in POINT_KINDS:
            raise OptionError(f"which must be 'snapshot' or 'refined', got {which!r}")
        found = self._conn.execute(
            f"SELECT {_quoted(POINT_COLUMNS[3:])} FROM points "
            'WHERE run_id = ? AND "index" = ? AND which = ?', (run_id, index, which)
        ).fetchone()
        if found is None:
            return None
        activation, width, d, k, hidden, output, blob = found
        layout = ParamLayout(width, d, k, bool(hidden), bool(output))
        theta = torch.from_numpy(np.frombuffer(blob, dtype="<f8").astype(np.float64))
        try:
            return TwoLayerNet.from_flat(theta, layout, activation)
        except SaddlemapError as exc:
            raise StoreError(f"{self.path}: the {which} point of plateau {index} of run "
                             f"{run_id} makes no network: {_one_line(exc)}") from None

    def history(self, run_id: str) -> dict[str, Any] | None:
        """A run's R0, plateau rules and thinned loss history.

        Args:
            run_id: the run.

        Returns:
            ``{"r0", "rules", "step", "loss", "grad_norm"}`` (``rules`` a dict, the others
            numpy arrays: int64 steps, float64 losses and gradient norms), or None for a
            run without one (failed, or stored before schema version 3).

        Raises:
            StoreError: rules that are not a JSON object.
        """
        found = self._conn.execute(
            "SELECT r0, rules, step, loss, grad_norm FROM histories WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if found is None:
            return None
        r0, rules, step, values, grad = found
        try:
            parsed = json.loads(rules)
        except (TypeError, ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):
            raise StoreError(f"{self.path}: damaged study database: run "
                             f"{_one_line(Exception(run_id))[:40]} has no valid rules")
        return {"r0": r0, "rules": parsed,
                "step": np.frombuffer(step, dtype="<i8").astype(np.int64),
                "loss": np.frombuffer(values, dtype="<f8").astype(np.float64),
                "grad_norm": np.frombuffer(grad, dtype="<f8").astype(np.float64)}

    def run(self, run_id: str) -> dict[str, Any]:
        """One run row, found by its id or a unique prefix of it.

        Args:
            run_id: the run id, or the first characters of exactly one run's id.

        Returns:
            The run row as a dict (``spec`` parsed) with ``r0`` and ``rules`` from its
            history (None where none is stored).

        Raises:
            StoreError: no run, or several runs, start with ``run_id``.
        """
        shown = _one_line(Exception(run_id))[:40]
        if not run_id:
            raise StoreError(f"{self.path}: an empty run id")
        ids = [r[0] for r in self._conn.execute(
            "SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY run_id LIMIT 6",
            (len(run_id), run_id),
        )]
        if not ids:
            raise StoreError(f"{self.path}: no run has an id starting with {shown!r}")
        if len(ids) > 1 and run_id not in ids:
            many = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise StoreError(f"{self.path}: run id prefix {shown!r} is ambiguous: it matches "
                             f"{many}; give more characters")
        found = run_id if run_id in ids else ids[0]
        values = self._conn.execute(
            f"SELECT {_quoted(RUN_COLUMNS)} FROM runs WHERE run_id = ?", (found,)
        ).fetchone()
        out = dict(zip(RUN_COLUMNS, values, strict=True))
        out["spec"] = self._spec(out)
        history = self.history(found)
        out["r0"] = None if history is None else history["r0"]
        out["rules"] = None if history is None else history["rules"]
        return out

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
