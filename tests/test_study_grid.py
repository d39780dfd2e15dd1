"""Study grids: widths relative to r*, cells checked one by one, arms and plateau rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from saddlemap import PlateauRules
from saddlemap.study import ConfigError, StudyConfig, load_config
from saddlemap.study.config import resolve_width

# (teacher widths, width expressions, the (r*, m) cells expected, in order)
CELLS = [
    ((1,), ("r", "r+1", "2r", "4r"), [(1, 1), (1, 2), (1, 4)]),
    ((3,), ("r", "r+1", "2r", "4r"), [(3, 3), (3, 4), (3, 6), (3, 12)]),
    ((1, 2), (1, 3), [(1, 1), (1, 3), (2, 3)]),
    ((2, 7), ("r-1", "r", 9), [(2, 2), (2, 9), (7, 7), (7, 9)]),
    ((1,), ("r+1", "2r", "r"), [(1, 2), (1, 1)]),
    ((13,), ("2*r", " r + 1 "), [(13, 26), (13, 14)]),
]


@pytest.mark.parametrize(("teachers", "widths", "cells"), CELLS)
def test_cells_resolve_per_teacher_width(teachers: tuple[int, ...],
                                         widths: tuple[object, ...],
                                         cells: list[tuple[int, int]]) -> None:
    cfg = StudyConfig.from_dict({"grid": {"teacher_width": list(teachers),
                                          "width": list(widths), "seeds": 1}})
    runs = cfg.runs()
    assert [(r.teacher_width, r.width) for r in runs] == cells
    assert cfg.n_runs == len(runs)
    assert all(r.width >= r.teacher_width for r in runs)


def test_resolve_width_forms() -> None:
    assert [resolve_width(w, 2) for w in (7, "r", "3r", "r+2", "4r-1")] == [7, 2, 6, 4, 7]


def test_no_valid_cell_is_refused() -> None:
    with pytest.raises(ConfigError, match="no cell"):
        StudyConfig.from_dict({"grid": {"teacher_width": [5], "width": [1, "r-1"]}})


def test_a_relative_width_above_the_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="above the limit"):
        StudyConfig.from_dict({"grid": {"teacher_width": [9000], "width": ["2r"]}})


def test_arms_union_with_shared_runs_once() -> None:
    doc = {
        "grid": {"activation": ["erf", "tanh"], "teacher_width": [1], "width": ["r", "2r"],
                 "seeds": 3},
        "arm": [{"name": "main"},
                {"name": "committee", "committee": True, "activation": ["erf"],
                 "teacher_width": [2], "width": ["r"]},
                {"name": "again", "activation": ["erf"]}],  # a subset of main
    }
    cfg = StudyConfig.from_dict(doc)
    runs = cfg.runs()
    assert len(runs) == 2 * 2 * 3 + 3
    assert len({r.run_id for r in runs}) == len(runs)
    committee = [r for r in runs if r.committee]
    assert {(r.teacher_width, r.width, r.activation) for r in committee} == {(2, 2, "erf")}
    assert cfg.n_runs == 12 + 3 + 6  # counted per arm
    again = StudyConfig.from_dict(cfg.to_dict())
    assert [r.run_id for r in again.runs()] == [r.run_id for r in runs]


def test_arm_errors_name_the_arm() -> None:
    with pytest.raises(ConfigError, match=r"arm committee: .*grid\.width"):
        StudyConfig.from_dict({"arm": [{"name": "committee", "width": ["x"]}]})
    with pytest.raises(ConfigError, match="duplicate names"):
        StudyConfig.from_dict({"arm": [{"name": "a"}, {"name": "a"}]})


def test_arms_count_against_max_runs() -> None:
    doc = {"grid": {"seeds": 30}, "arm": [{"name": "a"}, {"name": "b", "committee": True}]}
    with pytest.raises(ConfigError, match="60 runs"):
        StudyConfig.from_dict(doc, max_runs=59)
    assert len(StudyConfig.from_dict(doc, max_runs=60).runs()) == 60


def test_rules_reach_the_runs_and_defaults_keep_ids() -> None:
    plain = StudyConfig.from_dict({"grid": {"width": [3]}}).runs()[0]
    same = StudyConfig.from_dict({"grid": {"width": [3]},
                                  "rules": {"drop": 0.5, "window": 100}}).runs()[0]
    assert same.run_id == plain.run_id  # default values do not enter the id
    tuned = StudyConfig.from_dict({"grid": {"width": [3]},
                                   "rules": {"max_distance": 0.25, "window": 40}}).runs()[0]
    assert tuned.run_id != plain.run_id
    rules = tuned.plateau_rules()
    assert isinstance(rules, PlateauRules)
    assert (rules.window, rules.max_distance, rules.escape_steps) == (40, 0.25, 400)
    assert plain.plateau_rules() == PlateauRules(window=100, escape_steps=1000)


@pytest.mark.parametrize("value", ['"0.1"', "true", "nan", "inf", "-0.5"])
def test_rules_take_finite_numbers_only(tmp_path: Path, value: str) -> None:
    path = tmp_path / "study.toml"
    path.write_text(f"[rules]\nmax_distance = {value}\n")
    with pytest.raises(ConfigError, match="max_distance"):
        load_config(path)


def test_the_committed_poc_config_loads() -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "poc-study.toml"
    if not path.exists():
        pytest.skip("no committed PoC config in this checkout")
    cfg = load_config(path)
    runs = cfg.runs()
    assert {r.activation for r in runs} == {"tanh", "erf", "sigmoid", "softplus"}
    assert all(r.width >= r.teacher_width for r in runs)
    assert any(r.committee for r in runs)
    cells = {(r.activation, r.teacher_width, r.width, r.init_scale, r.optimizer, r.committee)
             for r in runs}
    for cell in cells:
        seeds = {r.seed for r in runs if (r.activation, r.teacher_width, r.width,
                                          r.init_scale, r.optimizer, r.committee) == cell}
        assert len(seeds) >= 10
