"""The Hessian's closed-form diagonal and trace, and Hutch++, against torch.func and FD."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from conftest import Case, assert_close_scaled, make_problem

import saddlemap as sm
from saddlemap.losses import Loss, Penalty, SquaredLoss
from saddlemap.trace import hessian_diagonal, hutchpp

RTOL = 1e-10  # closed forms equal autodiff to 1e-10 in float64 (as in test_derivatives)


def _trace_scale(H: torch.Tensor) -> float:
    # Σ|H_jj|: the trace sums P terms of either sign; its rounding is relative to their sizes.
    return max(float(H.diagonal().abs().sum()), 1e-300)


def test_diagonal_and_trace_match_autodiff(problem: tuple[sm.TwoLayerNet, sm.Dataset]) -> None:
    net, data = problem
    H = sm.hessian_autodiff(net, data)
    assert_close_scaled(hessian_diagonal(net, data), H.diagonal(), RTOL)
    tr = sm.hessian_trace(net, data)
    assert tr.method == "exact" and tr.n_matvecs == 0 and tr.stderr == 0.0
    assert abs(tr.value - float(H.trace())) <= RTOL * _trace_scale(H)


FD_CASES = [Case("tanh", "both_biases", 1, 7), Case("softplus", "hidden_bias", 3, 13),
            Case("erf", "both_biases", 3, 7, loss="cross_entropy"),
            Case("sigmoid", "no_bias", 1, 13, loss="binary_cross_entropy")]


@pytest.mark.parametrize("case", FD_CASES, ids=lambda c: c.id)
def test_diagonal_matches_finite_differences(case: Case) -> None:
    net, data = make_problem(case)
    theta, h = net.flatten(), 1e-5
    # Central differences of the gradient: truncation O(h²) and rounding O(ε/h), ~1e-10.
    fd = torch.stack([
        (sm.gradient(net.unflatten(theta + h * e), data)[j]
         - sm.gradient(net.unflatten(theta - h * e), data)[j]) / (2 * h)
        for j, e in enumerate(torch.eye(net.num_params))
    ])
    assert_close_scaled(hessian_diagonal(net, data), fd, 1e-6)


PENALTY_CASES = [(Case("tanh", "both_biases", 1, 13), Penalty(0.3, "weights")),
                 (Case("softplus", "both_biases", 3, 7, loss="cross_entropy"), Penalty(1e-3)),
                 (Case("gelu", "hidden_bias", 3, 13), Penalty(0.2, "all"))]


@pytest.mark.parametrize(("case", "penalty"), PENALTY_CASES, ids=lambda x: getattr(x, "id", ""))
@pytest.mark.parametrize("batch_size", [None, 1, 4])
def test_penalty_and_streaming(case: Case, penalty: Penalty, batch_size: int | None) -> None:
    net, data = make_problem(case)
    data = data.with_penalty(penalty)
    H = sm.hessian_autodiff(net, data)
    assert_close_scaled(hessian_diagonal(net, data, batch_size), H.diagonal(), RTOL)
    tr = sm.hessian_trace(net, data, batch_size=batch_size)
    assert abs(tr.value - float(H.trace())) <= RTOL * _trace_scale(H)


def _indefinite_problem() -> tuple[sm.TwoLayerNet, sm.Dataset]:
    return make_problem(Case("tanh", "both_biases", 1, 100, d=6, m=20, seed=3))  # P = 161


def test_hutchpp_is_within_its_standard_error() -> None:
    net, data = _indefinite_problem()
    exact = float(sm.hessian(net, data).trace())
    z = []
    for seed in range(13):
        est = sm.hessian_trace(net, data, method="hutch++", n_matvecs=33, seed=seed)
        assert est.method == "hutch++" and est.n_matvecs == 33
        assert 0 < est.stderr < math.inf
        z.append((est.value - exact) / est.stderr)
    # Each error is a mean of 11 terms: within 4 standard errors (Chebyshev: P ≥ 94 % each,
    # and Gaussian-like tails far tighter); the z-scores are not all of one sign.
    assert max(abs(x) for x in z) < 4
    assert min(z) < 0 < max(z)


def test_hutchpp_is_exact_once_the_sketch_spans_everything() -> None:
    net, data = make_problem(Case("erf", "both_biases", 3, 13, seed=1))  # P = 18
    est = sm.hessian_trace(net, data, method="hutch++", n_matvecs=3 * net.num_params)
    H = sm.hessian(net, data)
    assert abs(est.value - float(H.trace())) <= 1e3 * np.finfo(float).eps * _trace_scale(H)


def test_hutchpp_error_falls_with_more_products() -> None:
    # Hutch++'s error falls as 1/n_matvecs (Meyer et al. 2021), Hutchinson's as 1/√n_matvecs.
    net, data = _indefinite_problem()
    exact = float(sm.hessian(net, data).trace())

    def rms(n_matvecs: int) -> float:
        errors = [sm.hessian_trace(net, data, "hutch++", n_matvecs, seed=s).value - exact
                  for s in range(7)]
        return float(np.sqrt(np.mean(np.square(errors))))

    assert rms(300) < 0.5 * rms(30)


def test_hutchpp_on_a_scipy_operator() -> None:
    from scipy.sparse.linalg import aslinearoperator

    A = np.diag(np.linspace(-1.0, 3.0, 40))
    est = hutchpp(aslinearoperator(A), n_matvecs=120)  # s = 40 = P: exact
    assert est.value == pytest.approx(float(np.trace(A)), abs=1e-12)


class _PlainSquared(Loss):
    """The squared loss without its closed-form curvature products (the base class's)."""

    name = "plain_squared"

    def value(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return SquaredLoss().value(g, t)

    def grad(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return g - t

    def hess(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return SquaredLoss().hess(g, t)

    def targets(self, y: torch.Tensor, num_outputs: int | None = None) -> torch.Tensor:
        return SquaredLoss().targets(y, num_outputs)


@pytest.mark.parametrize(("K", "method"), [(3, "exact"), (120, "hutch++")])
def test_auto_picks_by_cost(K: int, method: str) -> None:
    # K² > n_matvecs (K + D) only for the wide output: 14,400 > 99 · 123
    gen = torch.Generator().manual_seed(0)
    net = sm.TwoLayerNet(torch.randn(2, K, generator=gen), torch.randn(2, 3, generator=gen))
    data = sm.Dataset(torch.randn(5, 3, generator=gen), torch.randn(5, K, generator=gen),
                      loss=_PlainSquared())
    tr = sm.hessian_trace(net, data)
    assert tr.method == method
    V = torch.randn(net.num_params, 3, generator=gen)  # the base class's curvature products
    H = sm.hessian_autodiff(net, data)
    assert_close_scaled(sm.hessian_operator(net, data).apply(V), H @ V, RTOL)
    exact = float(hessian_diagonal(net, data).sum())
    assert exact == pytest.approx(float(sm.hessian_autodiff(net, data).trace()), rel=1e-12)
    if method == "hutch++":
        assert abs(tr.value - exact) < 5 * tr.stderr


BAD: list[tuple[dict[str, Any], str]] = [
    ({"method": "hutchinson"}, "unknown method"),
    ({"method": "hutch++", "n_matvecs": 2}, "n_matvecs"),
    ({"n_matvecs": 10.0}, "n_matvecs"),
    ({"n_matvecs": True}, "n_matvecs"),
    ({"method": "hutch++", "n_matvecs": 10**9}, "GiB of sketches"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=lambda x: str(x))
def test_bad_options(kwargs: dict[str, Any], message: str) -> None:
    net, data = make_problem(Case("tanh", "no_bias", 1, 3))
    with pytest.raises(sm.OptionError, match=message):
        sm.hessian_trace(net, data, **kwargs)


def test_mismatched_data_is_refused() -> None:
    net, _ = make_problem(Case("tanh", "no_bias", 1, 3))
    with pytest.raises(sm.DataError, match="d="):
        sm.hessian_trace(net, sm.Dataset(torch.zeros(3, 5), torch.zeros(3)))


def test_large_data_streams_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    from saddlemap import trace

    net, data = make_problem(Case("softplus", "both_biases", 3, 100, loss="cross_entropy"))
    whole = hessian_diagonal(net, data, batch_size=100)
    seen: list[int] = []
    original = trace._diagonal_block

    def spy(fw: Any) -> torch.Tensor:
        seen.append(fw.S.shape[0])
        return original(fw)

    monkeypatch.setattr(trace, "_diagonal_block", spy)
    monkeypatch.setattr(trace, "BLOCK_BYTES", 8 * 40 * (2 * 3 + 5 * 3))  # 40 rows a block
    assert_close_scaled(hessian_diagonal(net, data), whole, 1e-13)
    assert seen == [40, 40, 20]
