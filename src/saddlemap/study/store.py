"""The study database: an embedded SQLite file in WAL mode, checked before it is used.

Tables (schema version :data:`SCHEMA_VERSION`):

* ``meta``: ``schema_version`` and ``application`` records.
* ``study``: one row per distinct study config run into the database (config JSON,
  saddlemap and torch versions, time of the first run); running or resuming the same config
  again adds no row.
* ``runs``: one row per finished run: ``run_id`` (primary key), spec JSON, status (``"ok"``
  or ``"failed"``), final loss, steps, seconds, error.
* ``plateaus``: the plateaus of the ``"ok"`` runs: run_id, index, start, end, duration,
  loss, width, verdict, kind.
* ``leases``: the runs claimed by a runner now (owner, host, process id, expiry) and the
  time of the last failed attempt of a run.

A run's row and its plateau rows are written in one transaction, after the run completed,
so the database never holds a half-written run: a study killed at any moment (even by
SIGKILL) loses at most the runs in flight.

**Checks on open.**  Before anything is written, :class:`StudyStore` checks that an existing
file is an SQLite database (its header), runs ``PRAGMA quick_check`` on a read-only
connection, reads the schema and the types of the stored values: a file with other tables (a
foreign database), tables of other columns, triggers, a schema version newer than this
saddlemap's, or rows of values of the wrong type, is refused with a one-line
:class:`~saddlemap.errors.StoreError` naming the file and the problem, and is left
untouched.  A database of the first layout (version 1: no ``meta`` table) is migrated.

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

import torch

from .._version import __version__
from ..errors import StoreError
from .config import RunSpec, StudyConfig
from .execution import Outcome

__all__ = [
    "LEASE_SECONDS",
    "PLATEAU_COLUMNS",
    "RUN_COLUMNS",
    "SCHEMA_VERSION",
    "Owner",
    "StudyStore",
]

#: The layout this saddlemap writes; version 1 (no ``meta`` table) is migrated on open.
SCHEMA_VERSION = 2
#: Seconds a lease lasts without a heartbeat.
LEASE_SECONDS = 120.0
#: Seconds between two heartbeats of a runner (renewals of its leases).
HEARTBEAT_SECONDS = 30.0

RUN_COLUMNS = ("run_id", "spec", "status", "final_loss", "steps", "seconds", "error")
PLATEAU_COLUMNS = (
    "run_id", "index", "start", "end", "duration", "loss", "width", "verdict", "kind",
)
LEASE_COLUMNS = ("run_id", "owner", "host", "pid", "expires", "ended")
_SQLITE_MAGIC = b"SQLite format 3\x00"

_TABLES_V1: dict[str, tuple[str, ...]] = {
    "study": ("id", "config", "saddlemap_version", "torch_version", "created"),
    "runs": RUN_COLUMNS,
    "plateaus": PLATEAU_COLUMNS,
}
_TABLES: dict[int, dict[str, tuple[str, ...]]] = {
    1: _TABLES_V1,
    2: {**_TABLES_V1, "meta": ("key", "value"), "leases": LEASE_COLUMNS},
}

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


def _check_values(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse runs and plateaus rows holding values of the wrong type."""
    for table, condition in _ODD_VALUES.items():
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
            if _schema_version(conn, path):
                _check_values(conn, path)
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
        """Store one run, its row and its plateau rows, in one transaction.

        With ``owner``, the run's lease goes in the same transaction: an ``"ok"`` run's is
        deleted; a failed run's is released with the time of the failure.
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
            self._settle_lease(spec.run_id, ok=rec is not None, owner=owner)

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
