"""Embeddings of MLPs per layer: the output is kept, criticality is kept by splits, and the
Hessian inertia never decreases (H_old = Aᵀ H_new A)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import saddlemap as sm
from saddlemap.deep import (
    MLP,
    add_mlp_null_neuron,
    mlp_gradient,
    mlp_hessian,
    mlp_loss,
    mlp_spectrum,
    split_mlp_neuron,
)

EPS = torch.finfo(torch.float64).eps


def random_mlp(sizes: tuple[int, ...], activation: str = "tanh", seed: int = 0,
               bias: bool = True) -> MLP:
    gen = torch.Generator().manual_seed(seed)
    L = len(sizes) - 1
    return MLP([torch.randn(sizes[j + 1], sizes[j], generator=gen) for j in range(L)],
               [0.5 * torch.randn(sizes[j + 1], generator=gen) if bias else None
                for j in range(L)], activation=activation)


def teacher_problem(activation: str, seed: int, K: int, widths: tuple[int, ...] = (3, 2),
                    n: int = 80, d: int = 2) -> tuple[MLP, sm.Dataset]:
    """A teacher MLP and its outputs plus noise 0.1 (a non-global problem)."""
    teacher = random_mlp((d, *widths, K), activation, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    X = torch.randn(n, d, generator=gen)
    y = teacher(X) + 0.1 * torch.randn(n, K, generator=gen)
    return teacher, sm.Dataset(X, y)


def newton_to_critical(net: MLP, data: sm.Dataset, steps: int = 300) -> MLP:
    """Saddle-free damped Newton, θ ← θ − Q (|Λ| + μ)⁻¹ Qᵀ ∇R, accepted when R does not rise:
    it descends like gradient descent far away and converges quadratically near a minimum."""
    loss, mu = mlp_loss(net, data), None
    for _ in range(steps):
        g = mlp_gradient(net, data)
        if float(g.norm()) <= 1e-13:
            break
        lam, Q = torch.linalg.eigh(mlp_hessian(net, data))
        mu = 1e-2 * float(lam.abs().max()) if mu is None else mu
        for _ in range(60):
            cand = net.unflatten(net.flatten() - Q @ ((Q.T @ g) / (lam.abs() + mu)))
            new = mlp_loss(cand, data)
            if new <= loss:
                break
            mu *= 4
        net, loss, mu = cand, new, mu / 4
    return net


#: (activation, seed, K) for which the Newton run from the teacher converges to a finite
#: critical point (others head off to infinity: a neuron saturates to fit the noise).
CRITICAL = [("tanh", 0, 2), ("gelu", 0, 1), ("erf", 1, 1)]


@pytest.fixture(scope="module", params=CRITICAL, ids=[f"{a}-s{s}-K{k}" for a, s, k in CRITICAL])
def critical(request: pytest.FixtureRequest) -> tuple[MLP, sm.Dataset]:
    teacher, data = teacher_problem(*request.param)
    star = newton_to_critical(teacher, data)
    assert float(mlp_gradient(star, data).norm()) <= 1e-10
    assert max(float(W.abs().max()) for W in star.weights) < 20  # finite, not at infinity
    return star, data


RATIOS = [(0.5, 0.5), (0.3, 0.7), (2.0, -1.0), (-0.5, 1.5), (0.2, 0.5, 0.3), (1.0, 0.0)]


def _inputs(mlp: MLP, n: int = 9, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, mlp.input_dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("sizes", "ratios"), list(itertools.product(
    [(2, 3, 2, 1), (3, 2, 3, 2, 2)], RATIOS)))
def test_splitting_any_neuron_of_any_layer_keeps_the_output(sizes: tuple[int, ...],
                                                            ratios: tuple[float, ...]) -> None:
    mlp = random_mlp(sizes, "softplus")
    X = _inputs(mlp)
    g = mlp(X)
    for layer, width in enumerate(mlp.widths):
        for neuron in range(width):
            emb = split_mlp_neuron(mlp, layer, neuron, ratios)
            widths = list(mlp.widths)
            widths[layer] += len(ratios) - 1
            assert emb.net.widths == tuple(widths)
            # each output is a sum of terms split in ratios: rounding of a few ulps
            atol = 64 * EPS * (1.0 + float(g.abs().max()))
            torch.testing.assert_close(emb.net(X), g, rtol=0, atol=atol)
            assert emb.sample_independent and emb.is_linear and emb.kind == "split"


@pytest.mark.parametrize("bias", [True, False])
def test_null_neurons_keep_the_output_in_every_layer(bias: bool) -> None:
    mlp = random_mlp((2, 3, 2, 2, 1), "sigmoid", bias=bias)
    X = _inputs(mlp)
    gen = torch.Generator().manual_seed(7)
    for layer in range(mlp.depth - 1):
        u = torch.randn(mlp.layout.sizes[layer] + int(bias), generator=gen)
        emb = add_mlp_null_neuron(mlp, layer, u)
        torch.testing.assert_close(emb.net(X), mlp(X), rtol=0, atol=0)
        assert not emb.is_linear and not emb.sample_independent
        assert torch.equal(emb.net.weights[layer][-1], u[: mlp.layout.sizes[layer]])
        zero = add_mlp_null_neuron(mlp, layer)
        assert zero.is_linear
        # sigmoid(0) = 1/2: harmless only where the next layer has a bias
        assert zero.sample_independent == bias


@pytest.mark.parametrize("kind", ["split", "split3", "null"])
def test_the_map_is_exact_and_the_loss_is_kept_at_every_point(kind: str) -> None:
    mlp = random_mlp((2, 3, 2, 1), "tanh")
    data = sm.Dataset(_inputs(mlp, 7), torch.randn(7, 1, generator=torch.Generator()
                                                   .manual_seed(1)))
    emb = {"split": lambda: split_mlp_neuron(mlp, 1, 0, [2.0, -1.0]),
           "split3": lambda: split_mlp_neuron(mlp, 0, 2, [0.2, 0.5, 0.3]),
           "null": lambda: add_mlp_null_neuron(mlp, 0, [0.3, -0.2, 0.1])}[kind]()
    A = emb.matrix
    assert torch.equal(emb.apply(mlp.flatten()), A @ mlp.flatten() + emb.offset)
    other = random_mlp((2, 3, 2, 1), "tanh", seed=3)
    moved = emb(other)
    assert mlp_loss(moved, data) == pytest.approx(mlp_loss(other, data), rel=1e-13)
    H_old, H_new = mlp_hessian(other, data), mlp_hessian(moved, data)
    back = A.T @ H_new @ A
    torch.testing.assert_close(back, H_old, rtol=0, atol=1e-11 * float(H_old.abs().max()))
    old, new = mlp_spectrum(other, data).inertia, mlp_spectrum(moved, data).inertia
    assert old is not None and new is not None
    assert new.negative >= old.negative and new.positive >= old.positive


SPLITS = [(layer, neuron, ratios) for layer, neuron in [(0, 0), (0, 2), (1, 1)]
          for ratios in [(0.3, 0.7), (2.0, -1.0), (0.2, 0.5, 0.3)]]


@pytest.mark.parametrize(("layer", "neuron", "ratios"), SPLITS)
def test_a_critical_point_stays_critical_and_negative_eigenvalues_never_decrease(
    critical: tuple[MLP, sm.Dataset], layer: int, neuron: int, ratios: tuple[float, ...]
) -> None:
    star, data = critical
    emb = split_mlp_neuron(star, layer, neuron, ratios)
    # the copies' gradients are ρ_c times the original's: ‖∇R‖ grows at most by max|ρ|
    assert float(mlp_gradient(emb.net, data).norm()) <= 1e-10
    old, new = mlp_spectrum(star, data), mlp_spectrum(emb.net, data)
    assert old.inertia is not None and new.inertia is not None
    assert new.inertia.negative >= old.inertia.negative
    assert new.inertia.positive >= old.inertia.positive


def test_a_null_neuron_at_zero_keeps_a_critical_point_critical(
    critical: tuple[MLP, sm.Dataset]
) -> None:
    star, data = critical
    for layer in range(star.depth - 1):
        emb = add_mlp_null_neuron(star, layer)
        assert emb.sample_independent  # tanh(0) = 0, gelu(0) = 0
        assert float(mlp_gradient(emb.net, data).norm()) <= 1e-10
        # a null neuron at a random u is not critical: its outgoing gradient is φ_j(u) ≠ 0
        u = torch.ones(star.layout.sizes[layer] + 1)
        moved = add_mlp_null_neuron(star, layer, u).net
        assert float(mlp_gradient(moved, data).norm()) > 1e-6


BAD = [
    (lambda m: split_mlp_neuron(m, 2, 0, [0.5, 0.5]), "hidden layer 2 is out of range"),
    (lambda m: split_mlp_neuron(m, True, 0, [0.5, 0.5]), "out of range"),
    (lambda m: split_mlp_neuron(m, 0, 3, [0.5, 0.5]), "neuron 3 is out of range"),
    (lambda m: split_mlp_neuron(m, 0, 0, [0.5, 0.6]), "sum to 1"),
    (lambda m: split_mlp_neuron(m, 0, 0, [1.0]), "at least 2"),
    (lambda m: split_mlp_neuron(m, 0, 0, [np.nan, 1.0]), "finite"),
    (lambda m: split_mlp_neuron(m, 0, 0, "ab"), "real numbers"),
    (lambda m: split_mlp_neuron(m, "0", 0, [0.5, 0.5]), "integer"),
    (lambda m: add_mlp_null_neuron(m, 1, [1.0]), "length 1"),
    (lambda m: add_mlp_null_neuron(m, 0, [1.0, np.inf]), "finite"),
    (lambda m: split_mlp_neuron(m, 0, 0, [0.5, 0.5])(random_mlp((2, 2, 1))), "layout"),
    (lambda m: split_mlp_neuron(m, 0, 0, [0.5, 0.5]).apply(torch.zeros(3)), "length"),
]


@pytest.mark.parametrize(("call", "match"), BAD)
def test_bad_embeddings_are_refused(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sm.ModelError, match=match):
        call(random_mlp((2, 3, 2, 1)))
