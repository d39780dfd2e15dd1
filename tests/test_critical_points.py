"""Refinement to critical points and their certificates."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import Case, make_problem

import saddlemap as sm
from saddlemap.analysis import grad_tolerance
from saddlemap.critical_points import (
    CriticalPoint,
    certify,
    convergence_order,
    find_critical_point,
)
from saddlemap.verdicts import NoteCode, Verdict

WORKED = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
A_STAR, W_STAR = 0.610515537972, 1.433931221329  # docs/theory.md §8, 12 digits


def _dense_verdict(cp: CriticalPoint) -> Verdict:
    """The verdict recomputed from an independent eigvalsh of the Hessian."""
    lam = np.linalg.eigvalsh(sm.hessian(cp.net, WORKED).numpy())
    tol = cp.spectrum.zero_rtol * np.abs(lam).max()
    if lam[0] < -tol:
        return Verdict.STRICT_SADDLE
    return Verdict.STRICT_MINIMUM if lam[0] > tol else Verdict.DEGENERATE


def test_worked_example_minimum_to_machine_precision() -> None:
    cp = find_critical_point(sm.TwoLayerNet([0.5], [[1.0]]), WORKED)
    assert cp.converged and cp.grad_norm <= 1e-13
    assert cp.verdict is Verdict.STRICT_MINIMUM
    assert float(cp.net.W[0, 0]) == pytest.approx(W_STAR, abs=1e-11)
    assert float(cp.net.a[0, 0]) == pytest.approx(A_STAR, abs=1e-11)
    assert cp.loss == pytest.approx(0.07403106110643635, rel=1e-12)
    assert convergence_order(cp.history) > 1.5


@pytest.mark.parametrize(
    ("ratio", "verdict"),
    [(2.0, Verdict.STRICT_SADDLE), (-1.0, Verdict.STRICT_SADDLE), (3.0, Verdict.STRICT_SADDLE),
     (0.5, Verdict.DEGENERATE)],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refinement_near_a_split_saddle_returns_to_the_splitting_line(
    ratio: float, verdict: Verdict, seed: int
) -> None:
    split = sm.TwoLayerNet([ratio * A_STAR, (1 - ratio) * A_STAR], [[W_STAR], [W_STAR]])
    noise = 1e-4 * torch.randn(4, generator=torch.Generator().manual_seed(seed))
    cp = find_critical_point(split.unflatten(split.flatten() + noise), WORKED)
    assert cp.converged and cp.verdict is verdict
    assert cp.verdict is _dense_verdict(cp)
    # back on the branch {w₁ = w₂ = w*, a₁ + a₂ = a*}; the ratio may slide along it
    torch.testing.assert_close(cp.net.W.flatten(), torch.full((2,), W_STAR), atol=1e-9, rtol=0)
    assert float(cp.net.a.sum()) == pytest.approx(A_STAR, abs=1e-9)
    final = float(cp.net.a[0, 0]) / A_STAR
    assert (0 < final < 1) == (0 < ratio < 1)  # stays on its side of the line
    assert cp.grad_norm < 1e-13 and cp.iterations <= 8


def test_matrix_free_refinement_agrees_with_dense() -> None:
    split = sm.TwoLayerNet([2 * A_STAR, -A_STAR], [[W_STAR + 1e-4], [W_STAR - 2e-4]])
    dense = find_critical_point(split, WORKED, method="dense")
    free = find_critical_point(split, WORKED, method="matrix_free")
    assert dense.converged and free.converged
    assert dense.verdict is free.verdict is Verdict.STRICT_SADDLE
    # Where on the flat branch {w₁ = w₂ = w*, a₁ + a₂ = a*} a Newton-type step lands is set by
    # a near-zero Hessian eigenvalue, so it moves with rounding (1e-15 in the start moves the
    # dense answer by 5e-4 along the branch): compare the branch, not the place on it.
    for cp in (dense, free):
        torch.testing.assert_close(cp.net.W.flatten(), torch.full((2,), W_STAR), atol=1e-9, rtol=0)
        assert float(cp.net.a.sum()) == pytest.approx(A_STAR, abs=1e-9)
    assert free.loss == pytest.approx(dense.loss, rel=1e-12)


def test_not_critical_point_is_not_called_critical() -> None:
    cp = certify(sm.TwoLayerNet([1.0, -0.3], [[0.2], [2.0]]), WORKED)
    assert not cp.converged and cp.verdict is Verdict.NOT_CRITICAL
    assert cp.hgrad_ratio > 1e-6 * cp.spectrum.scale
    assert "not critical" in cp.summary()


def test_gradient_flat_point_is_reported_as_such() -> None:
    # LM minimises ½‖∇R‖²; where it stalls with ∇R ≠ 0 it sits at a local minimum of ‖∇R‖²,
    # i.e. H∇R = 0: a gradient-flat point (Frye et al. 2020).  This small problem has one.
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(7, 1, generator=gen), torch.randn(7, generator=gen)
    start = sm.TwoLayerNet(torch.randn(1, generator=gen), torch.randn(1, 1, generator=gen))
    cp = find_critical_point(start, sm.Dataset(X, y))
    assert cp.verdict is Verdict.GRADIENT_FLAT
    assert not cp.converged and cp.grad_norm > 1e3 * cp.grad_tol
    assert cp.hgrad_ratio <= 1e-6 * cp.spectrum.scale
    assert cp.iterations < 200  # it stopped because no step reduces ‖∇R‖, not at max_iter


def test_drift_to_infinity_is_flagged() -> None:
    # tanh can fit the linear part of the data only as a → ∞, w → 0 with aw fixed: the
    # iterates drift along that channel and ‖∇R‖ decays slowly; never called critical.
    gen = torch.Generator().manual_seed(1)
    X, y = torch.randn(7, 1, generator=gen), torch.randn(7, generator=gen)
    start = sm.TwoLayerNet(torch.randn(1, generator=gen), torch.randn(1, 1, generator=gen),
                           activation="erf")
    cp = find_critical_point(start, sm.Dataset(X, y), max_iter=100)
    assert cp.verdict is Verdict.NOT_CRITICAL
    assert cp.has(NoteCode.PARAMETERS_GREW)


def test_warnings() -> None:
    relu = certify(sm.TwoLayerNet([1.0], [[1.0]], activation="relu"), WORKED)
    assert relu.has(NoteCode.NOT_ANALYTIC)
    dead = certify(sm.TwoLayerNet([1.0, 1.0], [[1.0], [100.0]], activation="tanh"), WORKED)
    assert any("neurons [1] are saturated" in str(w) for w in dead.warnings)
    channel = certify(
        sm.TwoLayerNet([5e3, -5e3 + 0.5], [[1.0], [1.0 + 1e-4]], activation="tanh"), WORKED
    )
    assert channel.has(NoteCode.LARGE_WEIGHTS)
    assert channel.has(NoteCode.CHANNEL_PAIR)
    poly = certify(sm.TwoLayerNet([1.0], [[1.0]], activation="identity"), WORKED)
    assert poly.has(NoteCode.POLYNOMIAL)


def test_grad_tolerance_is_the_rounding_floor_where_that_is_larger() -> None:
    assert grad_tolerance(sm.TwoLayerNet([0.5], [[0.1]]), WORKED, 1e-10) == 1e-10
    huge = sm.TwoLayerNet([1e9], [[0.1]])
    floor = grad_tolerance(huge, WORKED, 0.0)
    assert floor > 1e-10
    # the floor is honest: two float64 evaluations of ∇R differ by less than it
    change = float((sm.gradient(huge, WORKED) - sm.gradient_autodiff(huge, WORKED)).norm())
    assert change < floor


def test_convergence_order_and_errors() -> None:
    assert convergence_order(np.array([1e-1, 1e-2, 1e-3, 1e-4])) == pytest.approx(1.0)
    errors = np.array([1e-1, 1e-2, 1e-4, 1e-8, 1e-16, 0.0])
    assert convergence_order(errors, floor=1e-14) == pytest.approx(2)
    with pytest.raises(ValueError, match="at least 3"):
        convergence_order(np.array([1e-1, 1e-20]))
    with pytest.raises(ValueError, match="unknown method"):
        find_critical_point(sm.TwoLayerNet([0.5], [[1.0]]), WORKED, method="newton")


# Teacher–student problems: train with L-BFGS to ‖∇R‖ ≤ 1e-5, then refine.  Where a finite
# critical point is near, refinement must reach 1e-10 superlinearly; where the trained point
# sits in a flat valley or heads to infinity (common for wider students fitting noise), it
# must say so and never call the point critical.
TS_CASES = [
    (act, d, r, m)
    for act in ("tanh", "erf", "softplus", "sigmoid")
    for d in (1, 2, 5)
    for r, m in ((1, 1), (2, 2), (3, 2), (8, 5), (8, 8))
]


@functools.cache
def _trained_and_refined(act: str, d: int, r: int, m: int) -> CriticalPoint:
    prob = sm.teacher_student(r, m, d=d, n=200, activation=act, seed=0, noise=0.1)
    trained = sm.train(prob.student, prob.data, optimizer="lbfgs", steps=500, grad_tol=1e-5)
    return find_critical_point(trained.net, prob.data, max_iter=100)


@pytest.mark.parametrize(("act", "d", "r", "m"), TS_CASES)
def test_refinement_from_trained_teacher_student(act: str, d: int, r: int, m: int) -> None:
    cp = _trained_and_refined(act, d, r, m)
    if cp.converged:
        assert cp.grad_norm <= 1e-10
        e = cp.history[cp.history > 1e-14]
        # superlinear: the last step above the rounding floor cut ‖∇R‖ by far more than any
        # fixed linear rate would
        assert e.size < 2 or e[-1] / e[-2] < 1e-2 or cp.history[-1] < 1e-14
        if e.size >= 4:
            assert convergence_order(cp.history) > 1.5
        prob = sm.teacher_student(r, m, d=d, n=200, activation=act, seed=0, noise=0.1)
        lam = np.linalg.eigvalsh(sm.hessian(cp.net, prob.data).numpy())
        tol = cp.spectrum.zero_rtol * np.abs(lam).max()
        expected = (Verdict.STRICT_SADDLE if lam[0] < -tol
                    else Verdict.STRICT_MINIMUM if lam[0] > tol else Verdict.DEGENERATE)
        assert cp.verdict is expected
    else:
        assert cp.verdict in (Verdict.NOT_CRITICAL, Verdict.GRADIENT_FLAT)
        assert cp.grad_norm > cp.grad_tol
        assert cp.has(NoteCode.LINEAR_CONVERGENCE) or cp.has(NoteCode.PARAMETERS_GREW)


def test_most_teacher_student_refinements_converge() -> None:
    converged = sum(_trained_and_refined(*case).converged for case in TS_CASES)
    matched = [c for c in TS_CASES if c[2] == c[3] <= 2]  # student as wide as the teacher
    assert all(_trained_and_refined(*case).converged for case in matched)
    assert converged >= len(TS_CASES) // 2  # 36 of 60 when this was written


def test_separable_classifier_is_never_certified_critical() -> None:
    # scikit-learn on separable blobs: R and ‖∇R‖ shrink together along s·(a, c)
    import warnings

    from sklearn.datasets import make_blobs
    from sklearn.neural_network import MLPClassifier

    X, y = make_blobs(120, centers=3, cluster_std=0.6, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((4,), activation="tanh", max_iter=3000, random_state=0).fit(X, y)
    loaded = sm.load_model(clf)
    data = sm.Dataset(X, y, loss=loaded.loss, num_outputs=loaded.net.output_dim)
    given = certify(loaded.net, data)
    assert given.at_infinity and not given.converged and given.has(NoteCode.AT_INFINITY)
    refined = find_critical_point(loaded.net, data, max_iter=60)
    assert not refined.converged and refined.verdict is Verdict.AT_INFINITY
    assert refined.iterations == 0  # it does not follow a cross-entropy iterate to infinity


def test_refinement_stops_at_max_move() -> None:
    start = sm.TwoLayerNet([0.5], [[1.0]])
    cp = find_critical_point(start, WORKED, max_move=1e-3)
    assert cp.moved <= 1e-3 * 1.01 or cp.iterations == 0
    free = find_critical_point(start, WORKED)
    assert free.converged and free.moved > 1e-3


def test_exact_critical_point_refines_without_dividing_by_zero() -> None:
    cp = find_critical_point(sm.TwoLayerNet([0.0], [[0.0]]), sm.Dataset([1.0, 2.0], [0.0, 0.0]))
    assert cp.converged and cp.grad_norm == 0.0 and cp.iterations == 0


def test_patience_stops_a_linearly_converging_refinement() -> None:
    # tanh, m = 5 on 13 points: ‖∇R‖ falls by a constant 0.968 per step (a flat valley);
    # patience 3 stops once it has not halved over three iterations, long before max_iter
    net, data = make_problem(Case("tanh", "no_bias", 1, 13, d=2, m=5, seed=0))
    full = sm.find_critical_point(net, data, max_iter=40)
    assert full.iterations == 40 and not full.converged
    short = sm.find_critical_point(net, data, max_iter=40, patience=3)
    h = short.history
    assert short.iterations < 40 and h[-1] > 0.5 * h[-4]
    np.testing.assert_array_equal(h, full.history[: h.size])  # the same path, cut short
    with pytest.raises(sm.OptionError, match="patience"):
        sm.find_critical_point(net, data, patience=0)
