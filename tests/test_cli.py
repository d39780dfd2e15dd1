"""The command line, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import saddlemap as sm

A, W = 0.610515537972, 1.433931221329
X_WORKED = np.array([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [2.0]])
Y_WORKED = np.array([-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "saddlemap.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    data = tmp_path / "data.npz"
    np.savez(data, X=X_WORKED, y=Y_WORKED)
    saddle = tmp_path / "saddle.pt"
    torch.save(sm.TwoLayerNet([2 * A, -A], [[W], [W]]).to_torch(), saddle)
    sm.save_model(sm.TwoLayerNet([0.3], [[1.0]]), tmp_path / "moving.npz")
    star = tmp_path / "star.npz"
    sm.save_model(sm.TwoLayerNet([A], [[W]]), star)
    return {"data": data, "saddle": saddle, "star": star, "dir": tmp_path}


def test_version_starts_fast() -> None:
    t0 = time.perf_counter()
    out = run("--version")
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0 and out.stdout.strip() == f"saddlemap {sm.__version__}"
    assert elapsed < 1.0  # no torch import on this path


def test_help_lists_commands_and_examples() -> None:
    out = run("--help")
    assert out.returncode == 0
    for word in ("demo", "diagnose", "compress", "branches", "examples:"):
        assert word in out.stdout


@pytest.mark.e2e
def test_diagnose_writes_report_and_json(files: dict[str, Path]) -> None:
    report = files["dir"] / "report"
    out = run("diagnose", str(files["saddle"]), str(files["data"]), "--out", str(report),
              "--json", "-", "--escape-steps", "100", "--trust-pickle")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["classification"]["kind"] == "strict saddle"
    assert record["reduction"]["minimal_width"] == 1
    assert (report / "report.html").stat().st_size > 0
    assert (report / "report.json").exists() and (report / "spectrum.png").exists()


def test_compress_writes_a_smaller_model(files: dict[str, Path]) -> None:
    small = files["dir"] / "small.pt"
    out = run("compress", str(files["saddle"]), str(files["data"]), "-o", str(small),
              "--trust-pickle")  # saddle.pt is a whole pickled module
    assert out.returncode == 0, out.stderr
    assert "width 2 → 1" in out.stdout
    net = sm.load_model(small, trust_pickle=True).net
    assert net.width == 1
    torch.testing.assert_close(net(torch.tensor(X_WORKED)),
                               sm.TwoLayerNet([A], [[W]])(torch.tensor(X_WORKED)),
                               rtol=0, atol=1e-12)


def test_branches_table(files: dict[str, Path]) -> None:
    out = run("branches", str(files["star"]), str(files["data"]), "--width", "3", "--json", "-")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["r"] == 1 and len(record["branches"]) == 3
    assert any(b["verdict"] == "saddle branch" for b in record["branches"])


@pytest.mark.e2e
def test_demo_runs_and_writes_a_report(tmp_path: Path) -> None:
    out = run("demo", "--out", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr
    assert "Smaller model: yes" in out.stdout
    assert (tmp_path / "demo" / "report.html").exists()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: ["diagnose", str(d / "missing.pt"), str(d / "data.npz")], "missing.pt"),
        (lambda d: ["diagnose", str(d / "corrupt.pt"), str(d / "data.npz")], "corrupt.pt"),
        (lambda d: ["diagnose", str(d / "deep.pt"), str(d / "data.npz"), "--trust-pickle"],
         "not a two-layer network"),
        (lambda d: ["diagnose", str(d / "elu.pt"), str(d / "data.npz"), "--trust-pickle"],
         "ELU"),
        (lambda d: ["diagnose", str(d / "saddle.pt"), str(d / "bad.npz"), "--trust-pickle"],
         "samples"),
        (lambda d: ["diagnose", str(d / "saddle.pt"), str(d / "nan.npz"), "--trust-pickle"],
         "NaN"),
        (lambda d: ["branches", str(d / "moving.npz"), str(d / "data.npz"), "--width", "3"],
         "not a critical point"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code(files: dict[str, Path], make, match) -> None:
    d = files["dir"]
    (d / "corrupt.pt").write_bytes(b"not a torch file")
    torch.save(torch.nn.Sequential(torch.nn.Linear(1, 3), torch.nn.Tanh(), torch.nn.Linear(3, 3),
                                   torch.nn.Tanh(), torch.nn.Linear(3, 1)), d / "deep.pt")
    torch.save(torch.nn.Sequential(torch.nn.Linear(1, 3), torch.nn.ELU(), torch.nn.Linear(3, 1)),
               d / "elu.pt")
    np.savez(d / "bad.npz", X=X_WORKED, y=Y_WORKED[:4])
    np.savez(d / "nan.npz", X=np.array([[np.nan]] * 6), y=Y_WORKED)
    out = run(*make(d))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saddlemap: error:"), out.stderr
    assert match in lines[0]


@pytest.mark.e2e
def test_sklearn_pickle_round_trip_through_compress(tmp_path: Path) -> None:
    import pickle
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    gen = np.random.default_rng(0)
    X = gen.standard_normal((40, 3))
    y = np.tanh(X @ np.array([1.0, -1.0, 0.5]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPRegressor(hidden_layer_sizes=(5,), activation="tanh", max_iter=50,
                           random_state=0).fit(X, y)
    (tmp_path / "mlp.pkl").write_bytes(pickle.dumps(mlp))
    np.savez(tmp_path / "d.npz", X=X, y=y)
    out = run("compress", str(tmp_path / "mlp.pkl"), str(tmp_path / "d.npz"), "-o",
              str(tmp_path / "small.pkl"), "--tol", "1e-7",  # exact: the same outputs
              "--trust-pickle")
    assert out.returncode == 0, out.stderr
    small = pickle.loads((tmp_path / "small.pkl").read_bytes())
    np.testing.assert_allclose(small.predict(X), mlp.predict(X), rtol=0, atol=1e-12)
    budget = run("compress", str(tmp_path / "mlp.pkl"), str(tmp_path / "d.npz"), "-o",
                 str(tmp_path / "budget.pkl"), "--max-loss-increase", "0.05", "--trust-pickle")
    assert budget.returncode == 0, budget.stderr
    smaller = pickle.loads((tmp_path / "budget.pkl").read_bytes())
    mse = lambda model: float(np.mean((model.predict(X) - y) ** 2))  # noqa: E731
    assert mse(smaller) <= 1.05 * mse(mlp) + 1e-12
    diag = run("diagnose", str(tmp_path / "mlp.pkl"), str(tmp_path / "d.npz"), "--json", "-",
               "--escape-steps", "0", "--trust-pickle")
    assert diag.returncode == 0, diag.stderr
    assert json.loads(diag.stdout)["model"]["width"] == 5


@pytest.mark.e2e
def test_study_run_and_summary(tmp_path: Path) -> None:
    config = tmp_path / "study.toml"
    config.write_text(
        "steps = 150\nwindow = 30\nmin_length = 15\n\n[grid]\nactivation = [\"erf\"]\n"
        "teacher_width = [1]\nwidth = [1, 2]\nd = [3]\nn = [30]\nseeds = 2\n"
    )
    db = tmp_path / "study.sqlite"
    out = run("study", "run", str(config), "--db", str(db), "--engine", "serial", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "4 runs: 0 already done, 4 run now, 0 failed" in out.stdout
    again = run("study", "run", str(config), "--db", str(db), "--engine", "serial", "--quiet")
    assert "4 already done, 0 run now" in again.stdout
    summary = run("study", "summary", str(db), "--csv", str(tmp_path / "csv"), "--plot",
                  str(tmp_path / "s.png"))
    assert summary.returncode == 0, summary.stderr
    assert "erf" in summary.stdout and (tmp_path / "csv" / "runs.csv").exists()
    assert (tmp_path / "s.png").stat().st_size > 0
    by_width = run("study", "summary", str(db), "--by", "width,optimiser")
    assert by_width.returncode == 0, by_width.stderr
    header = by_width.stdout.splitlines()[0]
    assert "width" in header and "optimizer" in header and "activation" not in header
    unknown = run("study", "summary", str(db), "--by", "colour")
    assert unknown.returncode == 2 and "unknown summary key 'colour'" in unknown.stderr
    capped = run("study", "run", str(config), "--db", str(tmp_path / "y.sqlite"),
                 "--max-runs", "3")  # 4 runs in the grid: refused before any work
    assert capped.returncode == 2 and "max_runs" in capped.stderr, capped.stderr
    assert not (tmp_path / "y.sqlite").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nwidth = [1]\nteacher_width = [2]\n")
    err = run("study", "run", str(bad), "--db", str(tmp_path / "x.sqlite"))
    assert err.returncode == 2 and err.stderr.startswith("saddlemap: error:")
