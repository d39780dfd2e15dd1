"""Saddle witnesses per layer: φ_j against the gradient and autodiff, the predicted curvature
against Hessian-vector products, and the way down at embedded strict minima."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close_scaled
from test_deep_embedding import CRITICAL, newton_to_critical, random_mlp, teacher_problem

import saddlemap as sm
from saddlemap.deep import (
    MLP,
    layer_residual_function,
    mlp_gradient,
    mlp_spectrum,
    null_neuron_witness,
    split_witness,
)


def random_problem(activation: str = "tanh", K: int = 2, bias: bool = True,
                   seed: int = 0) -> tuple[MLP, sm.Dataset]:
    mlp = random_mlp((2, 3, 3, K), activation, seed, bias=bias)
    gen = torch.Generator().manual_seed(seed + 1)
    return mlp, sm.Dataset(torch.randn(13, 2, generator=gen), torch.randn(13, K, generator=gen))


@pytest.mark.parametrize("activation", ["tanh", "softplus", "sigmoid"])
@pytest.mark.parametrize("bias", [True, False])
def test_phi_is_the_outgoing_gradient_and_its_derivatives_match_autodiff(
    activation: str, bias: bool
) -> None:
    mlp, data = random_problem(activation, bias=bias)
    grads = mlp.layout.split(mlp_gradient(mlp, data))
    gen = torch.Generator().manual_seed(4)
    for j in range(mlp.depth - 1):
        rf = layer_residual_function(mlp, data, j)
        assert_close_scaled(rf.phi(mlp.incoming(j)).T, grads[j + 1][0], 1e-12)
        u = torch.randn(rf.H.shape[1], generator=gen)
        jac = torch.func.jacrev(rf.phi)(u)
        assert_close_scaled(rf.grad(u), jac, 1e-12)
        a = torch.randn(rf.delta.shape[1], generator=gen)
        hess = torch.func.hessian(lambda w, a=a, rf=rf: rf.phi(w) @ a)(u)
        assert_close_scaled(rf.curvature(u, a), hess, 1e-12)


@pytest.mark.parametrize("activation", ["tanh", "erf", "gelu"])
def test_the_predicted_curvature_is_the_measured_one_at_any_point(activation: str) -> None:
    # neither construction needs criticality for its curvature formula
    mlp, data = random_problem(activation)
    for j in range(mlp.depth - 1):
        null = null_neuron_witness(mlp, data, j, u=torch.zeros(mlp.layout.sizes[j] + 1))
        assert null.curvature == pytest.approx(null.predicted, rel=1e-10)
        for k in range(mlp.widths[j]):
            for ratio in (2.0, 0.5, -1.0):
                split = split_witness(mlp, data, j, k, ratio=ratio)
                assert split.curvature == pytest.approx(split.predicted, rel=1e-9, abs=1e-14)
                assert float(torch.linalg.vector_norm(split.direction)) == pytest.approx(1.0)


@pytest.fixture(scope="module", params=CRITICAL, ids=[f"{a}-s{s}-K{k}" for a, s, k in CRITICAL])
def strict_minimum(request: pytest.FixtureRequest) -> tuple[MLP, sm.Dataset]:
    teacher, data = teacher_problem(*request.param)
    star = newton_to_critical(teacher, data)
    assert float(mlp_gradient(star, data).norm()) <= 1e-10
    spec = mlp_spectrum(star, data)
    assert spec.inertia is not None and spec.inertia.negative == 0  # a local minimum
    return star, data


def test_null_neurons_turn_a_minimum_into_a_strict_saddle_in_every_layer(
    strict_minimum: tuple[MLP, sm.Dataset]
) -> None:
    star, data = strict_minimum
    for j in range(star.depth - 1):
        w = null_neuron_witness(star, data, j)
        assert w.kind == "null neuron" and w.verified
        assert w.curvature < 0 and w.best_loss < w.loss
        assert float(mlp_gradient(w.net, data).norm()) <= 1e-10  # still critical
        assert w.curvature == pytest.approx(w.predicted, rel=1e-9)
        assert sm.deep.mlp_loss(w.stepped, data) == pytest.approx(w.best_loss, rel=1e-14)
        spec = mlp_spectrum(w.net, data)
        assert spec.min <= w.curvature + 1e-12  # λ_min ≤ any Rayleigh quotient


def test_splits_turn_a_minimum_into_a_strict_saddle_in_every_layer(
    strict_minimum: tuple[MLP, sm.Dataset]
) -> None:
    star, data = strict_minimum
    for j in range(star.depth - 1):
        for k in range(star.widths[j]):
            w = split_witness(star, data, j, k)
            assert w.kind == "split" and w.verified and w.curvature < 0
            assert w.curvature == pytest.approx(w.predicted, rel=1e-9)
            assert float(mlp_gradient(w.net, data).norm()) <= 1e-10
            spec = mlp_spectrum(w.net, data)
            assert spec.inertia is not None and spec.inertia.negative >= 1


def test_bad_witness_requests_are_refused() -> None:
    mlp, data = random_problem("tanh")
    with pytest.raises(sm.ModelError, match="hidden layer 2 is out of range"):
        null_neuron_witness(mlp, data, 2)
    with pytest.raises(sm.ModelError, match="not a zero"):
        null_neuron_witness(mlp, data, 0, u=torch.ones(3))
    with pytest.raises(sm.OptionError, match="length D=3"):
        layer_residual_function(mlp, data, 0).phi(torch.ones(5))
    with pytest.raises(sm.ModelError, match="neuron 7"):
        split_witness(mlp, data, 0, 7)
    with pytest.raises(sm.ModelError, match="not 0 or 1"):
        split_witness(mlp, data, 0, 0, ratio=1.0)
    linear = MLP(mlp.weights, mlp.biases, "identity")
    with pytest.raises(sm.ModelError, match="is zero"):
        split_witness(linear, data, 0, 0)  # σ'' = 0: K = 0
    sigmoid, sig_data = random_problem("sigmoid", bias=False)
    with pytest.raises(sm.ModelError, match="no zero"):
        # a random point: its neurons are no zeros of φ, and σ(0) ≠ 0 with no bias to absorb it
        null_neuron_witness(sigmoid, sig_data, 1)
