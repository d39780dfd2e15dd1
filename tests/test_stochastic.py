"""Minibatch training and plateaus under minibatch noise."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import saddlemap as sm
from saddlemap.monitor import PlateauMonitor
from saddlemap.problems import teacher_student
from saddlemap.training import MOMENTUM, TrainState, train

EPS = float(np.finfo(np.float64).eps)
OPTIMIZERS = ["gd", "momentum", "adam"]


def _small(seed: int = 0) -> sm.problems.TeacherStudent:
    return teacher_student(2, 3, d=3, n=13, activation="tanh", seed=seed)


def _histories_equal(a: sm.TrainResult, b: sm.TrainResult) -> bool:
    ha, hb = a.history, b.history
    return all(np.array_equal(getattr(ha, f), getattr(hb, f))
               for f in ("step", "loss", "grad_norm", "eval_step", "eval_loss", "eval_grad_norm"))


# ---------------------------------------------------------------------------- training
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_same_seed_same_run(optimizer: str) -> None:
    prob = _small()
    kwargs: dict[str, Any] = {"optimizer": optimizer, "lr": 0.05, "steps": 60, "batch_size": 4}
    a = train(prob.student, prob.data, seed=3, **kwargs)
    b = train(prob.student, prob.data, seed=3, **kwargs)
    assert _histories_equal(a, b) and torch.equal(a.net.flatten(), b.net.flatten())
    c = train(prob.student, prob.data, seed=4, **kwargs)
    assert not np.array_equal(a.history.loss, c.history.loss)


@pytest.mark.parametrize("batch_size", [None, 13, 100])
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam", "lbfgs"])
def test_full_batch_is_unchanged(optimizer: str, batch_size: int | None) -> None:
    prob = _small()
    plain = train(prob.student, prob.data, optimizer=optimizer, steps=25)  # type: ignore[arg-type]
    run = train(prob.student, prob.data, optimizer=optimizer,  # type: ignore[arg-type]
                steps=25, batch_size=batch_size, eval_every=3)
    assert run.batch_size is None and run.history.eval_step is None
    assert _histories_equal(plain, run) and run.loss == plain.loss


def _replayed_batches(n: int, size: int, seed: int, count: int) -> list[torch.Tensor]:
    """The documented sampler: epochs of randperm(n) from a generator seeded with ``seed``."""
    gen, out = torch.Generator().manual_seed(seed), []
    while len(out) < count:
        perm = torch.randperm(n, generator=gen)
        out.extend(perm[i * size:(i + 1) * size] for i in range(n // size))
    return out[:count]


def test_sgd_follows_the_update_rule() -> None:
    prob = _small()
    lr, steps, B = 0.1, 7, 5  # 13 = 2 · 5 + 3: three samples left out of each epoch
    run = train(prob.student, prob.data, lr=lr, steps=steps, batch_size=B, seed=9,
                freeze=["a"])
    mask = sm.training.freeze_mask(prob.student, ["a"])
    theta = prob.student.flatten()
    losses = []
    for idx in _replayed_batches(13, B, 9, steps + 1)[:steps]:
        sub = prob.data.subset(idx)
        losses.append(sm.loss(prob.student.unflatten(theta), sub))
        theta = theta - lr * sm.gradient(prob.student.unflatten(theta), sub) * mask
    torch.testing.assert_close(run.net.flatten(), theta, rtol=0, atol=64 * EPS)
    np.testing.assert_allclose(run.history.loss[:steps], losses, rtol=64 * EPS)


def test_momentum_follows_the_heavy_ball_rule() -> None:
    prob = _small()
    lr, steps = 0.05, 6
    run = train(prob.student, prob.data, optimizer="momentum", lr=lr, steps=steps)
    theta, u = prob.student.flatten(), torch.zeros(prob.student.num_params)
    for _ in range(steps):
        u = MOMENTUM * u + sm.gradient(prob.student.unflatten(theta), prob.data)
        theta = theta - lr * u
    torch.testing.assert_close(run.net.flatten(), theta, rtol=0, atol=256 * EPS)


EVALUATIONS = [(0, 4, [0]), (9, 4, [0, 4, 8, 9]), (8, 4, [0, 4, 8]), (5, 1, [0, 1, 2, 3, 4, 5])]


@pytest.mark.parametrize(("steps", "every", "expected"), EVALUATIONS)
def test_evaluations(steps: int, every: int, expected: list[int]) -> None:
    prob = _small()
    held_out = teacher_student(2, 3, d=3, n=7, activation="tanh", seed=0).data  # same teacher
    states: list[TrainState] = []
    run = train(prob.student, prob.data, lr=0.1, steps=steps, batch_size=4, eval_every=every,
                eval_data=held_out, callbacks=[states.append])  # type: ignore[list-item]
    h = run.history
    assert h.eval_step is not None and h.eval_step.tolist() == expected
    assert h.step.tolist() == list(range(steps + 1))  # the minibatch loss at every step
    for state in states:
        assert (state.eval_loss is not None) == (state.step in expected)
        if state.eval_loss is not None:
            assert state.eval_loss == sm.loss(state.net, held_out)
            assert state.full_loss == state.eval_loss and state.batch_size == 4
    assert run.loss == sm.loss(run.net, held_out)
    assert run.grad_norm == float(torch.linalg.vector_norm(sm.gradient(run.net, held_out)))


def test_tolerances_are_checked_on_the_evaluations() -> None:
    prob = _small()
    start = sm.loss(prob.student, prob.data)
    run = train(prob.student, prob.data, lr=0.1, steps=2000, batch_size=4, eval_every=7,
                loss_tol=0.5 * start)
    assert run.stop_reason == "loss_tol" and run.steps % 7 == 0
    assert run.loss <= 0.5 * start
    assert run.history.eval_loss is not None and (run.history.eval_loss[:-1] > 0.5 * start).all()


def test_gd_without_lr_keeps_the_initial_safe_step() -> None:
    prob = _small()
    run = train(prob.student, prob.data, steps=20, batch_size=4)
    assert run.lr == sm.safe_step_size(prob.student, prob.data)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"eval_every": 0}, "eval_every"),
    ({"optimizer": "lbfgs", "batch_size": 4}, "lbfgs"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD, ids=[str(k) for k, _ in BAD])
def test_bad_arguments(kwargs: dict[str, Any], name: str) -> None:
    prob = _small()
    with pytest.raises(sm.OptionError, match=name):
        train(prob.student, prob.data, lr=0.1, steps=3, **kwargs)


def test_eval_data_that_do_not_fit() -> None:
    prob = _small()
    with pytest.raises(sm.DataError, match="d=2"):
        train(prob.student, prob.data, lr=0.1, steps=3, batch_size=4,
              eval_data=teacher_student(1, 1, d=2, n=5).data)


# ----------------------------------------------------------------------------- monitor
def test_noisy_loss_without_plateau_yields_none() -> None:
    # a minibatch run seen by the monitor: a noisy loss R(1 + ξ), ξ ~ 0.5 N(0, 1), at every
    # step, its smooth full-batch value R = e^{−0.002 t} every 10 steps: no plateau, and the
    # monitor records only the evaluations
    rng = np.random.default_rng(0)
    net = sm.TwoLayerNet([1.0], [[0.5]])
    grad = torch.zeros(net.num_params)
    mon = PlateauMonitor(sm.Dataset(np.zeros((3, 1)), np.zeros(3)), refine=False, window=50,
                         min_length=25)
    for t in range(3000):
        smooth = math.exp(-0.002 * t)
        noisy = smooth * (1 + 0.5 * rng.standard_normal())
        evaluated = smooth if t % 10 == 0 else None
        mon(TrainState(t, net, noisy, grad, 1.0, batch_size=8, eval_loss=evaluated,
                       eval_grad_norm=None if evaluated is None else 1.0))
    assert mon.finish() == []
    assert mon.history["step"].tolist() == list(range(0, 3000, 10))


def test_min_length_counts_steps_not_observations() -> None:
    # the same staircase observed every step and every 5 steps: the same plateau
    def staircase(t: int) -> float:
        flat = min(max(t - 300, 0), 400)
        return 0.99 ** (t - flat)

    spans = []
    for stride in (1, 5):
        mon = PlateauMonitor(sm.Dataset(np.zeros((3, 1)), np.zeros(3)), refine=False,
                             window=50, min_length=100)
        net = sm.TwoLayerNet([1.0], [[0.5]])
        for t in range(0, 1200, stride):
            mon.observe(t, net, loss=staircase(t), grad_norm=1.0)
        spans.append([(p.start, p.end) for p in mon.finish()])
    assert len(spans[0]) == len(spans[1]) == 1
    (s1, e1), (s5, e5) = spans[0][0], spans[1][0]
    assert abs(s1 - s5) <= 5 and abs(e1 - e5) <= 5


# ------------------------------------------------------------------- Saad–Solla, B = 32
SEEDS = range(5)


def _committee(seed: int, batch_size: int | None, refine: bool) -> list[sm.Plateau]:
    """Soft committee (erf, orthonormal teacher of width 2, a = 1), η = 0.1, init 1e-3."""
    prob = teacher_student(2, 2, d=8, n=400, activation="erf", orthonormal=True,
                           init_scale=1e-3, seed=seed)
    student = prob.student.replace(a=torch.ones(2, 1, dtype=torch.float64))
    mon = PlateauMonitor(prob.data, window=50, rtol=1e-2, min_length=25, width_tol=0.2,
                         every=5, refine=refine)
    train(student, prob.data, steps=1000, lr=0.1, freeze=["a"], callbacks=[mon],
          loss_tol=1e-5, batch_size=batch_size, eval_every=5, seed=seed)
    return mon.finish()


def test_saad_solla_plateau_under_minibatch_noise() -> None:
    full = {s: _committee(s, None, refine=s == 0) for s in SEEDS}
    noisy = {s: _committee(s, 32, refine=s == 0) for s in SEEDS}
    for s in SEEDS:
        assert len(full[s]) == len(noisy[s]) == 1, (s, full[s], noisy[s])
    # the plateau is found on the evaluated loss and has the full-batch run's verdict
    (p,), (q,) = full[0], noisy[0]
    assert p.verdict is q.verdict is sm.PlateauVerdict.NARROWER_SADDLE
    assert q.kind is sm.Kind.STRICT_SADDLE and q.accepted and q.frozen == ("a",)
    assert q.batch_size == 32 and p.batch_size is None and p.noise_along_escape is None
    assert q.lambda_min is not None and q.lambda_min < 0
    assert q.noise_along_escape is not None and q.noise_along_escape > 0
    # shorter on average over seeds (measured: 275.4 steps full-batch, 269.0 at B = 32)
    mean_full = np.mean([full[s][0].duration for s in SEEDS])
    mean_noisy = np.mean([noisy[s][0].duration for s in SEEDS])
    assert mean_noisy < mean_full, (mean_noisy, mean_full)
