"""Saddle classification, Fukumizu–Amari rule, saddle branches, escapes (docs/theory.md §7)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import saddlemap as sm
from saddlemap.saddles import classify, splitting_rule
from saddlemap.verdicts import BranchVerdict, EscapeMethod, Kind, SplitRegion

WORKED = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
A, W = 0.610515537972, 1.433931221329


def _split(ratio: float) -> sm.TwoLayerNet:
    return sm.TwoLayerNet([ratio * A, (1 - ratio) * A], [[W], [W]])


@pytest.mark.parametrize(
    ("net", "kind"),
    [
        (_split(2.0), Kind.STRICT_SADDLE), (_split(-1.0), Kind.STRICT_SADDLE),
        (_split(0.5), Kind.LOCAL_MINIMUM), (_split(0.0), Kind.NON_STRICT_SADDLE),
        (_split(1.0), Kind.NON_STRICT_SADDLE),
        (sm.TwoLayerNet([A, 0.0], [[W], [0.0]]), Kind.STRICT_SADDLE),  # null neuron at 0
        (sm.TwoLayerNet([A], [[W]]), Kind.LOCAL_MINIMUM),
        (sm.TwoLayerNet([0.3], [[1.0]]), Kind.NOT_CRITICAL),
    ],
)
def test_worked_example_kinds_and_witnesses(net: sm.TwoLayerNet, kind: Kind) -> None:
    found = classify(net, WORKED)
    assert found.kind is kind, found.summary()
    H = sm.hessian(net, WORKED)
    if found.direction is not None:
        assert float(found.direction @ H @ found.direction) < 0
        assert found.curvature == pytest.approx(float(found.direction @ H @ found.direction))
    if kind is Kind.NON_STRICT_SADDLE:
        assert found.curve is not None
        lam = np.linalg.eigvalsh(H.numpy())
        assert lam[0] > -1e-9 * lam[-1]  # PSD: random perturbations would not see it
        for t in (0.05, -0.1):
            drop = sm.loss(net, WORKED) - sm.loss(found.curve.point(t), WORKED)
            assert drop > 0 and drop == pytest.approx(found.curve.loss_drop(t), rel=1e-6)


def test_worked_example_escape_curve_numbers() -> None:
    # docs/theory.md §8: from (0, w*, a*, w*) with w₁ = w* + t: ΔR = −2.5887e−9 (t = 0.1),
    # −3.5280e−8 (t = 0.2), exactly −φ²/(2M)
    net = sm.TwoLayerNet([0.0, A], [[W], [W]])
    curve = classify(net, WORKED).curve
    assert curve is not None
    sign = float(curve.direction[0])
    for t, expected in ((0.1, -2.5887e-9), (0.2, -3.5280e-8)):
        change = sm.loss(curve.point(sign * t), WORKED) - sm.loss(net, WORKED)
        assert change == pytest.approx(expected, rel=1e-4)  # docs/theory.md quotes 5 digits
        assert change == pytest.approx(-curve.loss_drop(sign * t), rel=1e-9)


def test_worked_example_splitting_rule() -> None:
    [rule] = splitting_rule(sm.TwoLayerNet([A], [[W]]), WORKED)
    # K = a*G(w*) = 0.6105·0.013216300478 (docs/theory.md §8); curvature λ(1−λ)·0.0080687568
    assert float(rule.K[0, 0]) == pytest.approx(A * 0.013216300478, rel=1e-8)
    assert float(rule.K[0, 0]) == pytest.approx(0.0080687568, rel=1e-8)
    assert rule.inertia == (1, 0, 0)
    labels = {(lo, hi): label for lo, hi, label in rule.intervals}
    assert labels[(-np.inf, 0.0)] is labels[(1.0, np.inf)] is SplitRegion.STRICT_SADDLE
    assert labels[(0.0, 1.0)] is SplitRegion.LOCAL_MINIMUM
    assert labels[(0.0, 0.0)] is labels[(1.0, 1.0)] is SplitRegion.NON_STRICT_SADDLE


@functools.cache
def _strict_minimum(act: str, K: int, seed: int) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    prob = sm.teacher_student(2, 2, d=3, n=60, activation=act, seed=seed, noise=0.1,
                              output_dim=K)
    run = sm.train(prob.student, prob.data, optimizer="lbfgs", steps=500, grad_tol=1e-6)
    cp = sm.find_critical_point(run.net, prob.data)
    assert cp.converged and cp.verdict is sm.Verdict.STRICT_MINIMUM, cp.summary()
    return cp.net, prob.data


MINIMA = [("exp", 1, 0), ("tanh", 1, 1), ("erf", 2, 0), ("sigmoid", 1, 0), ("softplus", 2, 1)]


@pytest.mark.parametrize(("act", "K", "seed"), MINIMA)
def test_fukumizu_amari_intervals_match_the_dense_spectrum(act: str, K: int, seed: int) -> None:
    star, data = _strict_minimum(act, K, seed)
    rules = splitting_rule(star, data)
    for j, rule in enumerate(rules):
        pos, _, neg = rule.inertia
        for lam in (-1.5, -0.7, -0.2, 0.3, 0.5, 0.8, 1.2, 1.7, 2.5):
            a = torch.cat([star.a, (1 - lam) * star.a[j : j + 1]])
            a[j] = lam * star.a[j]
            wide = sm.TwoLayerNet(a, torch.cat([star.W, star.W[j : j + 1]]), activation=act)
            spec = sm.spectrum(wide, data)
            dense_saddle = spec.min < -spec.zero_tol
            predicted = (pos > 0) if (lam < 0 or lam > 1) else (neg > 0)
            assert dense_saddle == predicted, (act, j, lam, rule.inertia, spec.min)
            assert (classify(wide, data).kind is Kind.STRICT_SADDLE) == predicted


@pytest.mark.parametrize(("act", "K", "seed"), MINIMA[:3])
def test_saddle_branches_have_checked_witnesses(act: str, K: int, seed: int) -> None:
    star, data = _strict_minimum(act, K, seed)
    cs = sm.CriticalSet(star, data)
    for m in (3, 4):
        found = sm.saddle_branches(cs, m)
        assert any(sb.verdict is BranchVerdict.SADDLE_BRANCH for sb in found)  # the paper's theorem
        for sb in found:
            if sb.witness is None:
                continue
            point = sb.point
            assert point is not None and cs.contains(point)
            w = sb.witness
            if w.direction is not None:  # independent check by the Hessian
                H = sm.hessian(point, data)
                assert float(w.direction @ H @ w.direction) < 0
            else:
                assert w.curve is not None
                assert sm.loss(w.curve.point(0.05), data) < sm.loss(point, data)
        assert all(sb.witness is not None
                   for sb in found if sb.verdict is BranchVerdict.SADDLE_BRANCH)


@pytest.mark.parametrize(
    "net",
    [_split(2.0), _split(-1.0), _split(0.0), sm.TwoLayerNet([A, 0.0], [[W], [0.0]])],
    ids=["split-2", "split-minus-1", "null-copy", "null-at-0"],
)
def test_escape_ends_lower(net: sm.TwoLayerNet) -> None:
    out = sm.escape(net, WORKED, steps=300)
    assert out.method in (EscapeMethod.NEGATIVE_CURVATURE, EscapeMethod.ESCAPE_CURVE)
    assert out.loss_after_step < out.loss_before
    assert out.end is not None and out.escaped
    assert out.end.loss < out.loss_before - 1e-4
    assert out.path_loss.min() == pytest.approx(out.loss_after_step)
    assert out.end_width is not None and out.end_width <= net.width


def test_escape_from_a_minimum_needs_widening() -> None:
    stuck = sm.escape(_split(0.5), WORKED)
    assert stuck.method is EscapeMethod.NONE and not stuck.escaped
    wide = sm.escape(_split(0.5), WORKED, widen=True, steps=300)
    assert wide.method is EscapeMethod.THREE_FOLD_SPLIT and wide.escaped
    assert wide.end is not None and wide.end.loss < wide.loss_before


def test_relu_is_flagged() -> None:
    found = classify(sm.TwoLayerNet([1.0], [[1.0]], activation="relu"), WORKED)
    assert any("not analytic" in e for e in found.evidence)
