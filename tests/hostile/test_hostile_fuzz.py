"""Fuzzing the readers: random bytes and truncations of a valid file of every format.

Each broken file must end in a :class:`~saddlemap.SaddlemapError` naming the file, in one
line (in process), and through the command line in one line on stderr with exit code 2,
writing nothing.  Seeded, so every run tries the same files.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

import saddlemap as sm
from saddlemap import cli
from saddlemap.io import load_data, load_model, save_estimator

pytest.importorskip("skops.io")

A, W = 0.610515537972, 1.433931221329
X_DATA = np.array([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [2.0]])
Y_DATA = np.array([-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
RANDOM_SIZES = (1, 9, 200, 3000)
TRUNCATIONS = 8


def module() -> torch.nn.Module:
    return sm.TwoLayerNet([2 * A, -A], [[W], [W]], b=[0.1, 0.2], activation="tanh").to_torch()


def write_valid(fmt: str, folder: Path) -> Path:
    """A valid file of the format (``model.SUFFIX`` or ``data.SUFFIX``)."""
    path = folder / fmt.replace(":", ".")
    if fmt == "model:pt":
        torch.save(module().state_dict(), path)
    elif fmt == "model:pth":
        torch.save(module(), path)  # a whole module: read trusted
    elif fmt == "model:safetensors":
        sm.save_model(sm.TwoLayerNet.from_torch(module()), path)
    elif fmt == "model:npz":
        sm.save_model(sm.TwoLayerNet.from_torch(module()), path)
    elif fmt in ("model:pkl", "model:skops"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator = MLPRegressor(hidden_layer_sizes=(2,), max_iter=5, random_state=0).fit(
                X_DATA, Y_DATA)
        save_estimator(estimator, path)
    elif fmt == "data:npz":
        np.savez(path, X=X_DATA, y=Y_DATA)
    elif fmt == "data:npy":
        np.save(path, X_DATA)
    elif fmt == "data:csv":
        rows = "".join(f"{x[0]!r},{y!r}\n" for x, y in zip(X_DATA, Y_DATA, strict=True))
        path.write_text("x,y\n" + rows)
    return path


def reader(fmt: str, folder: Path, trusted: bool) -> Callable[[Path], object]:
    """How the format is loaded in process."""
    if fmt.startswith("model:"):
        activation = "tanh" if fmt == "model:pt" else None
        return lambda path: load_model(path, activation=activation, trust_pickle=trusted)
    if fmt == "data:npy":
        np.save(folder / "y.npy", Y_DATA)
        return lambda path: load_data(path, folder / "y.npy")
    return load_data


def broken_files(fmt: str, valid: Path, seed: int) -> list[tuple[str, bytes]]:
    """Random bytes of a few sizes and truncations of the valid file, by case name."""
    rng = np.random.default_rng(seed)
    content = valid.read_bytes()
    cases = [(f"random{size}", rng.bytes(size)) for size in RANDOM_SIZES]
    cuts = sorted({1, len(content) - 1, *rng.integers(1, len(content), TRUNCATIONS).tolist()})
    cases += [(f"cut{cut}", content[:cut]) for cut in cuts]
    return cases


FORMATS = ["model:pt", "model:pth", "model:safetensors", "model:npz", "model:pkl",
           "model:skops", "data:npz", "data:npy", "data:csv"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_broken_files_give_a_clean_error_naming_the_file(fmt: str, tmp_path: Path) -> None:
    valid = write_valid(fmt, tmp_path)
    suffix = valid.suffix
    # Pickles are fuzzed trusted where the bytes are a prefix of a legitimate file (random
    # bytes are never unpickled): the untrusted path refuses them before reading.
    for name, content in broken_files(fmt, valid, seed=FORMATS.index(fmt)):
        trusted = fmt in ("model:pth", "model:pkl") and name.startswith("cut")
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content)
        load = reader(fmt, tmp_path, trusted)
        try:
            load(path)
        except sm.SaddlemapError as exc:
            message = str(exc)
            assert path.name in message, (name, message)
            assert "\n" not in message and "allow_pickle" not in message, (name, message)
        else:
            # Only a CSV cut at a line end (or inside its last number) is itself a valid file.
            assert fmt == "data:csv" and name.startswith("cut"), f"{name}{suffix} loaded"


@pytest.mark.parametrize("fmt", FORMATS)
def test_broken_files_through_the_cli_in_process(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    valid = write_valid(fmt, tmp_path)
    broken = tmp_path / f"broken{valid.suffix}"
    broken.write_bytes(valid.read_bytes()[: len(valid.read_bytes()) // 2])
    model, data = _model_and_data(fmt, broken, tmp_path)
    out = tmp_path / "out"
    argv = ["diagnose", str(model), str(data), "--out", str(out), "--json", str(out / "r.json")]
    if fmt == "data:npy":
        argv += ["--y", str(tmp_path / "y.npy")]
    if fmt == "model:pt":
        argv += ["--activation", "tanh"]
    before = sorted(tmp_path.iterdir())
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and broken.name in err[0], err
    assert sorted(tmp_path.iterdir()) == before and not out.exists()


def _model_and_data(fmt: str, broken: Path, folder: Path) -> tuple[Path, Path]:
    """The broken file in its place, a valid file in the other."""
    if fmt.startswith("model:"):
        data = folder / "good_data.npz"
        np.savez(data, X=X_DATA, y=Y_DATA)
        return broken, data
    model = folder / "good_model.npz"
    sm.save_model(sm.TwoLayerNet([A], [[W]]), model)
    if fmt == "data:npy":
        np.save(folder / "y.npy", Y_DATA)
    return model, broken


# One representative broken file per kind of reader, in a real process each.
CLI_CASES = [("model:pt", "cut"), ("model:safetensors", "random"), ("model:skops", "cut"),
             ("data:npz", "cut"), ("data:csv", "random")]


@pytest.mark.parametrize(("fmt", "how"), CLI_CASES, ids=[f for f, _ in CLI_CASES])
def test_broken_files_through_the_cli(fmt: str, how: str, tmp_path: Path) -> None:
    made = tmp_path / "made"
    made.mkdir()
    valid = write_valid(fmt, made)
    content = valid.read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    broken = work / f"broken{valid.suffix}"
    rng = np.random.default_rng(CLI_CASES.index((fmt, how)))
    broken.write_bytes(content[: len(content) // 2] if how == "cut" else rng.bytes(300))
    model, data = _model_and_data(fmt, broken, work)
    before = sorted(p.name for p in work.iterdir())
    args: list[str] = ["diagnose", model.name, data.name, "--out", "out", "--json", "out/r.json"]
    if fmt == "model:pt":
        args += ["--activation", "tanh"]
    start = time.perf_counter()
    out = _run(args, cwd=work)
    elapsed = time.perf_counter() - start
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("saddlemap: error:") and broken.name in lines[0]
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert sorted(p.name for p in work.iterdir()) == before  # nothing written, no out/
    assert elapsed < 60


def _run(args: list[str], cwd: Path) -> Any:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "saddlemap.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env)


def test_the_fuzz_is_deterministic(tmp_path: Path) -> None:
    valid = write_valid("data:npz", tmp_path)
    assert broken_files("data:npz", valid, 3) == broken_files("data:npz", valid, 3)
    assert pickle.dumps(broken_files("data:npz", valid, 3)) != pickle.dumps(
        broken_files("data:npz", valid, 4))
