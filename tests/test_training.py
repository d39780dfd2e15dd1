"""Training: monotone gd with a safe step, L-BFGS to stationarity, Adam, freezing, stopping."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

import saddlemap as sm
from saddlemap import training
from saddlemap.problems import TeacherStudent, teacher_student
from saddlemap.training import (
    History,
    TrainResult,
    TrainState,
    freeze_mask,
    safe_step_size,
    train,
)

EPS = float(np.finfo(np.float64).eps)


def _small(activation: str = "tanh", seed: int = 0, **kwargs: Any) -> TeacherStudent:
    """The brief's small problem: d = 2, teacher width 1, student width 2, n = 13."""
    return teacher_student(1, 2, d=2, n=13, activation=activation, seed=seed, **kwargs)


def _assert_non_increasing(loss: np.ndarray) -> None:
    # gd treats a rise within 16 ulps of R as rounding (the module docstring says so)
    rises = np.diff(loss) - 16 * EPS * np.abs(loss[:-1])
    assert (rises <= 0).all(), f"loss rose by {np.diff(loss).max():.3g}"


# ------------------------------------------------------------------------ gd, safe step
@dataclass(frozen=True)
class GDCase:
    activation: str
    d: int
    teacher_width: int
    width: int
    hidden_bias: bool = False

    @property
    def id(self) -> str:
        bias = "-bias" if self.hidden_bias else ""
        return f"{self.activation}-d{self.d}-r{self.teacher_width}-m{self.width}{bias}"


GD_CASES = [
    GDCase(act, d, r, m, bias)
    for act, bias in (("tanh", False), ("erf", False), ("softplus", True), ("sigmoid", True))
    for d, r, m in ((1, 1, 2), (2, 2, 3), (5, 1, 3))
]


@pytest.mark.parametrize("case", GD_CASES, ids=[c.id for c in GD_CASES])
def test_gd_with_safe_step_never_raises_the_loss(case: GDCase) -> None:
    prob = teacher_student(case.teacher_width, case.width, d=case.d, n=29,
                           activation=case.activation, seed=2, hidden_bias=case.hidden_bias,
                           init_scale=1.0)
    eta = safe_step_size(prob.student, prob.data)
    run = train(prob.student, prob.data, steps=120)
    assert run.stop_reason == "steps" and run.steps == 120 and len(run.history) == 121
    _assert_non_increasing(run.history.loss)
    assert run.loss < run.history.loss[0]
    assert 0 < run.lr <= eta
    assert run.history.loss[0] == pytest.approx(sm.loss(prob.student, prob.data), rel=1e-15)


def test_gd_halves_a_step_that_raises_the_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    prob = teacher_student(2, 3, d=2, n=40, activation="tanh", seed=1)
    eta = safe_step_size(prob.student, prob.data)
    reference = train(prob.student, prob.data, steps=30)
    # start 20 times too large: the first step raises R, is halved, capped by 0.9/λ_max here
    monkeypatch.setattr(training, "safe_step_size", lambda *a, **k: 20 * eta)
    run = train(prob.student, prob.data, steps=30)
    _assert_non_increasing(run.history.loss)
    assert run.lr == eta
    np.testing.assert_array_equal(run.history.loss, reference.history.loss)


def test_gd_stalls_when_no_halving_helps(monkeypatch: pytest.MonkeyPatch) -> None:
    prob = _small()
    monkeypatch.setattr(training, "safe_step_size", lambda *a, **k: 1e40)
    monkeypatch.setattr(training, "_lambda_max", lambda *a, **k: 1e-40)  # no cap either
    run = train(prob.student, prob.data, steps=10)
    assert run.stop_reason == "stalled" and run.steps == 0 and not run.converged
    assert torch.equal(run.net.flatten(), prob.student.flatten())
    assert run.lr == 1e40 / 2**60


def test_gd_explicit_step_is_used_as_given() -> None:
    prob = teacher_student(2, 3, d=2, n=40, activation="tanh", seed=1)
    big = 20 * safe_step_size(prob.student, prob.data)
    run = train(prob.student, prob.data, lr=big, steps=5)
    assert run.lr == big
    assert np.diff(run.history.loss).max() > 0  # too large: the loss rises, as asked


def test_gd_matches_the_update_rule() -> None:
    prob = _small()
    run = train(prob.student, prob.data, lr=0.3, steps=1)
    expected = prob.student.flatten() - 0.3 * sm.gradient(prob.student, prob.data)
    torch.testing.assert_close(run.net.flatten(), expected, rtol=0, atol=0)


# ------------------------------------------------------------------- lbfgs, adam, tols
def test_lbfgs_reaches_a_critical_point() -> None:
    prob = _small("tanh", seed=0)
    run = train(prob.student, prob.data, optimizer="lbfgs", steps=300, grad_tol=1e-8)
    assert run.converged and run.stop_reason == "grad_tol"
    assert run.grad_norm <= 1e-8
    assert float(torch.linalg.vector_norm(sm.gradient(run.net, prob.data))) <= 1e-8
    assert run.steps < 300 and run.lr == 1.0 and run.optimizer == "lbfgs"


def test_adam_decreases_the_loss() -> None:
    prob = teacher_student(2, 3, d=3, n=40, activation="erf", seed=4)
    run = train(prob.student, prob.data, optimizer="adam", steps=150)
    assert run.loss < 0.5 * run.history.loss[0]
    assert run.lr == 1e-2 and run.optimizer == "adam"
    faster = train(prob.student, prob.data, optimizer="adam", lr=5e-2, steps=150)
    assert faster.lr == 5e-2 and faster.loss < run.loss


@pytest.mark.parametrize("optimizer", ["gd", "lbfgs"])
def test_grad_tol_stops_converged(optimizer: str) -> None:
    prob = _small("tanh", seed=0)
    run = train(prob.student, prob.data, optimizer=optimizer,  # type: ignore[arg-type]
                steps=5000, grad_tol=1e-4)
    assert run.stop_reason == "grad_tol" and run.converged
    assert run.grad_norm <= 1e-4 < run.history.grad_norm[:-1].min()


def test_not_converged_when_steps_run_out() -> None:
    prob = _small("tanh", seed=0)
    run = train(prob.student, prob.data, steps=3, grad_tol=1e-12)
    assert run.stop_reason == "steps" and not run.converged


def test_loss_tol_stops() -> None:
    prob = _small("tanh", seed=0)
    start = sm.loss(prob.student, prob.data)
    run = train(prob.student, prob.data, optimizer="lbfgs", steps=500, loss_tol=start / 10)
    assert run.stop_reason == "loss_tol" and run.loss <= start / 10
    assert (run.history.loss[:-1] > start / 10).all()


def test_zero_steps_evaluates_the_start() -> None:
    prob = _small()
    run = train(prob.student, prob.data, steps=0)
    assert run.steps == 0 and run.stop_reason == "steps" and len(run.history) == 1
    assert torch.equal(run.net.flatten(), prob.student.flatten())


def test_diverging_run_stops_at_the_last_finite_state() -> None:
    prob = _small("exp", seed=0)
    run = train(prob.student, prob.data, lr=1e4, steps=50)
    assert run.stop_reason == "diverged" and math.isfinite(run.loss)
    assert bool(torch.isfinite(run.net.flatten()).all())


# ------------------------------------------------------------------------------- freeze
@dataclass(frozen=True)
class FreezeCase:
    optimizer: str
    freeze: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)


FREEZE_CASES = [
    FreezeCase("gd", ("a",)),
    FreezeCase("adam", ("a",)),
    FreezeCase("lbfgs", ("a",)),
    FreezeCase("gd", ("W",)),
    FreezeCase("lbfgs", ("W", "b"), {"hidden_bias": True}),
    FreezeCase("adam", ("a", "c"), {"hidden_bias": True, "output_bias": True}),
    FreezeCase("lbfgs", ("c",), {"output_bias": True}),
]


@pytest.mark.parametrize("case", FREEZE_CASES, ids=lambda c: f"{c.optimizer}-{'+'.join(c.freeze)}")
def test_frozen_parameters_stay_exactly_fixed(case: FreezeCase) -> None:
    prob = teacher_student(2, 3, d=2, n=13, activation="tanh", seed=1, **case.kwargs)
    net0 = prob.student
    seen: list[TrainState] = []
    run = train(net0, prob.data, optimizer=case.optimizer,  # type: ignore[arg-type]
                steps=15, freeze=case.freeze, callbacks=[seen.append])
    for name in ("a", "W", "b", "c"):
        before, after = getattr(net0, name), getattr(run.net, name)
        if before is None:
            continue
        if name in case.freeze:
            assert torch.equal(before, after), name
        else:
            assert not torch.equal(before, after), name
    mask = freeze_mask(net0, case.freeze)
    for state in seen:
        assert not state.grad[mask == 0].any()


def test_freeze_mask_layout() -> None:
    net = sm.TwoLayerNet([[1.0, 2.0]], [[3.0, 4.0]], b=[5.0], c=[6.0, 7.0])
    theta = net.flatten()  # [a (2), w (2), b, c (2)]
    assert theta.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    for names, kept in [((), [1, 1, 1, 1, 1, 1, 1]), (("a",), [0, 0, 1, 1, 1, 1, 1]),
                        (("W",), [1, 1, 0, 0, 1, 1, 1]), (("b",), [1, 1, 1, 1, 0, 1, 1]),
                        (("c",), [1, 1, 1, 1, 1, 0, 0]), ("a", [0, 0, 1, 1, 1, 1, 1])]:
        assert freeze_mask(net, names).tolist() == kept, names


@pytest.mark.parametrize(("freeze", "message"), [
    (("x",), "unknown parameter 'x'"),
    (("w",), "unknown parameter 'w'"),
    (("b",), "no hidden bias"),
    (("a", "c"), "no output bias"),
])
def test_bad_freeze(freeze: tuple[str, ...], message: str) -> None:
    prob = _small()
    with pytest.raises(ValueError, match=message):
        train(prob.student, prob.data, steps=1, freeze=freeze)


# ------------------------------------------------------------------ callbacks, history
@pytest.mark.parametrize("optimizer", ["gd", "adam", "lbfgs"])
def test_callback_stops_at_its_step(optimizer: str) -> None:
    prob = _small("tanh", seed=3)
    seen: list[TrainState] = []

    def stop_at_seven(state: TrainState) -> bool:
        seen.append(state)
        return state.step == 7

    run = train(prob.student, prob.data, optimizer=optimizer,  # type: ignore[arg-type]
                steps=100, callbacks=[stop_at_seven, lambda s: None], record_every=5)
    assert run.stop_reason == "callback" and run.steps == 7
    assert [s.step for s in seen] == list(range(8))
    assert run.net is seen[-1].net
    assert run.history.step.tolist() == [0, 5, 7]
    for state in seen:
        assert state.loss == pytest.approx(sm.loss(state.net, prob.data), rel=1e-14)
        torch.testing.assert_close(state.grad, sm.gradient(state.net, prob.data))
        assert state.grad_norm == pytest.approx(float(torch.linalg.vector_norm(state.grad)))


@pytest.mark.parametrize(("steps", "record_every", "recorded"), [
    (10, 1, list(range(11))),
    (10, 3, [0, 3, 6, 9, 10]),
    (9, 3, [0, 3, 6, 9]),
    (10, 20, [0, 10]),
    (0, 5, [0]),
])
def test_history_records(steps: int, record_every: int, recorded: list[int]) -> None:
    prob = _small()
    run = train(prob.student, prob.data, steps=steps, record_every=record_every)
    history = run.history
    assert isinstance(history, History) and len(history) == len(recorded)
    assert history.step.tolist() == recorded and history.step.dtype == np.int64
    assert history.loss.shape == history.grad_norm.shape == (len(recorded),)
    full = train(prob.student, prob.data, steps=steps)
    np.testing.assert_array_equal(history.loss, full.history.loss[recorded])


# ------------------------------------------------------------- determinism, step size
def test_same_inputs_same_result_lanczos_step() -> None:
    prob = teacher_student(2, 8, d=10, n=60, activation="erf", seed=1)  # P = 88: Lanczos
    assert prob.student.num_params > training.DENSE_STEP_LIMIT
    runs = [train(prob.student, prob.data, steps=20, seed=3) for _ in range(2)]
    assert runs[0].lr == runs[1].lr
    assert torch.equal(runs[0].net.flatten(), runs[1].net.flatten())
    np.testing.assert_array_equal(runs[0].history.loss, runs[1].history.loss)
    lam = sm.spectrum(prob.student, prob.data, method="dense").max
    assert safe_step_size(prob.student, prob.data, seed=3) == pytest.approx(0.9 / lam, rel=1e-7)


def test_net_is_not_modified() -> None:
    prob = _small()
    before = prob.student.flatten().clone()
    for optimizer in ("gd", "adam", "lbfgs"):
        train(prob.student, prob.data, optimizer=optimizer, steps=3)  # type: ignore[arg-type]
    assert torch.equal(prob.student.flatten(), before)


def test_progress_bar_does_not_change_the_result(capsys: pytest.CaptureFixture[str]) -> None:
    prob = _small()
    quiet = train(prob.student, prob.data, steps=10)
    shown = train(prob.student, prob.data, steps=10, progress=True)
    np.testing.assert_array_equal(quiet.history.loss, shown.history.loss)
    assert "train" in capsys.readouterr().err
    assert isinstance(shown, TrainResult)


def test_step_size_needs_positive_curvature() -> None:
    # a = 0, w = 0 with Σ y_i x_i = 0: the Hessian is exactly 0
    net = sm.TwoLayerNet([0.0], [[0.0]], activation="tanh")
    data = sm.Dataset([[1.0], [1.0]], [1.0, -1.0])
    assert not sm.hessian(net, data).any()
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        safe_step_size(net, data)
    with pytest.raises(ValueError, match="pass lr explicitly"):
        train(net, data)
    assert train(net, data, lr=0.1, steps=2).stop_reason == "grad_tol"  # ∇R = 0 here


@pytest.mark.parametrize("safety", [0.0, -0.5, 1.5, math.nan])
def test_bad_safety(safety: float) -> None:
    prob = _small()
    with pytest.raises(ValueError, match="safety"):
        safe_step_size(prob.student, prob.data, safety=safety)


# -------------------------------------------------------------------------- bad inputs
BAD_ARGS: list[tuple[dict[str, Any], str]] = [
    ({"optimizer": "sgd"}, "optimizer"),
    ({"steps": -1}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1e-3}, "lr"),
    ({"lr": math.inf}, "lr"),
    ({"optimizer": "adam", "lr": 0.0}, "lr"),
    ({"record_every": 0}, "record_every"),
    ({"grad_tol": -1.0}, "grad_tol"),
    ({"grad_tol": math.nan}, "grad_tol"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_ARGS, ids=[str(k) for k, _ in BAD_ARGS])
def test_bad_arguments(kwargs: dict[str, Any], name: str) -> None:
    prob = _small()
    with pytest.raises(ValueError, match=name):
        train(prob.student, prob.data, **kwargs)


def test_data_that_do_not_fit() -> None:
    prob = _small()
    other = teacher_student(1, 2, d=3, n=5).data
    with pytest.raises(sm.DataError, match="d=3"):
        train(prob.student, other)
