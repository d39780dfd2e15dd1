"""The PoC study's scripts (examples/poc/): the independent re-check and the figures."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from saddlemap.study import StudyConfig, StudyStore, run_study

POC = Path(__file__).resolve().parents[1] / "examples" / "poc"
#: A committee study and a plain one from small init: narrower saddles and other verdicts.
STUDY = {
    "steps": 700, "window": 50, "rtol": 1e-2, "min_length": 25,
    "grid": {"activation": ["erf"], "teacher_width": [2], "width": [2], "d": [8], "n": [200],
             "lr": [0.05], "init_scale": [1e-2], "seeds": [0, 1, 2]},
    "arm": [{"name": "committee", "committee": True}, {"name": "sigmoid", "steps": 1300,
            "activation": ["sigmoid"], "teacher_width": [1], "width": [3], "d": [5],
            "init_scale": [1e-3], "lr": [0.5], "seeds": [0]}],
}


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"poc_{name}", POC / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("poc") / "study.sqlite"
    report = run_study(StudyConfig.from_dict(STUDY), path, engine="serial", progress=False)
    assert report.failed == 0
    return path


def test_recheck_agrees_on_committee_saddles(db: Path, tmp_path: Path) -> None:
    recheck = _script("recheck")
    out = tmp_path / "recheck.json"
    code = recheck.main([str(db), "--count", "7", "--seed", "3", "--out", str(out)])
    result = json.loads(out.read_text())
    with StudyStore(db, create=False) as store:
        stored = [p for p in store.plateaus() if p["verdict"] != "not refined"]
    assert result["count"] == min(7, len(stored)) >= 3
    rows = result["rows"]
    committee = [r for r in rows if r["committee"]]
    assert committee and all(r["stored"] == "saddle of a narrower network" for r in committee)
    assert all(r["agree"] for r in committee), committee
    assert result["claims"] >= len(committee) and result["claims_confirmed"] == result["claims"]
    assert code == (0 if result["agree"] / result["count"] >= 0.9 else 1)


def test_recheck_catches_a_wrong_stored_verdict(db: Path, tmp_path: Path) -> None:
    # the re-check must be able to disagree: relabel every stored verdict as a local minimum
    import shutil
    import sqlite3

    wrong = tmp_path / "wrong.sqlite"
    shutil.copy(db, wrong)
    with sqlite3.connect(wrong) as conn:
        conn.execute("UPDATE plateaus SET verdict = 'local minimum'")
    recheck = _script("recheck")
    out = tmp_path / "wrong.json"
    assert recheck.main([str(wrong), "--count", "7", "--out", str(out)]) == 1
    result = json.loads(out.read_text())
    assert result["agree"] < result["count"]
    assert not any(r["agree"] for r in result["rows"] if r["committee"])


def test_figures_write_tables_and_pngs(db: Path, tmp_path: Path) -> None:
    figures = _script("figures")
    assert figures.main([str(db), "--out", str(tmp_path / "out")]) == 0
    tables = (tmp_path / "out" / "tables.md").read_text()
    assert "### Plateaus by activation × m/r* × init × optimiser" in tables
    assert "saddle of a narrower network" in tables and "| False |" not in tables
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["all"]["rows"][0]["runs"] == 4
    for name in ("verdicts.png", "loss-curves-gd-0.01.png", "loss-curves-adam-0.01.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000
