"""Studies with a batch-size axis: config, run ids, runs, storage and the summary."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from saddlemap.study import (
    ConfigError,
    RunSpec,
    StudyConfig,
    StudyStore,
    load_config,
    run_study,
    summarize,
)
from saddlemap.study.execution import run_one

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "batch-study.toml"


def _legacy_id(spec: RunSpec) -> str:
    """The run id as computed before the minibatch fields existed."""
    d = dataclasses.asdict(spec)
    for key in ("batch_size", "eval_every", "rules"):
        d.pop(key)
    for key in ("noise", "init_scale", "rtol"):
        d[key] = float(d[key])
    if not d["committee"]:
        del d["committee"]
    text = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_full_batch_run_ids_are_unchanged() -> None:
    doc: dict[str, Any] = {"grid": {"width": [2, 3], "teacher_width": [1], "seeds": 2}}
    for committee in (False, True):
        for spec in StudyConfig.from_dict({**doc, "committee": committee}).runs():
            assert spec.batch_size is None and spec.run_id == _legacy_id(spec)


def test_batch_axis_expands_and_keeps_the_full_batch_id() -> None:
    base = {"grid": {"width": [3], "teacher_width": [2], "n": [100]}}
    plain = StudyConfig.from_dict(base).runs()
    cfg = StudyConfig.from_dict({"grid": {**base["grid"], "batch_size": ["full", 64, 16]}})
    runs = cfg.runs()
    assert [r.batch_size for r in runs] == [None, 64, 16] and cfg.n_runs == 3
    assert runs[0].run_id == plain[0].run_id
    assert len({r.run_id for r in runs}) == 3
    assert all("eval_every" not in r.canonical_json() for r in runs)
    other = StudyConfig.from_dict({**cfg.to_dict(), "eval_every": 5}).runs()
    assert other[0].run_id == runs[0].run_id != other[1].run_id  # full batch: no evaluations


def test_a_batch_of_all_samples_is_full_batch_run_once() -> None:
    cfg = StudyConfig.from_dict({"grid": {"n": [50, 200], "batch_size": ["full", 64]}})
    assert sorted((r.n, r.batch_size or 0) for r in cfg.runs()) == [(50, 0), (200, 0),
                                                                    (200, 64)]


def test_to_dict_round_trip_and_full_batch_documents_unchanged() -> None:
    plain = StudyConfig.from_dict({"grid": {"width": [3]}})
    out = plain.to_dict()
    assert "batch_size" not in out["grid"] and "eval_every" not in out
    doc = {"eval_every": 4, "grid": {"batch_size": [None, 8]},
           "arm": [{"name": "a"}, {"name": "b", "batch_size": ["full"]}]}
    cfg = StudyConfig.from_dict(doc)
    again = StudyConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert [r.run_id for r in again.runs()] == [r.run_id for r in cfg.runs()]
    assert {r.batch_size for r in cfg.runs()} == {None, 8}


@pytest.mark.parametrize("value", [0, -4, 2.5, True, '"half"', "10000001"])
def test_bad_batch_sizes(tmp_path: Path, value: object) -> None:
    path = tmp_path / "study.toml"
    shown = str(value).lower() if isinstance(value, bool) else value
    path.write_text(f"[grid]\nbatch_size = [{shown}]\n")
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(path)


def test_bad_eval_every() -> None:
    with pytest.raises(ConfigError, match="eval_every"):
        StudyConfig.from_dict({"eval_every": 0})


def _committee(**grid: Any) -> StudyConfig:
    return StudyConfig.from_dict({
        "steps": 400, "window": 50, "rtol": 1e-2, "min_length": 25, "committee": True,
        "eval_every": 5,
        "grid": {"activation": ["erf"], "teacher_width": [2], "width": [2], "d": [8],
                 "n": [400], "lr": [0.1], "init_scale": [1e-3], "seeds": [0], **grid},
    })


def test_minibatch_run_records_its_noise() -> None:
    (spec,) = _committee(batch_size=[32]).runs()
    record = run_one(spec)
    assert record["spec"]["batch_size"] == 32 and record["spec"]["eval_every"] == 5
    assert record["history"]["step"].tolist()[:3] == [0, 5, 10]  # the evaluations only
    (p,) = record["plateaus"]
    assert p["verdict"] == "saddle of a narrower network" and p["batch_size"] == 32
    assert p["noise_lambda_min"] < 0 < p["noise_along_escape"]


def test_stored_and_summarised_by_batch_size(tmp_path: Path) -> None:
    db = str(tmp_path / "batch.sqlite")
    report = run_study(_committee(batch_size=["full", 32]), db, engine="serial",
                       progress=False)
    assert report.failed == 0
    with StudyStore(db) as store:
        assert sorted(str(r["spec"].get("batch_size")) for r in store.runs()) == ["32", "None"]
        stored = {p["batch_size"]: p for p in store.plateaus()}  # the noise measure, stored
    assert set(stored) == {32, None}
    assert stored[32]["noise_lambda_min"] < 0 < stored[32]["noise_along_escape"]
    assert stored[None]["noise_lambda_min"] is None and stored[None]["noise_along_escape"] is None
    summary = summarize(db, by="batch_size")
    assert [r.key for r in summary.rows] == [(32,), (None,)]
    assert all(r.plateaus == 1 for r in summary.rows)
    table = summary.to_markdown()
    assert "| full |" in table and "| 32 |" in table
    # the command line groups by it too (a real subprocess, one thread)
    out = subprocess.run([sys.executable, "-m", "saddlemap.cli", "study", "summary", db,
                          "--by", "batch_size"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("| batch_size | runs |")
    assert "| full |" in out.stdout and "| 32 |" in out.stdout


def test_the_batch_study_example_loads() -> None:
    cfg = load_config(EXAMPLE)
    runs = cfg.runs()
    assert {r.batch_size for r in runs} == {None, 64, 16}
    assert {r.activation for r in runs} == {"erf", "tanh", "sigmoid"}
    assert any(r.committee for r in runs) and all(r.width >= r.teacher_width for r in runs)
    assert len({r.lr for r in runs}) == 1  # one step size: only the noise differs
    cells: dict[tuple[Any, ...], set[int]] = {}
    for r in runs:
        key = (r.activation, r.teacher_width, r.width, r.init_scale, r.batch_size)
        cells.setdefault(key, set()).add(r.seed)
    assert min(len(s) for s in cells.values()) >= 5
