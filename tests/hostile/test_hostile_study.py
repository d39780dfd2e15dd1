"""Hostile inputs to studies: absurd numbers, huge grids, bad databases, races, orphans."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from saddlemap.errors import SaddlemapError
from saddlemap.study import (
    ConfigError,
    StudyConfig,
    load_config,
)

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
