"""Spectra: Lanczos against dense eigh, inertia with its tolerance, embedded saddles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import Case, make_problem
from scipy.sparse.linalg import LinearOperator

import saddlemap as sm
from saddlemap.spectral import lanczos_spectrum


def _wide_problem(
    activation: str, K: int, bias: str, seed: int
) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    return make_problem(Case(activation, bias, K, 101, d=5, m=13, seed=seed))


def _split_global_minimum() -> tuple[sm.TwoLayerNet, sm.Dataset]:
    """A width-6 teacher with every neuron split (0.3 a, w), (0.7 a, w), on the teacher's data.

    Zero loss makes every representation critical (docs/theory.md §2), so the Hessian is JᵀJ/n and
    each split adds 1 + d output-preserving directions: exact zero eigenvalues.
    """
    teacher, data = make_problem(Case("tanh", "no_bias", 1, 50, d=3, m=6, seed=3))
    data = sm.Dataset(data.X, teacher(data.X))
    wide = sm.TwoLayerNet(
        torch.cat([0.3 * teacher.a, 0.7 * teacher.a]), torch.cat([teacher.W, teacher.W])
    )
    return wide, data


@pytest.mark.parametrize(
    ("activation", "K", "bias", "seed"),
    [("tanh", 1, "no_bias", 0), ("softplus", 2, "both_biases", 1), ("erf", 3, "hidden_bias", 2)],
)
def test_lanczos_matches_dense_on_indefinite_hessians(
    activation: str, K: int, bias: str, seed: int
) -> None:
    net, data = _wide_problem(activation, K, bias, seed)
    dense = sm.spectrum(net, data, method="dense")
    assert dense.inertia is not None and dense.inertia.negative > 0 < dense.inertia.positive
    lanczos = sm.spectrum(net, data, k=3, method="lanczos")
    lam = dense.eigenvalues
    expected = np.concatenate([lam[:3], lam[-3:]])
    np.testing.assert_allclose(lanczos.eigenvalues, expected, rtol=0, atol=1e-8 * dense.scale)
    assert lanczos.converged.all()
    assert lanczos.num_matvecs > 0
    assert lanczos.inertia is None and not lanczos.complete
    assert (lanczos.residuals <= 1e-8 * dense.scale).all()


class _Matrix(LinearOperator):
    def __init__(self, A: np.ndarray) -> None:
        super().__init__(np.float64, A.shape)
        self.A, self.num_matvecs = A, 0

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        self.num_matvecs += 1
        return self.A @ x

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        self.num_matvecs += X.shape[1]
        return self.A @ X


def test_lanczos_resolves_a_cluster_of_near_zero_eigenvalues() -> None:
    # Real models' Hessians: a few tiny negative eigenvalues above hundreds of near-zero ones.
    # A test ‖r‖ ≤ tol·|λ| never passes there (ARPACK ran 10·P restarts); on H + λ_max I it
    # is tol·λ_max and converges in a few hundred products.
    rng = np.random.default_rng(0)
    lam = np.concatenate([np.linspace(1e-3, 1, 200), [-7e-7, -3e-7, -2e-7, -1e-7],
                          rng.uniform(-1e-10, 1e-10, 301)])
    Q, _ = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    op = _Matrix((Q * lam) @ Q.T)
    spec = lanczos_spectrum(op, k=6, tol=1e-9)
    assert spec.converged.all()
    assert spec.num_matvecs < 2000
    np.testing.assert_allclose(spec.eigenvalues[:4], [-7e-7, -3e-7, -2e-7, -1e-7], atol=1e-9)
    np.testing.assert_allclose(spec.eigenvalues[-1], 1.0, rtol=1e-12)
    alone = lanczos_spectrum(_Matrix(op.A), k=6, which="smallest", tol=1e-9)
    assert alone.converged.all()
    assert alone.scale == pytest.approx(1.0, rel=1e-3)  # λ_max estimated for the shift
    np.testing.assert_allclose(alone.eigenvalues, spec.eigenvalues[:6], atol=2e-9)


@pytest.mark.parametrize("size", [13, 101])
def test_budgeted_lanczos_gives_both_ends_within_its_budget(size: int) -> None:
    rng = np.random.default_rng(size)
    lam = np.concatenate([[-0.3, -0.01], rng.uniform(0.05, 1.0, size - 3), [2.0]])
    Q, _ = np.linalg.qr(rng.standard_normal((size, size)))
    A = (Q * lam) @ Q.T
    full = lanczos_spectrum(_Matrix(A), k=2, tol=1e-10, max_matvecs=size)
    np.testing.assert_allclose(full.eigenvalues, np.sort(lam)[[0, 1, -2, -1]], atol=1e-9)
    assert full.converged.all() and full.num_matvecs <= size
    # each pair: a unit Ritz vector whose Rayleigh quotient is its value, residual as stated
    V = full.eigenvectors
    np.testing.assert_allclose(np.linalg.norm(V, axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("pi,pq,qi->i", V, A, V), full.eigenvalues, atol=1e-12)
    res = np.linalg.norm(A @ V - V * full.eigenvalues, axis=0)
    np.testing.assert_allclose(full.residuals, res, atol=1e-8)
    # a few products: not converged, yet λ_min ≤ θ_min < 0 proves negative curvature
    short, budget = _Matrix(A), 6
    with pytest.warns(RuntimeWarning, match=f"converged within {budget} products"):
        few = lanczos_spectrum(short, k=1, tol=1e-10, max_matvecs=budget)
    assert short.num_matvecs == few.num_matvecs == budget
    assert lam.min() <= few.min < 0 and not few.converged.all()
    with pytest.raises(sm.OptionError, match="max_matvecs"):
        lanczos_spectrum(short, k=1, max_matvecs=1)


def test_dense_spectrum_evidence() -> None:
    net, data = _wide_problem("sigmoid", 2, "both_biases", 4)
    spec = sm.spectrum(net, data)
    H = sm.hessian(net, data).numpy()
    np.testing.assert_allclose(spec.eigenvalues, np.linalg.eigvalsh(H), atol=1e-12 * spec.scale)
    assert spec.converged.all() and spec.residuals.max() < 1e-12 * spec.scale
    assert sum(spec.inertia or ()) == net.num_params
    assert spec.scale == pytest.approx(np.abs(spec.eigenvalues).max())
    assert spec.zero_tol == pytest.approx(np.sqrt(np.finfo(np.float64).eps) * spec.scale)
    assert "inertia" in spec.summary()
    assert spec.eigenvectors is not None
    few = sm.spectrum(net, data, k=2, which="smallest", method="dense")
    np.testing.assert_array_equal(few.eigenvalues, spec.eigenvalues[:2])
    assert few.inertia == spec.inertia


def test_embedded_point_has_exact_zero_eigenvalues() -> None:
    wide, data = _split_global_minimum()
    spec = sm.spectrum(wide, data)
    assert spec.inertia is not None
    assert spec.inertia.zero >= 6 * (1 + 3)
    assert spec.inertia.negative == 0
    lanczos = sm.spectrum(wide, data, k=2, which="largest", method="lanczos")
    np.testing.assert_allclose(lanczos.eigenvalues, spec.eigenvalues[-2:], atol=1e-8 * spec.scale)


def test_worked_example_width_one_minimum() -> None:
    # docs/theory.md §8: the strict global minimum of width 1
    net = sm.TwoLayerNet([0.610515537972], [[1.433931221329]], activation="tanh")
    data = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
    assert sm.loss(net, data) == pytest.approx(0.07403106110643635, rel=1e-11)
    assert float(sm.gradient(net, data).abs().max()) < 1e-11
    np.testing.assert_allclose(
        sm.spectrum(net, data).eigenvalues, [0.015978589875, 0.729966636504], rtol=1e-9
    )


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (0.5, [0.0, 0.0040343784, 0.0080670059, 1.445869462]),  # local minimum
        (2.0, [-0.0048749236, 0.0, 0.0518782806, 1.4885200384]),  # strict saddle
        (-1.0, [-0.0048749236, 0.0, 0.0518782806, 1.4885200384]),
        (0.0, [0.0, 0.0, 0.0160824467, 1.4505053494]),  # non-strict saddle
    ],
)
def test_worked_example_splitting_line(ratio: float, expected: list[float]) -> None:
    # docs/theory.md §8: split the width-1 critical point into (λa*, w*), ((1 − λ)a*, w*)
    a, w = 0.610515537972, 1.433931221329
    net = sm.TwoLayerNet([ratio * a, (1 - ratio) * a], [[w], [w]], activation="tanh")
    data = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
    spec = sm.spectrum(net, data)
    # the quoted figures have 10 digits and the critical point 12
    np.testing.assert_allclose(spec.eigenvalues, expected, rtol=1e-8, atol=1e-10)
    assert spec.inertia == (
        sum(x > 1e-9 for x in expected), sum(x == 0 for x in expected),
        sum(x < -1e-9 for x in expected),
    )


def test_zero_rtol_is_reported_and_used() -> None:
    wide, data = _split_global_minimum()
    loose = sm.spectrum(wide, data, zero_rtol=1e-2)
    strict = sm.spectrum(wide, data, zero_rtol=1e-14)
    assert loose.inertia is not None and strict.inertia is not None
    assert loose.inertia.zero >= strict.inertia.zero
    assert loose.zero_rtol == 1e-2


def test_bad_arguments() -> None:
    net, data = _wide_problem("tanh", 1, "no_bias", 0)
    with pytest.raises(ValueError, match="unknown method"):
        sm.spectrum(net, data, method="qr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dense spectrum"):
        sm.spectrum(net, data, k=net.num_params, method="lanczos")


def test_float32_uses_its_own_tolerance() -> None:
    net, data = _wide_problem("tanh", 1, "no_bias", 0)
    spec = sm.spectrum(net.to(torch.float32), data)
    assert spec.zero_rtol == pytest.approx(float(np.sqrt(np.finfo(np.float32).eps)))
