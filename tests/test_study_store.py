"""The study store keeps enough to re-open a plateau: points, details, histories, migrations."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import saddlemap as sm
from saddlemap.cli import main
from saddlemap.errors import OptionError, StoreError
from saddlemap.study import (
    Outcome,
    RunSpec,
    StudyConfig,
    StudyStore,
    build_problem,
    execute,
    export_points,
    format_run,
    load_run,
    plot_run,
    run_study,
    summarize,
)
from saddlemap.study.execution import MAX_HISTORY_POINTS, _plateau_record, thin_history
from saddlemap.study.store import (
    PLATEAU_COLUMNS,
    PLATEAU_DETAIL_COLUMNS,
    PLATEAU_NOISE_COLUMNS,
    SCHEMA_VERSION,
    Owner,
)
from saddlemap.training import freeze_mask

#: Saad–Solla soft committee runs that stall on the symmetric plateau, then escape.
COMMITTEE = {
    "steps": 700, "window": 50, "rtol": 1e-2, "min_length": 25, "committee": True,
    "grid": {"activation": ["erf"], "teacher_width": [2], "width": [2], "d": [8], "n": [200],
             "lr": [0.05], "init_scale": [1e-2], "seeds": [0, 1]},
}
NARROWER = sm.PlateauVerdict.NARROWER_SADDLE.value
_DB_CACHE: dict[str, Path] = {}


def _committee_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database of the committee study, run once per session (serial engine)."""
    if "db" not in _DB_CACHE:
        db = tmp_path_factory.mktemp("committee") / "study.sqlite"
        report = run_study(StudyConfig.from_dict(COMMITTEE), db, engine="serial")
        assert report.failed == 0 and report.run_now == 2
        _DB_CACHE["db"] = db
    return _DB_CACHE["db"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _trained_gradient(net: sm.TwoLayerNet, data: sm.Dataset) -> float:
    """‖∇R‖ over the input weights (the output weights of a committee are frozen)."""
    return float(sm.gradient(net, data)[freeze_mask(net, ["a"]) != 0].norm())


# ---------------------------------------------------------------------------- round trip


def test_round_trip_of_a_committee_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    db = _committee_db(tmp_path_factory)
    specs = {s.run_id: s for s in StudyConfig.from_dict(COMMITTEE).runs()}
    with StudyStore(db, create=False) as store:
        assert store.schema_version() == SCHEMA_VERSION == 4
        plateaus = store.plateaus()
        assert {p["run_id"] for p in plateaus} == set(specs)
        for p in plateaus:
            spec = specs[p["run_id"]]
            assert p["verdict"] == NARROWER and p["kind"] == "strict saddle"
            assert p["accepted"] is True and p["frozen"] == ["a"]
            assert p["start"] < p["snapshot_step"] < p["end"]
            assert 0 < p["distance"] <= 0.1 and p["grad_norm"] < 1e-8
            assert p["loss"] <= p["max_path_loss"] <= 1.01 * p["loss"]
            # the trained block (W, 2 × 8) is a strict saddle: λ_min < 0, counted in n₋
            assert p["lambda_min"] < 0 and p["n_negative"] >= 1
            assert p["n_negative"] + p["n_zero"] + p["n_positive"] == 16
            assert p["clusters"] == [[0, 1]] or p["clusters"] == [[1, 0]]  # the split pair
            assert p["null_neurons"] == [] and p["channel"] is None
            assert isinstance(p["warnings"], list)
            # the points rebuild networks: the snapshot's loss is the plateau loss
            _, data = build_problem(spec)
            snap = store.point(p["run_id"], p["index"], "snapshot")
            ref = store.point(p["run_id"], p["index"], "refined")
            assert snap is not None and ref is not None
            assert snap.activation.name == "erf" and snap.dtype == torch.float64
            assert _rel(sm.loss(snap, data), p["loss"]) <= 1e-12
            assert torch.equal(ref.a, torch.ones_like(ref.a))  # frozen at 1
            assert float((ref.W[0] - ref.W[1]).norm()) < 1e-6  # the split saddle
            assert _trained_gradient(ref, data) < 1e-8
            assert store.point(p["run_id"], p["index"] + 1, "snapshot") is None
            history = store.history(p["run_id"])
            assert history is not None
            steps = history["step"]
            assert steps[0] == 0 and steps[-1] == spec.steps and steps.dtype == np.int64
            assert {p["start"], p["end"], p["snapshot_step"]} <= set(steps.tolist())
            assert history["r0"] == history["loss"][0] > p["loss"]
            assert history["rules"] == spec.plateau_rules().to_dict()
            assert history["loss"].shape == history["grad_norm"].shape == steps.shape
            run = store.run(p["run_id"][:6])
            assert run["run_id"] == p["run_id"] and run["r0"] == history["r0"]
            assert run["rules"] == history["rules"] and run["spec"] == json.loads(
                spec.canonical_json())
        with pytest.raises(OptionError, match="snapshot"):
            store.point(plateaus[0]["run_id"], 0, "middle")
    # the summary and its exports read the same database as before
    assert summarize(db).rows[0].plateaus == 2


def test_record_is_picklable_and_rules_drive_the_monitor() -> None:
    spec = StudyConfig.from_dict({**COMMITTEE, "steps": 120}).runs()[0]
    rules = dict(spec.plateau_rules().to_dict(), escape_steps=7)
    spec = RunSpec.from_dict({**spec.to_dict(), "rules": {"escape_steps": 7}})
    outcome = execute(spec)
    assert outcome.record is not None, outcome.error
    again = pickle.loads(pickle.dumps(outcome))
    assert again.record["rules"] == rules
    assert again.record["r0"] == again.record["history"]["loss"][0]
    np.testing.assert_array_equal(again.record["history"]["step"], np.arange(121))


def test_full_space_refinement_is_recorded() -> None:
    # nothing frozen: the inertia and λ_min are the critical point's, warnings its codes
    prob = sm.teacher_student(2, 2, d=8, n=400, activation="erf", orthonormal=True,
                              init_scale=1e-2, seed=0)
    student = prob.student.replace(a=torch.ones(2, 1, dtype=torch.float64))
    mon = sm.PlateauMonitor(prob.data, window=50, rtol=1e-2, min_length=25, width_tol=0.2,
                            every=5, max_distance=0.5)
    sm.train(student, prob.data, steps=450, lr=0.05, callbacks=[mon])
    (p,) = mon.finish()
    assert p.frozen == () and p.critical_point is not None and p.spectrum is None
    assert p.snapshot is not None and p.snapshot_step is not None
    assert _rel(sm.loss(p.snapshot, prob.data), p.loss) <= 1e-12
    rec = _plateau_record(p)
    spec = p.critical_point.spectrum
    assert rec["lambda_min"] == spec.min and spec.inertia is not None
    assert (rec["n_positive"], rec["n_zero"], rec["n_negative"]) == tuple(spec.inertia)
    assert rec["warnings"] == [w.code.value for w in p.critical_point.warnings]
    assert rec["clusters"] == [list(g) for g in p.clusters] and rec["frozen"] == []
    assert rec["layout"] == [2, 8, 1, 0, 0] and rec["snapshot"].dtype == np.float64
    pickle.dumps(rec)


def test_history_is_thinned_keeping_marks() -> None:
    n = 5000
    history = {"step": np.arange(n), "loss": np.linspace(2.0, 1.0, n),
               "grad_norm": np.full(n, 0.5)}
    marks = [17, 18, 2500, 4321, 9999, -3]  # steps outside the history are ignored
    thin = thin_history(history, marks)
    steps = thin["step"]
    assert steps.size == MAX_HISTORY_POINTS
    assert {0, n - 1, 17, 18, 2500, 4321} <= set(steps.tolist())
    assert np.all(np.diff(steps) > 0)
    np.testing.assert_array_equal(thin["loss"], history["loss"][steps])
    assert thin_history(history, range(n), max_points=10)["step"].size == 10
    short = thin_history({k: v[:30] for k, v in history.items()}, [5])
    np.testing.assert_array_equal(short["step"], np.arange(30))


# ---------------------------------------------------------------------------- migrations

_V1_CREATE = (
    """CREATE TABLE study (id INTEGER PRIMARY KEY AUTOINCREMENT, config TEXT NOT NULL,
        saddlemap_version TEXT NOT NULL, torch_version TEXT NOT NULL, created TEXT NOT NULL)""",
    """CREATE TABLE runs (run_id TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL,
        final_loss REAL, steps INTEGER, seconds REAL, error TEXT)""",
    """CREATE TABLE plateaus (run_id TEXT NOT NULL REFERENCES runs(run_id),
        "index" INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
        duration INTEGER NOT NULL, loss REAL NOT NULL, width INTEGER NOT NULL,
        verdict TEXT NOT NULL, kind TEXT, PRIMARY KEY (run_id, "index"))""",
)
_V2_CREATE = (
    *_V1_CREATE,
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE leases (run_id TEXT PRIMARY KEY, owner TEXT, host TEXT, pid INTEGER,
        expires REAL, ended REAL)""",
    "CREATE UNIQUE INDEX study_config ON study(config)",
    "INSERT INTO meta (key, value) VALUES ('application', 'saddlemap study')",
    "INSERT INTO meta (key, value) VALUES ('schema_version', '2')",
)


#: Version 3: the v2 tables, the plateau details, points and histories (no noise columns).
_V3_CREATE = (
    *_V2_CREATE[:-1],
    *(f'ALTER TABLE plateaus ADD COLUMN "{c}" {t}' for c, t in (
        ("snapshot_step", "INTEGER"), ("distance", "REAL"), ("grad_norm", "REAL"),
        ("lambda_min", "REAL"), ("n_negative", "INTEGER"), ("n_zero", "INTEGER"),
        ("n_positive", "INTEGER"), ("accepted", "INTEGER"), ("max_path_loss", "REAL"),
        ("channel", "TEXT"), ("clusters", "TEXT"), ("null_neurons", "TEXT"),
        ("warnings", "TEXT"), ("frozen", "TEXT"))),
    """CREATE TABLE points (run_id TEXT NOT NULL REFERENCES runs(run_id),
        "index" INTEGER NOT NULL, which TEXT NOT NULL, activation TEXT NOT NULL,
        width INTEGER NOT NULL, input_dim INTEGER NOT NULL, output_dim INTEGER NOT NULL,
        hidden_bias INTEGER NOT NULL, output_bias INTEGER NOT NULL, params BLOB NOT NULL,
        PRIMARY KEY (run_id, "index", which))""",
    """CREATE TABLE histories (run_id TEXT PRIMARY KEY REFERENCES runs(run_id), r0 REAL,
        rules TEXT NOT NULL, points INTEGER NOT NULL, step BLOB NOT NULL, loss BLOB NOT NULL,
        grad_norm BLOB NOT NULL)""",
    "INSERT INTO meta (key, value) VALUES ('schema_version', '3')",
)


def _old_db(path: Path, statements: tuple[str, ...]) -> list[RunSpec]:
    """A database of an old layout with two ok runs (one plateau each) and a failed one."""
    specs = StudyConfig.from_dict({"grid": {"teacher_width": [1], "width": [1],
                                            "seeds": 3}}).runs()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO study (config, saddlemap_version, torch_version, created) "
                     "VALUES ('{}', '0.1', '2', 't0')")
        for i, spec in enumerate(specs):
            status = "failed" if i == 2 else "ok"
            conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (spec.run_id, spec.canonical_json(), status,
                          None if i == 2 else 0.5 + i, None if i == 2 else 100, 0.25,
                          "RuntimeError: boom" if i == 2 else None))
            if i < 2:
                conn.execute("INSERT INTO plateaus (run_id, \"index\", start, \"end\", "
                             "duration, loss, width, verdict, kind) "
                             "VALUES (?, 0, 10, 60, 50, ?, 1, ?, ?)",
                             (spec.run_id, 0.75 + i, NARROWER, "strict saddle"))
        conn.commit()
    return specs


def _layout(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        query = 'SELECT name, type, "notnull", pk FROM pragma_table_info(?)'
        return {t: conn.execute(query, (t,)).fetchall() for t in tables}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_old_databases_are_migrated(tmp_path: Path, version: int) -> None:
    db = tmp_path / f"v{version}.db"
    specs = _old_db(db, {1: _V1_CREATE, 2: _V2_CREATE, 3: _V3_CREATE}[version])
    with StudyStore(db) as store:
        assert store.schema_version() == 4
        assert store.done_ids() == {specs[0].run_id, specs[1].run_id}
        assert [s["created"] for s in store.studies()] == ["t0"]
        runs = {r["run_id"]: r for r in store.runs()}
        assert runs[specs[2].run_id]["status"] == "failed"
        assert runs[specs[1].run_id]["final_loss"] == 1.5
        plateaus = store.plateaus()
        assert [(p["run_id"], p["loss"], p["verdict"]) for p in plateaus] == sorted(
            [(specs[0].run_id, 0.75, NARROWER), (specs[1].run_id, 1.75, NARROWER)])
        assert all(p[c] is None for p in plateaus
                   for c in PLATEAU_DETAIL_COLUMNS + PLATEAU_NOISE_COLUMNS)
        assert store.point(specs[0].run_id, 0, "snapshot") is None
        assert store.history(specs[0].run_id) is None
        run = store.run(specs[0].run_id)
        assert run["r0"] is None and run["rules"] is None and run["steps"] == 100
        view = load_run(db, specs[0].run_id)
        text = format_run(view)
        assert "rules: – (not stored)" in text and NARROWER in text
    # the migrated file has exactly the layout of a new one
    with StudyStore(tmp_path / "new.db"):
        pass
    assert _layout(db) == _layout(tmp_path / "new.db")
    assert _layout(db)["plateaus"][len(PLATEAU_COLUMNS)][0] == "snapshot_step"
    assert [c[0] for c in _layout(db)["plateaus"][-3:]] == list(PLATEAU_NOISE_COLUMNS)
    with StudyStore(db) as store:  # and takes new runs, details included, in one go
        spec = specs[0]
        store.write_outcome(_detailed_outcome(spec))
        (p,) = store.plateaus(spec.run_id)
        assert p["clusters"] == [[0], [1]] and p["accepted"] is True
        assert (p["batch_size"], p["noise_lambda_min"], p["noise_along_escape"]) == (
            16, -0.5, 2.5e-3)
        net = store.point(spec.run_id, 0, "refined")
        assert net is not None and net.width == 2 and net.b is not None
        history = store.history(spec.run_id)
        assert history is not None and history["step"].tolist() == [0, 5, 9]


def _detailed_outcome(spec: RunSpec) -> Outcome:
    net = sm.TwoLayerNet([0.5, -0.25], [[1.0, 2.0], [3.0, 4.0]], b=[0.1, 0.2], activation="tanh")
    theta = net.flatten().numpy()
    plateau = {"start": 3, "end": 9, "duration": 6, "loss": 0.5, "width": 2,
               "verdict": NARROWER, "kind": "strict saddle", "snapshot_step": 5,
               "distance": 0.01, "grad_norm": 1e-12, "lambda_min": -0.5, "n_negative": 1,
               "n_zero": 2, "n_positive": 5, "accepted": True, "max_path_loss": 0.5,
               "channel": None, "clusters": [[0], [1]], "null_neurons": [], "warnings": [],
               "frozen": [], "activation": "tanh", "layout": [2, 2, 1, 1, 0],
               "batch_size": 16, "noise_lambda_min": -0.5, "noise_along_escape": 2.5e-3,
               "snapshot": theta, "refined": theta + 0.125}
    rec = {"run_id": spec.run_id, "spec": spec.to_dict(), "final_loss": 0.25, "steps": 9,
           "r0": 2.0, "rules": spec.plateau_rules().to_dict(),
           "history": {"step": np.array([0, 5, 9]), "loss": np.array([2.0, 0.5, 0.25]),
                       "grad_norm": np.array([1.0, 0.1, 0.01])},
           "plateaus": [plateau]}
    return Outcome(spec, rec, 0.1)


# ---------------------------------------------------------------------------- refusals


def _v3_db(path: Path) -> RunSpec:
    spec = StudyConfig.from_dict({"grid": {"teacher_width": [1], "width": [2]}}).runs()[0]
    with StudyStore(path) as store:
        store.write_outcome(_detailed_outcome(spec))
    return spec


def _set(path: Path, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(statement)
        conn.commit()


@pytest.mark.parametrize(
    ("statement", "words"),
    [
        ("UPDATE meta SET value = '5' WHERE key = 'schema_version'", "newer"),
        ("UPDATE plateaus SET batch_size = 0", "wrong type"),
        ("UPDATE plateaus SET noise_along_escape = 'loud'", "wrong type"),
        ("UPDATE points SET params = substr(params, 1, 16)", "wrong type"),
        ("UPDATE points SET which = 'middle' WHERE which = 'refined'", "wrong type"),
        ("UPDATE plateaus SET accepted = 'yes'", "wrong type"),
        ("UPDATE plateaus SET distance = x'00'", "wrong type"),
        ("UPDATE histories SET points = 4", "wrong type"),
        ("UPDATE histories SET rules = x'00'", "wrong type"),
        ("ALTER TABLE histories ADD COLUMN extra TEXT", "not a saddlemap study database"),
    ],
)
def test_bad_version_3_databases_are_refused_untouched(
    tmp_path: Path, statement: str, words: str
) -> None:
    db = tmp_path / "s.db"
    _v3_db(db)
    _set(db, statement)
    before = _digest(db)
    siblings = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StoreError) as info:
        StudyStore(db)
    assert words in str(info.value) and str(db) in str(info.value)
    assert "\n" not in str(info.value)
    assert _digest(db) == before and sorted(p.name for p in tmp_path.iterdir()) == siblings


def test_a_point_that_makes_no_network_is_a_store_error(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    spec = _v3_db(db)
    bad = _detailed_outcome(spec)
    assert bad.record is not None
    bad.record["plateaus"][0]["refined"] = np.zeros(3)
    bad.record["final_loss"] = 99.0
    with StudyStore(db) as store:
        with pytest.raises(StoreError, match="its layout 8"):
            store.write_outcome(bad)
        assert store.runs()[0]["final_loss"] == 0.25  # the run as it was
        assert store.point(spec.run_id, 0, "refined") is not None
    _set(db, "UPDATE points SET activation = 'swish9'")
    with StudyStore(db) as store, pytest.raises(StoreError, match="makes no network"):
        store.point(spec.run_id, 0, "snapshot")


def test_run_ids_by_unique_prefix(tmp_path: Path) -> None:
    db = tmp_path / "many.db"
    specs = StudyConfig.from_dict({"grid": {"teacher_width": [1], "width": [1],
                                            "seeds": 40}}).runs()
    with StudyStore(db) as store:
        for spec in specs:
            store.write_outcome(Outcome(spec, None, 0.1, "RuntimeError: boom"))
        ids = sorted(s.run_id for s in specs)
        shared = next(a[0] for a, b in itertools.pairwise(ids) if a[0] == b[0])
        with pytest.raises(StoreError, match="ambiguous") as info:
            store.run(shared)
        assert "\n" not in str(info.value)
        with pytest.raises(StoreError, match="no run"):
            store.run("zz")
        with pytest.raises(StoreError, match="empty"):
            store.run("")
        with pytest.raises(StoreError, match="no run"):
            store.run("%")  # no pattern: a prefix is text
        full = store.run(ids[0])
        assert full["run_id"] == ids[0] and full["status"] == "failed" and full["r0"] is None
        assert store.history(ids[0]) is None and store.plateaus(ids[0]) == []


def test_format_and_plot_a_run(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    db = tmp_path / "s.db"
    spec = _v3_db(db)
    view = load_run(db, spec.run_id[:5])
    text = format_run(view)
    for label in ("R0 (first loss): 2", "rules: drop=0.5", "snapshot step", "λ_min",
                  "inertia (−, 0, +)", "| 0 | yes | 0.01 | 1e-12 | -0.5 | 1, 2, 5 |",
                  f"run {spec.run_id}: status ok, final loss 0.25, steps 9"):
        assert label in text, (label, text)
    ax = plot_run(view)
    assert ax.get_yscale() == "log"
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"loss R", NARROWER,
                                                                   "snapshot"}
    assert len(ax.patches) == 1  # one plateau shaded


def test_export_points_layout(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    spec = _v3_db(db)
    out = tmp_path / "p.npz"
    assert export_points(db, out) == (1, 2)
    with np.load(out, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        assert meta["format"] == "saddlemap study points" and meta["version"] == 1
        assert z["run_id"].tolist() == [spec.run_id] and z["index"].tolist() == [0]
        assert z["layout"].tolist() == [[2, 2, 1, 1, 0]]
        layout = sm.ParamLayout(*z["layout"][0])
        net = sm.TwoLayerNet.from_flat(torch.from_numpy(z["refined_0"]), layout,
                                       str(z["activation"][0]))
        with StudyStore(db) as store:
            stored = store.point(spec.run_id, 0, "refined")
        assert stored is not None and torch.equal(net.flatten(), stored.flatten())
        assert net.activation.name == "tanh" and z["snapshot_step"].tolist() == [5]
    with pytest.raises(OptionError, match="exists"):
        export_points(db, out)
    assert export_points(db, out, force=True) == (1, 2)
    assert not list(tmp_path.glob(".*.tmp"))  # written beside, then moved into place


# ---------------------------------------------------------------------------- the CLI


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "saddlemap.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _resumed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committee study killed after its first run (the second one leased), resumed."""
    if "resumed" not in _DB_CACHE:
        folder = tmp_path_factory.mktemp("resumed")
        db = folder / "study.sqlite"
        config = StudyConfig.from_dict(COMMITTEE)
        first, second = config.runs()
        with StudyStore(db) as store:
            store.record_study(config)
            killed = Owner(Owner.new().host, _dead_pid(), "killed", 0.0)
            assert store.claim(first, killed) and store.claim(second, killed)
            store.write_outcome(execute(first), killed)  # the second run was in flight
        report = run_study(config, db, engine="serial")
        assert (report.already_done, report.run_now, report.failed) == (1, 1, 0)
        _DB_CACHE["resumed"] = db
    return _DB_CACHE["resumed"]


@pytest.mark.e2e
def test_cli_study_show(tmp_path_factory: pytest.TempPathFactory) -> None:
    db = _resumed_db(tmp_path_factory)
    spec = StudyConfig.from_dict(COMMITTEE).runs()[1]  # the run resumed
    folder = db.parent
    out = _cli("study", "show", str(db), spec.run_id[:8], cwd=folder)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for label in (f"run {spec.run_id}: status ok", "R0 (first loss):", "rules: drop=0.5",
                  f"escape_steps={spec.plateau_rules().escape_steps},",
                  "| # | start | end | duration | snapshot step | loss |",
                  NARROWER, "strict saddle", "| 0 | yes |", f"plot: {spec.run_id}.png"):
        assert label in text, (label, text)
    assert (folder / f"{spec.run_id}.png").stat().st_size > 0  # the default plot file
    plot = folder / "curve.png"
    assert main(["study", "show", str(db), spec.run_id, "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 0


@pytest.mark.e2e
def test_cli_study_export(tmp_path_factory: pytest.TempPathFactory,
                          capsys: pytest.CaptureFixture[str]) -> None:
    db = _resumed_db(tmp_path_factory)
    folder = db.parent
    npz = folder / "points.npz"
    out = _cli("study", "export", str(db), str(npz), cwd=folder)
    assert out.returncode == 0, out.stderr
    assert "2 plateaus, 4 points written" in out.stdout
    before = npz.read_bytes()
    assert main(["study", "export", str(db), str(npz)]) == 2  # refused: it exists
    assert "--force" in capsys.readouterr().err and npz.read_bytes() == before
    forced = _cli("study", "export", str(db), str(npz), "--force", cwd=folder)
    assert forced.returncode == 0, forced.stderr
    specs = {s.run_id: s for s in StudyConfig.from_dict(COMMITTEE).runs()}
    with StudyStore(db, create=False) as store:
        losses = {(p["run_id"], p["index"]): p["loss"] for p in store.plateaus()}
    with np.load(npz, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        assert len(meta["plateaus"]) == len(z["run_id"]) == 2
        assert set(z["verdict"].tolist()) == {NARROWER}
        for k, run_id in enumerate(z["run_id"].tolist()):
            _, data = build_problem(specs[run_id])
            layout = sm.ParamLayout(*(int(v) for v in z["layout"][k]))
            for which in ("snapshot", "refined"):
                net = sm.TwoLayerNet.from_flat(torch.from_numpy(z[f"{which}_{k}"]), layout,
                                               str(z["activation"][k]))
                if which == "snapshot":
                    stored = losses[(run_id, int(z["index"][k]))]
                    assert _rel(sm.loss(net, data), stored) <= 1e-12
                    assert z["loss"][k] == stored
                else:  # critical in the trained coordinates
                    assert _trained_gradient(net, data) < 1e-8
    with pytest.raises(SystemExit) as info:
        main(["study", "export", str(db), str(folder / "points.txt")])
    assert info.value.code == 2 and ".npz" in capsys.readouterr().err


def test_cli_study_errors_are_one_line(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    _v3_db(db)
    assert main(["study", "show", str(db), "nothing-like-it"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saddlemap: error:") and "no run" in err and err.count("\n") == 1
    assert main(["study", "export", str(tmp_path / "missing.db"), str(tmp_path / "x.npz")]) == 2
    assert "no such study database" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "missing.db").exists()
