"""Stochastic Lanczos quadrature against the dense spectrum."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from conftest import Case, make_problem
from scipy.stats import wasserstein_distance

import saddlemap as sm
from saddlemap.density import _count_below, probes


def _wide_problem() -> tuple[sm.TwoLayerNet, sm.Dataset]:
    """P = 1,080 (d = 10, m = 90, hidden bias), tanh, 300 samples: indefinite."""
    gen = torch.Generator().manual_seed(0)
    d, m, n = 10, 90, 300
    net = sm.TwoLayerNet(torch.randn(m, generator=gen), 0.5 * torch.randn(m, d, generator=gen),
                         b=0.3 * torch.randn(m, generator=gen), activation="tanh")
    data = sm.Dataset(torch.randn(n, d, generator=gen), torch.randn(n, generator=gen))
    return net, data


@pytest.fixture(scope="module")
def wide() -> tuple[sm.SpectralDensity, np.ndarray]:
    net, data = _wide_problem()
    lam = torch.linalg.eigvalsh(sm.hessian(net, data)).numpy()
    return sm.spectral_density(net, data, n_probes=13, lanczos_steps=80, seed=1), lam


def test_measure_is_close_to_the_dense_spectrum(wide: tuple[Any, np.ndarray]) -> None:
    dens, lam = wide
    assert dens.num_params == lam.size == 1080 and dens.n_matvecs == 13 * 80
    nodes, weights = dens.measure()
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    spread = lam.max() - lam.min()
    # W1 of 13 probes × 80 nodes against the 1,080 eigenvalues: 1.5e-3 of the range measured
    # (the sampling error of 13 probes dominates); 1 % leaves room and still fails for a
    # measure shifted by 1 % or spread onto the wrong part of the spectrum.
    assert wasserstein_distance(nodes, lam, u_weights=weights) < 0.01 * spread
    # the extreme Ritz values converge first: both ends to 1e-6 of the range
    assert nodes.min() == pytest.approx(lam.min(), abs=1e-6 * spread)
    assert nodes.max() == pytest.approx(lam.max(), abs=1e-6 * spread)


def test_negative_count_against_the_dense_inertia(wide: tuple[Any, np.ndarray]) -> None:
    dens, lam = wide
    true = int((lam < -dens.zero_tol).sum())
    point, lower, upper = (dens.num_params * x for x in _count_below(
        dens.nodes, dens.weights, dens.residuals, -dens.zero_tol))
    n = dens.n_probes
    # The quadrature brackets each probe's vᵀ1(H < t)v exactly; the bracket's probe means
    # hold the count up to their sampling error: within 4 standard errors.
    lo = lower.mean() - 4 * lower.std(ddof=1) / np.sqrt(n)
    hi = upper.mean() + 4 * upper.std(ddof=1) / np.sqrt(n)
    assert lo <= true <= hi
    assert dens.negative_count_bounds == pytest.approx((lower.mean(), upper.mean()))
    assert dens.negative_count == pytest.approx(point.mean())
    # Half the spectrum is negative and many eigenvalues crowd 0: the point estimate is
    # 560 ± 4 against 569 here (1.6 %), though the bracket is 422–783; 10 % leaves room.
    assert abs(dens.negative_count - true) < 0.1 * true


def test_density_integrates_to_one(wide: tuple[Any, np.ndarray]) -> None:
    dens, lam = wide
    assert np.trapezoid(dens.density, dens.grid) == pytest.approx(1.0, abs=1e-6)
    assert dens.grid[0] < lam.min() and dens.grid[-1] > lam.max()
    assert dens.sigma == pytest.approx(0.01 * (np.nanmax(dens.nodes) - np.nanmin(dens.nodes)))


CASES = [Case("tanh", "both_biases", 1, 13, d=3, m=5), Case("erf", "hidden_bias", 3, 7),
         Case("softplus", "no_bias", 3, 13, loss="cross_entropy", m=4)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_full_krylov_space_reproduces_each_probe_exactly(case: Case) -> None:
    # With P steps the quadrature is exact: every node is an eigenvalue and each probe's
    # weights below t sum to vᵀ 1(H < t) v.
    net, data = make_problem(case)
    P, n_probes = net.num_params, 7
    dens = sm.spectral_density(net, data, n_probes=n_probes, lanczos_steps=P + 5, seed=2)
    lam, U = np.linalg.eigh(sm.hessian(net, data).numpy())
    scale = np.abs(lam).max()
    finite = dens.nodes[np.isfinite(dens.nodes)]
    gaps = np.abs(finite[:, None] - lam[None, :]).min(1)
    assert gaps.max() <= 1e-8 * scale  # Ritz values of a full Krylov space: eigenvalues
    V = probes(P, n_probes, seed=2)
    widest = int(np.argmax(np.diff(lam)))  # t between eigenvalues, never at one
    for t in (-dens.zero_tol, 0.5 * float(lam[widest] + lam[widest + 1]), float(lam[-1]) + 1):
        exact = ((U.T @ V) ** 2 * (lam < t)[:, None]).sum(0)
        point = _count_below(dens.nodes, dens.weights, dens.residuals, t)[0]
        np.testing.assert_allclose(point, exact, atol=1e-8)


def test_explicit_grid_and_sigma() -> None:
    net, data = make_problem(Case("tanh", "both_biases", 1, 13))
    grid = np.linspace(-2.0, 2.0, 7)
    dens = sm.spectral_density(net, data, n_probes=3, lanczos_steps=5, sigma=0.5, grid=grid)
    assert np.array_equal(dens.grid, grid) and dens.sigma == 0.5
    nodes, weights = dens.measure()
    expected = (np.exp(-0.5 * ((grid[:, None] - nodes) / 0.5) ** 2) @ weights) / (
        0.5 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(dens.density, expected, rtol=1e-12)
    assert "SLQ density of P=" in dens.summary()


BAD: list[tuple[dict[str, Any], str]] = [
    ({"n_probes": 0}, "n_probes"),
    ({"n_probes": 10**9}, "n_probes"),
    ({"lanczos_steps": 10**6}, "lanczos_steps"),
    ({"grid": 10**9}, "grid"),
    ({"lanczos_steps": 2.5}, "lanczos_steps"),
    ({"sigma": float("nan")}, "sigma"),
    ({"sigma": -1.0}, "sigma"),
    ({"grid": 1}, "grid"),
    ({"grid": np.array([0.0, np.inf])}, "grid"),
    ({"grid": np.zeros((2, 2))}, "grid"),
    ({"zero_rtol": 1.5}, "zero_rtol"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=lambda x: str(x))
def test_bad_options(kwargs: dict[str, Any], message: str) -> None:
    net, data = make_problem(Case("tanh", "no_bias", 1, 3))
    with pytest.raises(sm.OptionError, match=message):
        sm.spectral_density(net, data, **kwargs)


def test_plot(wide: tuple[Any, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    dens, _ = wide
    ax = sm.plot_spectral_density(dens)
    assert "negative eigenvalues" in ax.get_title()
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), dens.grid)
    assert float(np.max(line.get_ydata())) == pytest.approx(1080 * dens.density.max())


def test_negative_count_at_an_embedded_saddle() -> None:
    # A critical point of width 2, each neuron split with ratios (2, −1): a saddle whose
    # spectrum has 4 negative and 20 zero eigenvalues among 28.  Its Krylov spaces have at
    # most 9 dimensions, so 12 steps converge every node: the zero nodes count as zero (a
    # broadened count would put half of them, 10, on the negative side) and the count is
    # the probes' Hutchinson estimate of the 4.
    prob = sm.teacher_student(teacher_width=3, width=2, d=6, n=200, activation="tanh", seed=0)
    cp = sm.find_critical_point(prob.student, prob.data)
    assert cp.converged
    net = cp.net
    for k in range(net.width):
        net = sm.split(net, k, [2.0, -1.0]).net
    lam = np.linalg.eigvalsh(sm.hessian(net, prob.data).numpy())
    dens = sm.spectral_density(net, prob.data, n_probes=13, lanczos_steps=12)
    true = int((lam < -dens.zero_tol).sum())
    assert true == 4 and int((np.abs(lam) <= dens.zero_tol).sum()) == 20
    assert np.nanmax(dens.residuals) <= 1e-8 * np.abs(lam).max()
    assert abs(dens.negative_count - true) <= 4 * dens.negative_count_stderr
    assert dens.count_below(-dens.zero_tol) == pytest.approx(dens.negative_count)
