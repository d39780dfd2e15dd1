"""Tests of saddlemap.study: configs, the store, engines, kill-and-resume, summaries."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from saddlemap.errors import SaddlemapError
from saddlemap.study import (
    ConfigError,
    Outcome,
    RunSpec,
    StudyConfig,
    StudyStore,
    export_csv,
    export_parquet,
    load_config,
    run_study,
    summarize,
)
from saddlemap.verdicts import PlateauVerdict

SMALL_TOML = """
steps = 200
window = 40
rtol = 1e-3
min_length = 20

[grid]
activation = ["erf"]
teacher_width = [1]
width = [1, 2]
d = [3]
n = [30]
noise = [0.0]
optimizer = ["gd"]
lr = ["auto"]
init_scale = [0.5]
seeds = 10
"""
N_SMALL = 2 * 10


def _write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _small(tmp_path: Path) -> Path:
    return _write(tmp_path, SMALL_TOML)


def _needs_monitor() -> None:
    pytest.importorskip("saddlemap.monitor")


def _rows(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        runs = conn.execute(
            "SELECT run_id, spec, status, final_loss, steps, error FROM runs ORDER BY run_id"
        ).fetchall()
        plateaus = conn.execute(
            'SELECT * FROM plateaus ORDER BY run_id, "index"'
        ).fetchall()
    return runs, plateaus


# ---------------------------------------------------------------------------- config


def test_load_toml_and_json_agree(tmp_path: Path) -> None:
    cfg = load_config(_small(tmp_path))
    assert cfg.activation == ("erf",)
    assert cfg.seeds == tuple(range(10))
    assert cfg.lr == (None,)
    assert (cfg.steps, cfg.window, cfg.min_length) == (200, 40, 20)
    js = _write(tmp_path, json.dumps(cfg.to_dict()), "study.json")
    assert load_config(js) == cfg


def test_grid_expansion_and_stable_run_ids(tmp_path: Path) -> None:
    cfg = load_config(_small(tmp_path))
    runs = cfg.runs()
    assert len(runs) == N_SMALL
    assert len({r.run_id for r in runs}) == N_SMALL
    assert [r.run_id for r in runs] == [r.run_id for r in load_config(_small(tmp_path)).runs()]
    spec = runs[0]
    assert RunSpec.from_dict(json.loads(spec.canonical_json())) == spec
    assert hash(spec) == hash(RunSpec.from_dict(spec.to_dict()))
    # the id is a pure function of the spec: the same run in another grid keeps its id
    other = StudyConfig.from_dict({**cfg.to_dict(), "grid": {**cfg.to_dict()["grid"],
                                                             "width": [1]}})
    assert {r.run_id for r in other.runs()} < {r.run_id for r in runs}
    assert {r.ratio for r in runs} == {1.0, 2.0}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bogus = 1\n", "bogus"),
        ("[grid]\nwdith = [2]\n", "grid.wdith"),
        ("[grid]\nd = ['three']\n", "grid.d"),
        ("[grid]\nn = [true]\n", "grid.n"),
        ("steps = 1.5\n", "steps"),
        ("rtol = -1.0\n", "rtol"),
        ("[grid]\nwidth = []\n", "grid.width"),
        ("[grid]\nseeds = []\n", "grid.seeds"),
        ("[grid]\nseeds = 0\n", "grid.seeds"),
        ("[grid]\nteacher_width = [3, 4]\nwidth = [2]\n", "grid.width"),
        ("[grid]\nwidth = ['r/2']\n", "grid.width"),
        ("[rules]\nmax_distance = -1.0\n", "max_distance"),
        ("[rules]\nbogus = 1\n", "rules.bogus"),
        ("window = 20\n[rules]\nwindow = 30\n", "rules.window"),
        ("[[arm]]\nwdith = [2]\n", "arm[0].wdith"),
        ("[grid]\nactivation = ['swish9']\n", "grid.activation"),
        ("[grid]\noptimizer = ['sgdx']\n", "grid.optimizer"),
        ("[grid]\nlr = [0.0]\n", "grid.lr"),
        ("grid = 3\n", "grid"),
        ("[grid]\nnoise = [0.1, 0.1]\n", "grid.noise"),
    ],
)
def test_malformed_configs(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    msg = str(info.value)
    assert key in msg and "\n" not in msg
    assert isinstance(info.value, SaddlemapError) and isinstance(info.value, ValueError)


def test_missing_file_and_invalid_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="invalid TOML") as info:
        load_config(_write(tmp_path, "steps = = 3\n"))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_config(_write(tmp_path, "{steps: 3", "bad.json"))


def test_unknown_engine(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="engine"):
        run_study(load_config(_small(tmp_path)), tmp_path / "s.db", engine="dask")


# ---------------------------------------------------------------------------- studies


@pytest.mark.e2e
def test_process_and_serial_engines_agree(tmp_path: Path) -> None:
    _needs_monitor()
    cfg = load_config(_small(tmp_path))
    rep = run_study(cfg, tmp_path / "proc.db", engine="process", workers=2)
    assert (rep.total, rep.already_done, rep.run_now, rep.failed) == (N_SMALL, 0, N_SMALL, 0)
    # the serial engine runs on one torch thread whatever the caller's setting, as workers do
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ser = run_study(cfg, tmp_path / "serial.db", engine="serial")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert ser.failed == 0
    runs_p, plats_p = _rows(tmp_path / "proc.db")
    runs_s, plats_s = _rows(tmp_path / "serial.db")
    assert {r[0] for r in runs_p} == {r.run_id for r in cfg.runs()}
    assert all(r[2] == "ok" for r in runs_p)
    assert runs_p == runs_s  # bit for bit: final losses and plateau losses are exact floats
    assert plats_p == plats_s
    # a second call finds everything done
    again = run_study(cfg, tmp_path / "proc.db", workers=2)
    assert (again.already_done, again.run_now) == (N_SMALL, 0)


@pytest.mark.e2e
def test_ray_engine_agrees(tmp_path: Path) -> None:
    _needs_monitor()
    ray = pytest.importorskip("ray")
    cfg = StudyConfig.from_dict({**json.loads(json.dumps(load_config(_small(tmp_path))
                                                         .to_dict())), "grid": {
        "activation": ["erf"], "teacher_width": [1], "width": [1, 2], "d": [3], "n": [30],
        "seeds": 3}})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rep = run_study(cfg, tmp_path / "ray.db", engine="ray")
    finally:
        ray.shutdown()
    assert rep.failed == 0 and rep.run_now == 6
    run_study(cfg, tmp_path / "serial.db", engine="serial")
    assert _rows(tmp_path / "ray.db") == _rows(tmp_path / "serial.db")


def test_failed_runs_are_stored_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saddlemap.study import execution

    cfg = StudyConfig.from_dict({"steps": 5, "grid": {
        "activation": ["tanh"], "teacher_width": [1], "width": [1], "d": [2], "n": [10]}})

    def boom(spec: RunSpec) -> dict[str, Any]:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(execution, "run_one", boom)
    rep = run_study(cfg, tmp_path / "f.db", engine="serial")
    assert (rep.run_now, rep.failed) == (1, 1)
    runs, plats = _rows(tmp_path / "f.db")
    assert runs[0][2] == "failed" and runs[0][5] == "RuntimeError: boom" and plats == []
    monkeypatch.undo()
    _needs_monitor()
    rep = run_study(cfg, tmp_path / "f.db", engine="serial")  # failed runs are retried
    assert (rep.already_done, rep.run_now, rep.failed) == (0, 1, 0)
    assert _rows(tmp_path / "f.db")[0][0][2] == "ok"


_CHILD = """
import sys
from saddlemap.study import run_study
run_study(sys.argv[1], sys.argv[2], engine="process", workers=2)
"""


@pytest.mark.e2e
def test_sigkill_and_resume(tmp_path: Path) -> None:
    _needs_monitor()
    config = _write(tmp_path, SMALL_TOML.replace("seeds = 10", "seeds = 12"))
    total = 2 * 12
    expected = {r.run_id for r in load_config(config).runs()}
    db = tmp_path / "kill.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(config), str(db)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    seen = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                        seen = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
                except sqlite3.OperationalError:
                    seen = 0
                if seen >= 3:
                    break
            time.sleep(0.01)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the study and its workers, mid-run
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert 3 <= seen < total
    stored = {r[0] for r in _rows(db)[0]}
    assert 0 < len(stored) < total and stored <= expected

    rep = run_study(config, db, workers=2)
    assert rep.already_done == len(stored)
    assert rep.run_now == total - len(stored) and rep.failed == 0
    runs, plats = _rows(db)
    ids = [r[0] for r in runs]
    assert len(ids) == len(set(ids)) == total and set(ids) == expected
    assert {p[0] for p in plats} <= set(ids)
    # plateau indices are 0..k-1 per run: no half-written or duplicated run
    per_run: dict[str, list[int]] = {}
    for p in plats:
        per_run.setdefault(p[0], []).append(p[1])
    assert all(v == list(range(len(v))) for v in per_run.values())
    # the resumed database equals a fresh serial one
    run_study(config, tmp_path / "fresh.db", engine="serial")
    assert _rows(tmp_path / "fresh.db") == (runs, plats)


# ---------------------------------------------------------------------------- summaries


def _fake_db(path: Path) -> None:
    specs = StudyConfig.from_dict({"grid": {
        "activation": ["tanh"], "teacher_width": [1], "width": [1, 2], "seeds": 2,
    }}).runs()
    narrower = "saddle of a narrower network"

    def plateau(duration: int, verdict: str) -> dict[str, Any]:
        return {"start": 10, "end": 10 + duration, "duration": duration, "loss": 0.5,
                "width": 1, "verdict": verdict, "kind": None}

    # ratio 1: seeds 0, 1; ratio 2: seeds 0, 1
    plateaus = {
        specs[0]: [],
        specs[1]: [plateau(20, "minimum")],
        specs[2]: [plateau(30, narrower), plateau(50, "other")],
        specs[3]: [plateau(40, narrower)],
    }
    losses = {specs[0]: 0.1, specs[1]: 0.3, specs[2]: 0.2, specs[3]: 0.4}
    with StudyStore(path) as store:
        for spec, plats in plateaus.items():
            rec = {"run_id": spec.run_id, "spec": spec.to_dict(), "final_loss": losses[spec],
                   "steps": 100, "plateaus": plats}
            store.write_outcome(Outcome(spec, rec, 0.5))
        bad = RunSpec.from_dict({**specs[0].to_dict(), "seed": 99})
        store.write_outcome(Outcome(bad, None, 0.1, "RuntimeError: boom"))


def test_summary_numbers(tmp_path: Path) -> None:
    db = tmp_path / "fake.db"
    _fake_db(db)
    s = summarize(db)
    assert s.failed == 1
    assert s.by == ("activation", "ratio")
    assert [(*r.key, r.runs) for r in s.rows] == [("tanh", 1.0, 2), ("tanh", 2.0, 2)]
    one, two = s.rows
    assert (one.plateaus, two.plateaus) == (1, 3)
    assert one.frac_narrower == 0.0 and two.frac_narrower == 1.0
    assert two.verdicts[PlateauVerdict.NARROWER_SADDLE].count == 2
    assert (one.other.count, two.other.count) == (1, 1)  # "minimum", "other": no verdicts
    assert one.mean_plateau_length == 20.0 and two.mean_plateau_length == 40.0
    assert math.isclose(one.mean_final_loss, 0.2) and math.isclose(two.mean_final_loss, 0.3)
    md = s.to_markdown()
    assert md.splitlines()[0].startswith("| activation | m/r* | runs | plateaus |")
    assert "| tanh | 2 | 2 | 3 | 2 (0.67, 0.21–0.94) | 1 (0.33, 0.06–0.79) | 1.00 (0.34–1.00) " \
           "| 40.0 |" in md


def test_export_csv(tmp_path: Path) -> None:
    import csv

    db = tmp_path / "fake.db"
    _fake_db(db)
    runs_csv, plats_csv = export_csv(db, tmp_path / "out")
    with runs_csv.open() as fh:
        runs = list(csv.DictReader(fh))
    with plats_csv.open() as fh:
        plats = list(csv.DictReader(fh))
    assert len(runs) == 5 and len(plats) == 4
    assert {"run_id", "status", "final_loss", "activation", "width", "seed"} <= set(runs[0])
    assert sorted(r["status"] for r in runs).count("failed") == 1
    assert {p["verdict"] for p in plats} >= {"saddle of a narrower network"}
    assert list(plats[0])[:9] == ["run_id", "index", "start", "end", "duration", "loss",
                                  "width", "verdict", "kind"]
    assert {"snapshot_step", "distance", "grad_norm", "lambda_min", "accepted", "clusters",
            "warnings"} <= set(plats[0])


def test_export_parquet_or_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "fake.db"
    _fake_db(db)
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas and pyarrow"):
            export_parquet(db, tmp_path / "pq")
    else:
        runs, plats = export_parquet(db, tmp_path / "pq")
        assert runs.exists() and plats.exists()


def test_plot_summary(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from saddlemap.study import plot_summary

    db = tmp_path / "fake.db"
    _fake_db(db)
    ax = plot_summary(summarize(db))
    assert len(ax.patches) == 4  # 2 groups × 2 verdicts found (narrower saddle, other)


def test_saad_solla_study_measures_plateau_growth(tmp_path: Path) -> None:
    # docs/theory.md §9: the symmetric plateau of the soft committee machine lengthens as the
    # initialisation shrinks; the study records it run by run.
    from saddlemap.study import StudyStore

    config = StudyConfig.from_dict({
        "steps": 800, "window": 50, "rtol": 1e-2, "min_length": 25, "committee": True,
        "grid": {"activation": ["erf"], "teacher_width": [2], "width": [2], "d": [8],
                 "n": [400], "lr": [0.05], "init_scale": [1e-2, 1e-3], "seeds": [0]},
    })
    db = str(tmp_path / "ss.sqlite")
    report = run_study(config, db, engine="serial")
    assert report.failed == 0
    with StudyStore(db) as store:
        runs = {r["run_id"]: r["spec"]["init_scale"] for r in store.runs()}
        longest: dict[float, int] = {}
        for p in store.plateaus():
            if p["verdict"] == "saddle of a narrower network":
                scale = runs[p["run_id"]]
                longest[scale] = max(longest.get(scale, 0), p["duration"])
    assert longest.get(1e-3, 0) > longest.get(1e-2, 0) > 0
