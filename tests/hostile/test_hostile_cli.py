"""Hostile input through the command line: files that must not run, options checked at parse.

Most cases call ``saddlemap.cli.main`` in this process (cheap); the few that must be a real
process (exit status, stderr, what gets imported) run ``python -m saddlemap.cli``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

import saddlemap as sm
from saddlemap import cli
from saddlemap.io import save_estimator

sio = pytest.importorskip("skops.io")

X_DATA = np.array([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [2.0]])
Y_DATA = np.array([-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])


def run(*args: str, cwd: Path | None = None, python: tuple[str, ...] = ()) -> Any:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *python, "-m", "saddlemap.cli", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``saddlemap ARGV`` in this process: exit code, stdout, stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


class Touch:
    """A pickle payload: unpickling it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def mlp() -> MLPRegressor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPRegressor(hidden_layer_sizes=(3,), activation="tanh", max_iter=20,
                            random_state=0).fit(X_DATA, np.tanh(X_DATA[:, 0]))


def hostile(suffix: str, folder: Path, marker: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model file whose payload touches ``marker`` when its objects are made."""
    path = folder / f"hostile{suffix}"
    if suffix in (".pt", ".pth"):
        torch.save({"payload": Touch(marker)}, path)
    elif suffix == ".npz":
        np.savez(path, a=np.ones(1), W=np.ones((1, 1)), activation=np.array([Touch(marker)]))
    elif suffix == ".skops":
        module = folder / "saddlemap_cli_boom.py"
        module.write_text("import pathlib\nclass Boom:\n    def __setstate__(self, state):\n"
                          "        pathlib.Path(state['marker']).touch()\n")
        monkeypatch.syspath_prepend(str(folder))
        monkeypatch.delitem(sys.modules, "saddlemap_cli_boom", raising=False)
        from saddlemap_cli_boom import Boom  # type: ignore[import-not-found]

        boom = Boom()
        boom.marker = str(marker)
        estimator = mlp()
        estimator.extra_ = boom
        sio.dump(estimator, path)
    else:
        path.write_bytes(pickle.dumps(Touch(marker)))
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, X=X_DATA, y=Y_DATA)
    return path


# ----------------------------------------------------------------------------- loading
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".pkl", ".pickle", ".joblib", ".skops",
                                    ".npz"])
@pytest.mark.parametrize("command", ["diagnose", "compress", "branches"])
def test_a_hostile_model_does_not_run_through_the_cli(
    command: str, suffix: str, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "ran"
    path = hostile(suffix, tmp_path, marker, monkeypatch)
    extra = {"diagnose": [], "compress": ["-o", str(tmp_path / "small.npz")],
             "branches": ["--width", "2"]}[command]
    code, _, err = call([command, str(path), str(data), *extra], capsys)
    line = one_error_line(err)
    assert code == 2 and line.startswith("saddlemap: error:") and str(path) in line
    assert not marker.exists()
    assert not (tmp_path / "small.npz").exists()


def test_a_hostile_torch_file_in_a_real_process(tmp_path: Path, data: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"payload": Touch(marker)}, tmp_path / "model.pt")
    out = run("diagnose", str(tmp_path / "model.pt"), str(data))
    line = one_error_line(out.stderr)
    assert out.returncode == 2 and "refused" in line and "--trust-pickle" in line
    assert "state dict" in line and ".safetensors" in line
    assert not marker.exists()


def test_trust_pickle_loads_a_legitimate_module_and_estimator(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    A, W = 0.610515537972, 1.433931221329
    module = tmp_path / "saddle.pt"
    torch.save(sm.TwoLayerNet([2 * A, -A], [[W], [W]]).to_torch(), module)
    code, _, err = call(["compress", str(module), "-o", str(tmp_path / "s.npz")], capsys)
    assert code == 2 and "--trust-pickle" in one_error_line(err)
    code, out, err = call(["compress", str(module), str(data), "-o", str(tmp_path / "s.npz"),
                           "--trust-pickle", "--quiet"], capsys)
    assert code == 0, err
    assert "width 2 → 1" in out and sm.load_model(tmp_path / "s.npz").net.width == 1

    estimator = mlp()
    (tmp_path / "mlp.pkl").write_bytes(pickle.dumps(estimator))
    for output in ("small.skops", "small.pkl"):
        code, _, err = call(["compress", str(tmp_path / "mlp.pkl"), "-o", str(tmp_path / output),
                             "--tol", "1e-7", "--trust-pickle", "--quiet"], capsys)
        assert code == 0, err
    small = sm.load_model(tmp_path / "small.skops")  # safe: no trust needed
    assert small.kind is sm.ModelKind.SKLEARN
    assert pickle.loads((tmp_path / "small.pkl").read_bytes()).predict(X_DATA).shape == (6,)
    assert (tmp_path / "small.skops").read_bytes()[:2] == b"PK"


def test_skops_output_for_a_torch_model_fails_before_compressing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import saddlemap.diagnosis

    def no_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compress ran")

    monkeypatch.setattr(saddlemap.diagnosis, "compress", no_work)
    sm.save_model(sm.TwoLayerNet([1.0], [[1.0]]), tmp_path / "m.npz")
    code, _, err = call(["compress", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.skops")],
                        capsys)
    assert code == 2 and ".skops is for scikit-learn models" in one_error_line(err)


@pytest.mark.parametrize("suffix", [".pkl", ".skops"])
def test_activation_for_a_scikit_learn_model_is_an_error(
    suffix: str, tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"mlp{suffix}"
    save_estimator(mlp(), path)
    code, _, err = call(["diagnose", str(path), str(data), "--activation", "relu",
                         "--trust-pickle"], capsys)
    line = one_error_line(err)
    assert code == 2 and str(path) in line and "records its own" in line


@pytest.mark.parametrize("command", ["diagnose", "compress", "branches"])
def test_trust_pickle_help_says_what_it_does(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = call([command, "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0 and "--trust-pickle" in text
    assert "unpickling runs code from the file" in text and "only for files you trust" in text


# ------------------------------------------------------------------- options at parse
PARSE_ERRORS = [
    (["diagnose", "--escape-steps", "-5", "m.pt", "d.npz"], "--escape-steps"),
    (["diagnose", "m.pt", "d.npz", "--max-loss-increase", "nan"], "--max-loss-increase"),
    (["diagnose", "m.pt", "d.npz", "--weight-decay", "inf"], "--weight-decay"),
    (["diagnose", "m.pt", "d.npz", "--finetune-steps", "-1"], "--finetune-steps"),
    (["diagnose", "m.pt", "d.npz", "--grad-tol", "-1e-3"], "--grad-tol"),
    (["diagnose", "m.pt", "d.npz", "--zero-tol", "2"], "--zero-tol"),
    (["compress", "m.pt", "-o", "s.pt", "--tol", "nan"], "--tol"),
    (["compress", "m.pt", "-o", "s.onnx"], "unsupported suffix"),
    (["compress", "m.pt", "-o", "no/such/folder/s.pt"], "does not exist"),
    (["branches", "m.pt", "d.npz", "--width", "-1"], "--width"),
    (["branches", "m.pt", "d.npz", "--width", "0"], "--width"),
    (["branches", "m.pt", "d.npz", "--width", "2", "--merge-tol", "inf"], "--merge-tol"),
    (["diagnose", "m.pt", "d.npz", "--json", "no/such/folder/r.json"], "does not exist"),
    (["demo", "--seed", "-1"], "--seed"),
    (["study", "run", "c.toml", "--workers", "0"], "--workers"),
]


@pytest.mark.parametrize(("argv", "fragment"), PARSE_ERRORS,
                         ids=[" ".join(a[:1] + a[-2:]) for a, _ in PARSE_ERRORS])
def test_bad_options_fail_at_parsing_in_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", {})  # any command that ran would fail with KeyError
    code, _, err = call(argv, capsys)
    line = one_error_line(err)
    assert code == 2 and line.startswith(f"saddlemap {argv[0]}") and fragment in line


@pytest.mark.parametrize("command", ["demo", "diagnose"])
def test_an_out_folder_that_is_a_file_fails_before_the_run(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", {})
    existing = tmp_path / "report.txt"
    existing.write_text("keep me")
    inputs = [] if command == "demo" else ["m.pt", "d.npz"]
    code, _, err = call([command, *inputs, "--out", str(existing)], capsys)
    assert code == 2 and "is not a folder" in one_error_line(err)
    assert existing.read_text() == "keep me"


def test_json_may_go_into_the_out_folder_the_command_makes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    code, _, err = call(["diagnose", str(tmp_path / "missing.npz"), "d.npz", "--out", str(out),
                         "--json", str(out / "r.json")], capsys)
    assert code == 2 and "missing.npz: no such file" in one_error_line(err)  # parsed fine


def _numeric_options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every option of every (sub)command whose value is a number."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _numeric_options(sub)
        elif action.option_strings and action.type is not None:
            try:
                number = isinstance(action.type("1"), (int, float))
            except argparse.ArgumentTypeError:
                number = True  # a number type whose range excludes 1
            if number:
                found.append((f"{parser.prog} {action.option_strings[-1]}", action))
    return found


def test_every_numeric_option_refuses_nan_inf_and_negatives() -> None:
    options = _numeric_options(cli._parser())
    assert len(options) >= 12  # tolerances, budgets, steps, width, seed, workers, ...
    accepted = []
    for name, action in options:
        if action.type in (int, float):
            accepted.append(f"{name}: unchecked {action.type.__name__}")
            continue
        for text in ("nan", "inf", "-inf", "1e400", "-1", "x"):
            try:
                action.type(text)
            except argparse.ArgumentTypeError:
                continue
            accepted.append(f"{name} {text}")
    assert accepted == []


# --------------------------------------------------------------------------- import time
def test_argument_errors_do_not_import_torch(tmp_path: Path) -> None:
    out = run("diagnose", "--escape-steps", "-5", "a", "b", python=("-X", "importtime"))
    assert out.returncode == 2
    assert "--escape-steps" in out.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()
                if line.startswith("import time:")}
    assert "saddlemap.errors" in imported  # the check saw the command's imports
    assert "torch" not in imported and not any(name.startswith("torch.") for name in imported)
    # --help, a subcommand's --help and other argument errors, checked in one process
    script = (
        "import sys\nfrom saddlemap import cli\n"
        "for argv in (['--help'], ['diagnose', '--help'], ['compress', 'm', '-o', 'x.onnx'],"
        " ['branches', 'm', 'd', '--width', '0'], ['demo', '--out', sys.argv[1]]):\n"
        "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nprint('ok')\n"
    )
    (tmp_path / "file").write_text("x")
    check = subprocess.run([sys.executable, "-c", script, str(tmp_path / "file")],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert check.returncode == 0 and check.stdout.strip().endswith("ok"), check.stderr
