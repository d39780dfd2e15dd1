"""Hostile numerics: never confidently wrong, never hung (the hostile-input pass, items 2–7, 10).

Each test reproduces one finding of that pass; the comment names the item.
"""

from __future__ import annotations

import math
import time
import warnings

import pytest
import torch
from conftest import Case, make_problem

import saddlemap as sm
from saddlemap import analysis, derivatives
from saddlemap.verdicts import Kind, NoteCode

WORKED = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
A, W = 0.610515537972, 1.433931221329


def _fitted(dtype: torch.dtype) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    """A width-3 tanh net and the targets it produces: R = 0, φ ≡ 0."""
    gen = torch.Generator().manual_seed(5)
    net = sm.TwoLayerNet(torch.randn(3, generator=gen), torch.randn(3, 2, generator=gen),
                         dtype=dtype)
    X = torch.randn(11, 2, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net.to(torch.float64)(X)
    return net, sm.Dataset(X, y)


# ------------------------------------------------------------------ item 2: R = 0 nets
@pytest.mark.parametrize("data_dtype", [torch.float32, torch.float64])
def test_perfectly_fitted_net_is_a_global_minimum_whatever_the_data_dtype(
    data_dtype: torch.dtype,
) -> None:
    net64, data = _fitted(torch.float64)
    assert sm.classify(net64, data).kind is Kind.GLOBAL_MINIMUM
    net32 = net64.to(torch.float32)
    data_cast = sm.Dataset(data.X, data.targets, dtype=data_dtype)
    assert sm.classify(net32, data_cast).kind is sm.classify(net32, data).kind


# --------------------------------------------------------------- item 3: the model itself
def test_diagnose_answers_about_the_model_not_a_far_refined_point() -> None:
    # a ReLU net far from any critical point: the smaller-model answer is the compression of
    # the model itself (what `compress` says), and the refinement stays within 3·near
    net, data = make_problem(Case("relu", "both_biases", 1, 13, d=2, m=4, seed=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = sm.diagnose(net, data, escape_steps=0)
        alone = sm.compress(net, data)
    assert rep.compression.width == alone.width
    assert rep.compression.loss_before == pytest.approx(sm.loss(net, data), rel=1e-12)
    if rep.refined is not None:
        assert rep.refined.moved <= 3 * rep.point.tolerances.near + 1e-12
    assert rep.describes_model or "describes that point" in rep.summary()


# ------------------------------------------------------ item 4: exact and tiny points
def test_refinement_at_an_exact_critical_point_returns_it() -> None:
    exact = sm.TwoLayerNet([2 * A, -A, 0.0], [[W], [W], [0.0]])  # ∇R = 0, zero eigenvalues
    cp = sm.find_critical_point(exact, WORKED)
    assert cp.converged and math.isfinite(cp.grad_norm) and cp.moved < 1e-9


def test_refinement_at_tiny_weights_stays_finite() -> None:
    tiny = sm.TwoLayerNet([1e-300, -1e-300], [[1e-300], [2e-300]])
    cp = sm.find_critical_point(tiny, WORKED, max_iter=20)
    assert all(math.isfinite(x) for x in cp.net.flatten().tolist())


# ------------------------------------------------------------- item 5: float32 tolerances
def test_float32_refinement_uses_float32_tolerances() -> None:
    net, data = _fitted(torch.float32)
    cp = sm.find_critical_point(net, sm.Dataset(data.X, data.targets, dtype=torch.float32))
    assert cp.tolerances.zero_eig == pytest.approx(math.sqrt(torch.finfo(torch.float32).eps))
    assert not cp.has(NoteCode.AT_INFINITY) and cp.converged


# -------------------------------------------------------------- item 6: no hangs
@pytest.mark.parametrize("tol", [-1.0, math.nan, math.inf])
def test_bad_reduction_tolerance_is_refused_at_once(tol: float) -> None:
    net, data = make_problem(Case("tanh", "no_bias", 1, 7, d=2, m=4))
    start = time.perf_counter()
    with pytest.raises(sm.OptionError, match="tol"):
        sm.reduce(net, data.X, tol=tol)
    with pytest.raises(sm.OptionError, match="tol"):
        sm.compress(net, data, tol=tol)
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("width", [-1, 0, 10**6])
def test_branch_enumeration_width_is_bounded(width: int) -> None:
    cs = sm.CriticalSet(sm.TwoLayerNet([A], [[W]]), WORKED)
    with pytest.raises(sm.OptionError, match="width"):
        sm.saddle_branches(cs, width)


# -------------------------------------------------------- item 7: no dense Hessian above
def test_classify_above_the_dense_limit_never_forms_the_hessian(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, data = make_problem(Case("tanh", "both_biases", 1, 13, d=3, m=6))

    def refuse(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the dense Hessian was formed")

    monkeypatch.setattr(derivatives, "hessian", refuse)
    monkeypatch.setattr(analysis, "hessian", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kind = sm.classify(sm.Analysis(net, data, dense_limit=10)).kind
    assert kind in Kind


# ------------------------------------------------------------- item 10: silent nonsense
@pytest.mark.parametrize("slope", [math.inf, math.nan, -math.inf])
def test_leaky_relu_slope_must_be_finite(slope: float) -> None:
    with pytest.raises(sm.ActivationError, match="slope"):
        sm.leaky_relu(slope)
