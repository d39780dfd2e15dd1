"""PlateauMonitor: detection on constructed losses, real runs, torch loops, Saad–Solla."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from conftest import feed_monitor

import saddlemap as sm
from saddlemap.monitor import Plateau, PlateauMonitor

DUMMY = sm.Dataset(np.zeros((3, 1)), np.zeros(3))


def _staircase(edges: list[tuple[int, int]], total: int, rate: float = 0.01) -> np.ndarray:
    """Loss falling by ``rate`` per step, except constant on each [S, E]."""
    loss, value = np.empty(total), 1.0
    for t in range(total):
        loss[t] = value
        if not any(s <= t < e for s, e in edges):
            value *= 1 - rate
    return loss


def test_constructed_plateaus_exact() -> None:
    edges = [(200, 500), (700, 1100)]
    mon = feed_monitor(_staircase(edges, 1400), window=50, rtol=1e-3, min_length=20)
    # The stall is measured against the drop so far (R0 − R): at R/R0 ≈ 2 % the five steps
    # of 1 % decrease next to the second flat stretch count as stalled too.
    assert [(p.start, p.end) for p in mon.plateaus] == [(200, 501), (695, 1106)]
    assert all(isinstance(p, Plateau) and p.verdict is sm.PlateauVerdict.NOT_REFINED
               for p in mon.plateaus)
    assert len(mon.events) == 4  # a start and an end line each
    h = mon.history
    assert set(h) == {"step", "loss", "grad_norm", "width"} and h["loss"].size == 1400


def test_plateau_open_at_finish_and_min_length() -> None:
    mon = feed_monitor(_staircase([(300, 10**6)], 600), window=50, min_length=20)
    # stalled relative to the drop so far one step into the flat stretch (at R/R0 ≈ 5 %)
    assert [(p.start, p.end) for p in mon.plateaus] == [(299, 599)]
    # a flat stretch shorter than window + min_length is no plateau
    mon = feed_monitor(_staircase([(300, 360)], 600), window=50, min_length=20)
    assert mon.plateaus == []


def test_no_plateau_on_steady_decrease() -> None:
    steps = np.arange(3000)
    assert feed_monitor(np.exp(-0.001 * steps) + 0.0, window=100, rtol=1e-3).plateaus == []
    assert feed_monitor(1.0 / (1 + 0.01 * steps), window=100, rtol=1e-3).plateaus == []


def test_callback_on_train_run() -> None:
    prob = sm.teacher_student(1, 3, d=2, n=20, activation="tanh", seed=1)
    mon = PlateauMonitor(prob.data, window=20, min_length=10, every=7)
    run = sm.train(prob.student, prob.data, steps=300, callbacks=[mon])
    assert run.steps == 300  # the monitor never stops training
    mon.finish()
    h = mon.history
    np.testing.assert_array_equal(h["step"], np.arange(301))
    np.testing.assert_allclose(h["loss"][[0, -1]], run.history.loss[[0, -1]])
    assert h["width"].dtype == np.int64 and 1 <= h["width"].min() <= h["width"].max() <= 3
    # width is forward-filled between evaluations every 7 steps
    assert np.all(h["width"][1:7] == h["width"][0])
    for p in mon.plateaus:
        assert 0 <= p.start < p.end <= 300 and p.critical_point is not None


def test_observe_plain_torch_loop() -> None:
    torch.manual_seed(0)
    X = torch.randn(64, 3)
    y = torch.tanh(X @ torch.tensor([[1.0], [-0.5], [0.3]]))
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    model = model.double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = PlateauMonitor(sm.Dataset(X, y), window=10, min_length=5, every=5)
    losses, grads = [], []
    for step in range(40):
        opt.zero_grad()
        out = 0.5 * ((model(X) - y) ** 2).mean()  # R = (1/2n) Σ (g − y)²
        out.backward()
        losses.append(out.item())
        grads.append(float(torch.cat([q.grad.flatten() for q in model.parameters()]).norm()))
        if step % 2:
            mon.observe(step, model)  # loss and gradient norm computed by the monitor
        else:
            mon.observe(step, model, loss=out.item())
        opt.step()
    mon.finish()
    h = mon.history
    np.testing.assert_array_equal(h["step"], np.arange(40))
    np.testing.assert_allclose(h["loss"], losses, rtol=1e-10)
    np.testing.assert_allclose(h["grad_norm"][1::2], grads[1::2], rtol=1e-8)
    assert h["width"].max() <= 4


def _saad_solla(init_scale: float) -> PlateauMonitor:
    """Soft committee machine: erf, orthonormal teacher of width 2, output weights fixed to 1."""
    prob = sm.teacher_student(2, 2, d=8, n=400, activation="erf", orthonormal=True,
                              init_scale=init_scale, seed=0)
    student = prob.student.replace(a=torch.ones(2, 1, dtype=torch.float64))
    mon = PlateauMonitor(prob.data, window=50, rtol=1e-2, min_length=25, width_tol=0.2, every=5)
    sm.train(student, prob.data, steps=3000, lr=0.05, freeze=["a"], callbacks=[mon],
             loss_tol=1e-5)
    mon.finish()
    return mon


def test_saad_solla_plateau() -> None:
    durations = []
    for scale in (1e-1, 1e-2, 1e-3):
        mon = _saad_solla(scale)
        symmetric = [p for p in mon.plateaus if p.verdict is sm.PlateauVerdict.NARROWER_SADDLE]
        durations.append(max((p.duration for p in symmetric), default=0))
        if scale < 1e-1:
            (p,) = symmetric
            assert p.width == 1 and p.kind is not None and p.kind.is_saddle
            # refined in the trained subspace (output weights frozen by the trainer)
            assert p.frozen == ("a",) and p.critical_point is None and p.accepted
            ref = p.refined
            assert ref is not None and torch.equal(ref.a, torch.ones_like(ref.a))
            W = ref.W
            assert float((W[0] - W[1]).norm()) < 1e-6  # on the splitting branch
            assert sm.reduce(ref, tol=1e-6).width == 1
    assert durations[0] < durations[1] < durations[2], durations


def test_plot_headless(tmp_path: object) -> None:
    import matplotlib.pyplot as plt

    mon = feed_monitor(_staircase([(200, 500)], 800), window=50, min_length=20)
    ax = sm.plot_plateaus(mon)
    path = tmp_path / "monitor.png"  # type: ignore[operator]
    ax.figure.savefig(path)
    plt.close(ax.figure)
    assert path.stat().st_size > 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        PlateauMonitor(DUMMY, window=0)
    with pytest.raises(ValueError):
        PlateauMonitor(DUMMY, rtol=-1.0)
