"""Hostile inputs to studies: absurd numbers, huge grids, bad databases, races, orphans."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from saddlemap.errors import SaddlemapError
from saddlemap.study import (
    ConfigError,
    Outcome,
    RunSpec,
    StoreError,
    StudyConfig,
    StudyStore,
    export_csv,
    load_config,
    run_study,
    summarize,
)
from saddlemap.study.store import SCHEMA_VERSION, Owner

TINY = {"steps": 200, "window": 40, "min_length": 20,
        "grid": {"activation": ["erf"], "teacher_width": [1], "width": [1, 2], "d": [3],
                 "n": [30], "seeds": 2}}


def _one_line_naming(exc: BaseException, *words: str) -> None:
    msg = str(exc)
    assert isinstance(exc, SaddlemapError)
    assert "\n" not in msg and len(msg) < 300, msg
    for word in words:
        assert word in msg, (word, msg)


# ---------------------------------------------------------------------------- 1. numbers


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        ("steps = 100000000000\n", "steps", "100000000000"),
        ("steps = -5\n", "steps", "-5"),
        ("steps = nan\n", "steps", "nan"),
        ("window = 10000000000\n", "window", "10000000000"),
        ("min_length = 0\n", "min_length", "0"),
        ("rtol = nan\n", "rtol", "nan"),
        ("rtol = inf\n", "rtol", "inf"),
        ("rtol = 50.0\n", "rtol", "50.0"),
        ("max_runs = 0\n", "max_runs", "0"),
        ("max_runs = 2.5\n", "max_runs", "2.5"),
        ("[grid]\nseeds = [-1]\n", "grid.seeds", "-1"),
        ("[grid]\nseeds = [100000000000000000000]\n", "grid.seeds", "100000000000000000000"),
        ("[grid]\nseeds = -3\n", "grid.seeds", "-3"),
        ("[grid]\nwidth = [1000000000]\n", "grid.width", "1000000000"),
        ("[grid]\nteacher_width = [-2]\n", "grid.teacher_width", "-2"),
        ("[grid]\nd = [0]\n", "grid.d", "0"),
        ("[grid]\nn = [1000000000000]\n", "grid.n", "1000000000000"),
        ("[grid]\nlr = [nan]\n", "grid.lr", "nan"),
        ("[grid]\nlr = [-0.1]\n", "grid.lr", "-0.1"),
        ("[grid]\nlr = [1e300]\n", "grid.lr", "1e+300"),
        ("[grid]\ninit_scale = [inf]\n", "grid.init_scale", "inf"),
        ("[grid]\ninit_scale = [1e200]\n", "grid.init_scale", "1e+200"),
        ("[grid]\nnoise = [-1.0]\n", "grid.noise", "-1.0"),
        ("[grid]\nnoise = [nan]\n", "grid.noise", "nan"),
        # each value in range, one run too large: n·(d + width) values
        ("[grid]\nn = [10000000]\nd = [50000]\n", "grid.n", "10000000"),
    ],
)
def test_absurd_numbers_are_refused_naming_key_and_value(
    tmp_path: Path, text: str, key: str, shown: str
) -> None:
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _one_line_naming(info.value, key, shown)


def test_absurd_json_documents_give_config_errors(tmp_path: Path) -> None:
    cases = {
        "digits.json": '{"steps": 1' + "0" * 5000 + "}",
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "nan.json": '{"rtol": NaN}',
        "inf.json": '{"grid": {"lr": [Infinity]}}',
        "digits.toml": "steps = 1" + "0" * 5000 + "\n",
        "deep.toml": "a = " + "[" * 100_000 + "]" * 100_000 + "\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        _one_line_naming(info.value)
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"# " + b"x" * (11 * 2**20) + b"\n")
    with pytest.raises(ConfigError, match="at most"):
        load_config(huge)


def test_huge_integer_in_a_dict_is_shown_briefly() -> None:
    with pytest.raises(ConfigError) as info:
        StudyConfig.from_dict({"steps": 10**5000})
    _one_line_naming(info.value, "steps", "digits")


# ---------------------------------------------------------------------------- 2. grid size


def _billion_runs() -> dict[str, Any]:
    return {"grid": {"width": list(range(2, 1002)), "d": list(range(1, 1001)),
                     "teacher_width": [1], "seeds": 1000}}


def test_a_billion_run_grid_is_refused_before_expansion(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps(_billion_runs()))
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert time.perf_counter() - start < 2.0
    _one_line_naming(info.value, "1,000,000,000", "100,000", "max_runs")
    # a seed count alone is counted before its range is built
    with pytest.raises(ConfigError, match="max_runs"):
        StudyConfig.from_dict({"grid": {"seeds": 10**12}})


def test_max_runs_override_by_argument_and_config_key() -> None:
    raw = {"grid": {"width": [1, 2, 3], "teacher_width": [1], "seeds": 4}}  # 12 runs
    assert len(StudyConfig.from_dict(raw).runs()) == 12
    with pytest.raises(ConfigError, match="limit of 10 runs"):
        StudyConfig.from_dict({**raw, "max_runs": 10})
    with pytest.raises(ConfigError, match="limit of 11 runs"):
        StudyConfig.from_dict(raw, max_runs=11)
    cfg = StudyConfig.from_dict({**raw, "max_runs": 10}, max_runs=12)  # the argument wins
    assert cfg.max_runs == 12 and cfg.n_runs == 12 and len(cfg.runs()) == 12
    assert StudyConfig.from_dict(cfg.to_dict()) == cfg  # max_runs survives a round trip
    assert "max_runs" not in StudyConfig.from_dict(raw).to_dict()
    # a config built by hand is still counted before it is expanded
    big = StudyConfig(seeds=tuple(range(50)), width=tuple(range(2, 52)), max_runs=100)
    with pytest.raises(ConfigError, match="2,500"):
        big.runs()
    assert math.prod([50, 50]) == big.n_runs


# ---------------------------------------------------------------------------- helpers


def _fake_outcome(spec: RunSpec, seed_loss: float, plateaus: int = 1) -> Outcome:
    plats = [{"start": 10 * i, "end": 10 * i + 5, "duration": 5, "loss": seed_loss,
              "width": 1, "verdict": "saddle of a narrower network", "kind": None}
             for i in range(plateaus)]
    rec = {"run_id": spec.run_id, "spec": spec.to_dict(), "final_loss": seed_loss,
           "steps": 7, "plateaus": plats}
    return Outcome(spec, rec, 0.01)


def _study_db(path: Path, runs: int = 200) -> list[RunSpec]:
    """A study database of ``runs`` fake runs (several pages), closed and checkpointed."""
    specs = StudyConfig.from_dict({"grid": {"teacher_width": [1], "width": [1],
                                            "seeds": runs}}).runs()
    with StudyStore(path) as store:
        store.record_study(StudyConfig.from_dict({"grid": {"seeds": runs}}))
        for i, spec in enumerate(specs):
            store.write_outcome(_fake_outcome(spec, 0.5 + i, plateaus=2))
    return specs


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _write_config(tmp_path: Path, doc: dict[str, Any], name: str = "study.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


# ---------------------------------------------------------------------------- 4. databases


def _text_file(path: Path) -> None:
    path.write_text("run_id,status\nabc,ok\n")


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(random.Random(0).getrandbits(8) for _ in range(8192)))


def _truncated(path: Path) -> None:
    _study_db(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _header_only(path: Path) -> None:
    _study_db(path)
    path.write_bytes(path.read_bytes()[:60])


def _foreign(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (name TEXT, email TEXT)")
        conn.execute("INSERT INTO users VALUES ('a', 'b')")
        conn.commit()


def _foreign_runs_table(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER, result BLOB)")
        conn.commit()


def _page_corrupted(path: Path) -> None:
    _study_db(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'plateaus'")
        page = root.fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    data[(page - 1) * size: (page - 1) * size + 64] = b"\xff" * 64  # b-tree page header
    path.write_bytes(bytes(data))


def _newer_version(path: Path) -> None:
    _study_db(path, runs=2)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        conn.commit()


def _with_trigger(path: Path) -> None:
    _study_db(path, runs=2)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TRIGGER t AFTER INSERT ON runs BEGIN DELETE FROM plateaus; END")
        conn.commit()


def _odd_values(path: Path) -> None:
    _study_db(path, runs=2)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE plateaus SET duration = 'long' WHERE rowid = 1")
        conn.commit()


BAD_FILES = {
    "text": (_text_file, "not an SQLite database"),
    "garbage": (_garbage, "not an SQLite database"),
    "truncated": (_truncated, "damaged"),
    "header_only": (_header_only, "truncated"),
    "foreign": (_foreign, "not a saddlemap study database"),
    "foreign_runs": (_foreign_runs_table, "not a saddlemap study database"),
    "page_corrupted": (_page_corrupted, "damaged"),
    "newer_version": (_newer_version, "newer"),
    "trigger": (_with_trigger, "trigger"),
    "odd_values": (_odd_values, "wrong type"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_database_files_are_refused_and_left_untouched(tmp_path: Path, kind: str) -> None:
    make, words = BAD_FILES[kind]
    db = tmp_path / f"{kind}.db"
    make(db)
    before = _digest(db)
    siblings = sorted(p.name for p in tmp_path.iterdir())
    for open_it in (lambda: StudyStore(db), lambda: summarize(db),
                    lambda: run_study(StudyConfig.from_dict(TINY), db, engine="serial")):
        with pytest.raises(StoreError) as info:
            open_it()
        _one_line_naming(info.value, str(db), words)
    assert _digest(db) == before  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # no -wal or -shm left


def test_missing_or_odd_paths(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such study database"):
        summarize(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(StoreError, match="not a regular file"):
        StudyStore(tmp_path)
    with pytest.raises(StoreError, match="cannot open"):
        StudyStore(tmp_path / "no" / "such" / "folder.db")
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(StoreError, match="empty"):
        summarize(tmp_path / "empty.db")
    with StudyStore(tmp_path / "empty.db") as store:  # an empty file becomes a study
        assert store.schema_version() == SCHEMA_VERSION


def test_damaged_spec_json_is_a_store_error(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _study_db(db, runs=2)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE runs SET spec = '[1, 2' WHERE rowid = 1")
        conn.commit()
    with pytest.raises(StoreError, match="no valid spec"):
        summarize(db)


_V1_SCHEMA = """
CREATE TABLE study (id INTEGER PRIMARY KEY AUTOINCREMENT, config TEXT NOT NULL,
    saddlemap_version TEXT NOT NULL, torch_version TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL,
    final_loss REAL, steps INTEGER, seconds REAL, error TEXT);
CREATE TABLE plateaus (run_id TEXT NOT NULL REFERENCES runs(run_id), "index" INTEGER NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, duration INTEGER NOT NULL,
    loss REAL NOT NULL, width INTEGER NOT NULL, verdict TEXT NOT NULL, kind TEXT,
    PRIMARY KEY (run_id, "index"));
"""


def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    spec = StudyConfig.from_dict({"grid": {"teacher_width": [1], "width": [1]}}).runs()[0]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executescript(_V1_SCHEMA)
        for i in range(3):  # version 1 added a study row on every call
            conn.execute("INSERT INTO study (config, saddlemap_version, torch_version, created)"
                         " VALUES ('{}', '0.1', '2', ?)", (f"t{i}",))
        conn.execute("INSERT INTO runs VALUES (?, ?, 'ok', 0.5, 7, 0.1, NULL)",
                     (spec.run_id, spec.canonical_json()))
        conn.commit()
    with StudyStore(db) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert [s["created"] for s in store.studies()] == ["t0"]
        assert store.done_ids() == {spec.run_id}


# ---------------------------------------------------------------------------- 7. study rows


def test_one_study_row_however_often_the_study_runs(tmp_path: Path) -> None:
    cfg = StudyConfig.from_dict({**TINY, "steps": 30, "grid": {**TINY["grid"], "seeds": 1}})
    db = tmp_path / "s.db"
    for _ in range(3):
        run_study(cfg, db, engine="serial")
    run_study(cfg, db, engine="serial", max_runs=50)  # the limit is not part of the study
    with StudyStore(db) as store:
        assert len(store.studies()) == 1
        assert store.studies()[0]["config"] == json.loads(json.dumps(
            {k: v for k, v in cfg.to_dict().items() if k != "max_runs"}))
        bigger = StudyConfig.from_dict({**cfg.to_dict(), "grid": {**TINY["grid"],
                                                                  "seeds": 3}})
        store.record_study(bigger)  # a grown study is a new config: one more row
        store.record_study(bigger)
        assert len(store.studies()) == 2


def test_csv_export_has_unique_columns(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _study_db(db, runs=3)
    runs_csv, plats_csv = export_csv(db, tmp_path / "out")
    for path in (runs_csv, plats_csv):
        with path.open() as fh:
            header = next(csv.reader(fh))
        assert len(header) == len(set(header)), header
    with runs_csv.open() as fh:
        row = next(csv.DictReader(fh))
    assert row["steps"] == "7" and row["spec_steps"] == "1000"  # made, and asked for
    assert row["width"] == "1" and row["seed"] == "0"


# ---------------------------------------------------------------------------- 5. leases


def _specs(k: int) -> list[RunSpec]:
    return StudyConfig.from_dict({"grid": {"teacher_width": [1], "width": [1],
                                           "seeds": k}}).runs()


def test_claims_leases_and_their_expiry(tmp_path: Path) -> None:
    x, y, z = _specs(3)
    a, b = Owner.new(), Owner.new()
    with StudyStore(tmp_path / "s.db") as store:
        assert store.claim(x, a) and not store.claim(x, b)  # a live lease holds
        store.write_outcome(_fake_outcome(x, 0.1), a)
        assert not store.claim(x, b)  # done
        # a lease of a process of this host that is gone is stale at once
        dead = Owner(a.host, _dead_pid(), "dead", time.time())
        assert store.claim(y, dead) and store.claim(y, b)
        # a lease of another host stands until it expires
        far = Owner("elsewhere.invalid", 4242, "far", time.time())
        assert store.claim(z, far) and not store.claim(z, b)
        with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as conn:
            conn.execute("UPDATE leases SET expires = 0 WHERE owner = 'far'")
            conn.commit()
        assert store.claim(z, b)
        # lease rows no runner writes count as stale
        with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as conn:
            conn.execute("UPDATE leases SET expires = 1e300, host = 'elsewhere.invalid' "
                         "WHERE run_id = ?", (z.run_id,))
            conn.commit()
        assert store.claim(z, b)
        # a run that failed after a runner started is not retried by it; a later one does
        store.write_outcome(Outcome(z, None, 0.1, "RuntimeError: boom"), b)
        assert not store.claim(z, a)
        assert store.claim(z, Owner.new())
        with store.leases(b):
            pass  # leaving releases b's leases
        assert store.claim(y, a)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], env=_env())
    proc.wait()
    return proc.pid


_PARALLEL_CHILD = """
import dataclasses, json, sys, time
from pathlib import Path
from saddlemap.study import run_study
print("ready", flush=True)
while not Path(sys.argv[3]).exists():
    time.sleep(0.002)
report = run_study(sys.argv[1], sys.argv[2], engine="serial")
print(json.dumps(dataclasses.asdict(report)), flush=True)
"""


@pytest.mark.e2e
def test_two_runners_on_one_database_run_each_run_once(tmp_path: Path) -> None:
    doc = {**TINY, "steps": 300, "grid": {**TINY["grid"], "seeds": 4}}  # 8 runs
    config = _write_config(tmp_path, doc)
    db, go = tmp_path / "s.db", tmp_path / "go"
    StudyStore(db).close()  # both runners find the database made
    children = [subprocess.Popen([sys.executable, "-c", _PARALLEL_CHILD, str(config), str(db),
                                  str(go)], stdout=subprocess.PIPE, text=True, env=_env())
                for _ in range(2)]
    try:
        assert [c.stdout.readline().strip() for c in children] == ["ready", "ready"]
        go.touch()
        outs = [c.communicate(timeout=60)[0] for c in children]
    finally:
        for c in children:
            c.kill()
    reports = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    assert [c.returncode for c in children] == [0, 0]
    assert sum(r["run_now"] for r in reports) == 8  # 16 before leases
    assert all(r["run_now"] >= 1 and r["failed"] == 0 for r in reports), reports
    assert all(r["run_now"] + r["by_others"] == 8 for r in reports), reports
    with StudyStore(db) as store:
        assert len(store.done_ids()) == 8 and len(store.studies()) == 1
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 0


# ---------------------------------------------------------------------------- 6. threads


def test_serial_engine_runs_on_one_torch_thread_and_restores_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from saddlemap.study import engines

    seen: list[int] = []

    def spy(spec: RunSpec) -> Outcome:
        seen.append(torch.get_num_threads())
        return Outcome(spec, None, 0.0, "spy")

    monkeypatch.setattr(engines, "execute", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        outcomes = list(engines.SerialEngine().map(_specs(3)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1, 1] and len(outcomes) == 3


def test_workers_are_checked_before_any_work(tmp_path: Path) -> None:
    for bad in (0, -1, 10**6, True, 2.5):
        with pytest.raises(ConfigError, match="workers"):
            run_study(StudyConfig.from_dict(TINY), tmp_path / "w.db", workers=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "w.db").exists()


# ---------------------------------------------------------------------------- 3. orphans


_ORPHAN_CHILD = """
import sys
from saddlemap.study import run_study
run_study(sys.argv[1], sys.argv[2], engine="process", workers=2)
"""


def _children_of(pid: int) -> list[int]:
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat_file.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat_file.parent.name))
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.e2e
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_die_with_a_killed_study(tmp_path: Path) -> None:
    # runs of minutes: a slow step size, no early stop
    doc = {"steps": 1_000_000, "window": 1000, "min_length": 500,
           "grid": {"activation": ["erf"], "teacher_width": [1], "width": [2], "d": [3],
                    "n": [30], "lr": [1e-6], "seeds": 2}}
    config = _write_config(tmp_path, doc)
    child = subprocess.Popen([sys.executable, "-c", _ORPHAN_CHILD, str(config),
                              str(tmp_path / "s.db")], env=_env(), start_new_session=True)
    workers: list[int] = []
    others: list[int] = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:  # until both workers are well into their runs
            workers = [p for p in _children_of(child.pid)
                       if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
            if len(workers) == 2 and min(map(_cpu_seconds, workers)) > \
                    _cpu_seconds(child.pid) + 0.5:
                break
            time.sleep(0.1)
        assert len(workers) == 2, "the study did not start its workers"
        others = _children_of(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(map(_running, others)):
            time.sleep(0.05)
        assert not [p for p in others if _running(p)], "pool workers outlived their parent"
    finally:
        for pid in [child.pid, *workers, *others]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        child.wait()
