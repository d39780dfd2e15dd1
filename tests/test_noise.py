"""Minibatch gradient noise: per-sample directional derivatives and vᵀΣ_B v."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import BIASES, Case, make_problem

import saddlemap as sm
from saddlemap.autodiff import loss_function
from saddlemap.noise import (
    EscapeNoise,
    directional_sample_gradients,
    escape_noise,
    minibatch_noise,
)
from saddlemap.training import freeze_mask

EPS = float(np.finfo(np.float64).eps)

CASES = [
    Case(act, bias, K, n, loss)
    for act, bias, (K, loss), n in itertools.product(
        ["tanh", "erf", "softplus", "relu"], BIASES,
        [(1, "mse"), (3, "mse"), (3, "cross_entropy"), (1, "binary_cross_entropy")], [1, 7, 13])
]


def _per_sample_autodiff(net: sm.TwoLayerNet, data: sm.Dataset, v: torch.Tensor) -> torch.Tensor:
    """vᵀ∇ℓ_i by torch.func: the gradient of the one-sample risk, one sample at a time."""
    theta = net.flatten()
    return torch.stack([torch.func.grad(loss_function(net, data.subset(slice(i, i + 1))))(theta)
                        @ v for i in range(data.n)])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_directional_sample_gradients_match_autodiff(case: Case) -> None:
    net, data = make_problem(case)
    v = torch.randn(net.num_params, generator=torch.Generator().manual_seed(3))
    s = directional_sample_gradients(net, data, v)
    ref = _per_sample_autodiff(net, data, v)
    # a sum over P products of O(1) terms: rounding grows like P · eps
    torch.testing.assert_close(s, ref, rtol=0, atol=64 * net.num_params * EPS * max(
        1.0, float(ref.abs().max())))
    # their mean is the directional derivative of R (finite differences, central, h = 1e-5:
    # truncation O(h²) ≈ 1e-10 and rounding O(eps / h) ≈ 1e-11 relative to R)
    h = 1e-5
    fd = (sm.loss(net.unflatten(net.flatten() + h * v), data)
          - sm.loss(net.unflatten(net.flatten() - h * v), data)) / (2 * h)
    assert abs(float(s.mean()) - fd) <= 1e-7 * max(1.0, abs(fd))


@dataclass(frozen=True)
class NoiseCase:
    activation: str
    n: int
    batch: int
    bias: str = "hidden_bias"

    @property
    def id(self) -> str:
        return f"{self.activation}-n{self.n}-B{self.batch}-{self.bias}"


NOISE_CASES = [NoiseCase("tanh", 7, 3), NoiseCase("erf", 7, 1), NoiseCase("softplus", 7, 6),
               NoiseCase("sigmoid", 13, 4, "both_biases"), NoiseCase("tanh", 3, 2, "no_bias")]


def _batch_gradient_projections(net: sm.TwoLayerNet, data: sm.Dataset, v: torch.Tensor,
                                batches: list[torch.Tensor]) -> np.ndarray:
    return np.array([float(sm.gradient(net, data.subset(idx)) @ v) for idx in batches])


@pytest.mark.parametrize("case", NOISE_CASES, ids=[c.id for c in NOISE_CASES])
def test_minibatch_noise_is_the_variance_over_all_subsets(case: NoiseCase) -> None:
    # every B-subset is equally likely: the exact variance over all C(n, B) of them
    net, data = make_problem(Case(case.activation, case.bias, 1, case.n))
    v = torch.randn(net.num_params, generator=torch.Generator().manual_seed(5))
    subsets = [torch.tensor(c) for c in itertools.combinations(range(case.n), case.batch)]
    proj = _batch_gradient_projections(net, data, v, subsets)
    exact = float(np.mean((proj - proj.mean()) ** 2))
    got = minibatch_noise(net, data, v, case.batch)
    assert math.isclose(got, exact, rel_tol=1e3 * EPS, abs_tol=1e3 * EPS * float(
        np.mean(proj ** 2)))
    # the mean over subsets is the full gradient: unbiased
    assert math.isclose(float(proj.mean()), float(sm.gradient(net, data) @ v),
                        rel_tol=1e3 * EPS, abs_tol=1e3 * EPS)


def test_minibatch_noise_against_sampled_batches_of_training() -> None:
    # brute force: the batches training draws (seeded epochs of random permutations)
    net, data = make_problem(Case("tanh", "hidden_bias", 1, 13))
    v = torch.randn(net.num_params, generator=torch.Generator().manual_seed(7))
    from saddlemap.training import _Batches

    batches = _Batches(13, 4, shuffle=True, seed=11)
    draws = 6000
    proj = _batch_gradient_projections(net, data, v, [batches.next() for _ in range(draws)])
    estimate = float(np.var(proj, ddof=1))
    exact = minibatch_noise(net, data, v, 4)
    # the sample variance's standard error: √((μ₄ − σ⁴) / N), μ₄ the fourth central moment;
    # batches within one epoch are dependent (disjoint), so allow 5 standard errors
    mu4 = float(np.mean((proj - proj.mean()) ** 4))
    stderr = math.sqrt(max(mu4 - estimate ** 2, 0.0) / draws)
    assert abs(estimate - exact) <= 5 * stderr, (estimate, exact, stderr)


def test_full_batch_has_no_noise_and_variance_falls_with_batch_size() -> None:
    net, data = make_problem(Case("erf", "both_biases", 1, 13))
    v = torch.randn(net.num_params, generator=torch.Generator().manual_seed(2))
    values = [minibatch_noise(net, data, v, b) for b in (1, 3, 7, 13, 100)]
    assert values[-2] == values[-1] == 0.0
    assert values[0] > values[1] > values[2] > 0
    # B = 1: the population variance of the per-sample projections
    s = directional_sample_gradients(net, data, v)
    assert math.isclose(values[0], float(s.var(unbiased=False)), rel_tol=1e3 * EPS)


def test_escape_noise_direction_is_the_lowest_eigenvector() -> None:
    prob = sm.teacher_student(2, 3, d=3, n=13, activation="tanh", seed=2)
    net, data = prob.student, prob.data
    found = escape_noise(net, data, batch_size=4)
    assert isinstance(found, EscapeNoise)
    H = sm.hessian(net, data)
    v = found.direction
    lam = float(torch.linalg.eigvalsh(H)[0])
    assert math.isclose(found.lambda_min, lam, rel_tol=1e-10, abs_tol=1e-12)
    scale = float(torch.linalg.matrix_norm(H, 2))
    assert float(torch.linalg.vector_norm(H @ v - found.lambda_min * v)) <= 1e3 * EPS * scale
    assert math.isclose(found.noise, minibatch_noise(net, data, v, 4), rel_tol=1e-12)
    assert found.noise_length == math.sqrt(found.noise) / abs(found.lambda_min)


def test_escape_noise_in_the_trained_subspace() -> None:
    prob = sm.teacher_student(2, 2, d=4, n=13, activation="erf", orthonormal=True, seed=0)
    net = prob.student.replace(a=torch.ones(2, 1, dtype=torch.float64))
    free = (freeze_mask(net, ["a"]) != 0).nonzero().flatten()
    found = escape_noise(net, prob.data, batch_size=5, free=free)
    assert found is not None
    frozen = freeze_mask(net, ["a"]) == 0
    assert bool((found.direction[frozen] == 0).all())
    block = sm.hessian(net, prob.data)[free][:, free]
    assert math.isclose(found.lambda_min, float(torch.linalg.eigvalsh(block)[0]),
                        rel_tol=1e-10, abs_tol=1e-12)


BAD: list[tuple[dict[str, object], str]] = [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"v": torch.ones(3)}, "direction"),
    ({"v": torch.full((9,), math.nan)}, "direction"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD, ids=[n + str(i) for i, (_, n) in enumerate(BAD)])
def test_bad_input(kwargs: dict[str, object], name: str) -> None:
    net, data = make_problem(Case("tanh", "no_bias", 1, 7))
    args: dict[str, object] = {"v": torch.ones(net.num_params), "batch_size": 3, **kwargs}
    with pytest.raises(sm.OptionError, match=name):
        minibatch_noise(net, data, args["v"], args["batch_size"])  # type: ignore[arg-type]


def test_no_noise_along_the_escape_of_a_symmetric_committee_saddle() -> None:
    # two equal students: every per-sample gradient respects the swap of the two neurons, and
    # the escape direction of the symmetric point is antisymmetric, (u, −u), so the
    # minibatch noise along it vanishes (up to rounding) however small the batch
    prob = sm.teacher_student(2, 2, d=4, n=13, activation="erf", orthonormal=True, seed=1)
    w = prob.teacher.W.sum(dim=0) / 2
    net = sm.TwoLayerNet(torch.ones(2, 1), torch.stack([w, w]), activation="erf")
    free = (freeze_mask(net, ["a"]) != 0).nonzero().flatten()
    found = escape_noise(net, prob.data, batch_size=2, free=free)
    assert found is not None and found.lambda_min < 0
    W_dir = net.layout.split(found.direction)[1]
    torch.testing.assert_close(W_dir[0], -W_dir[1], rtol=0, atol=1e-10)
    per_sample = directional_sample_gradients(net, prob.data, torch.randn(net.num_params))
    scale = float(per_sample.var()) * 0.5  # the noise along a generic direction, B = 2
    assert found.noise <= 1e3 * EPS * max(scale, EPS)
