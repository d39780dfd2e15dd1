"""Reduction of MLPs layer by layer: random splits and null neurons in every layer undone."""

from __future__ import annotations

import itertools

import pytest
import torch

import saddlemap as sm
from saddlemap.deep import MLP, add_mlp_null_neuron, reduce_mlp, split_mlp_neuron

EPS = torch.finfo(torch.float64).eps


def random_mlp(sizes: tuple[int, ...], activation: str, seed: int, bias: bool = True) -> MLP:
    gen = torch.Generator().manual_seed(seed)
    L = len(sizes) - 1
    return MLP([torch.randn(sizes[j + 1], sizes[j], generator=gen) for j in range(L)],
               [0.5 * torch.randn(sizes[j + 1], generator=gen) if bias else None
                for j in range(L)], activation=activation)


def permute_layer(mlp: MLP, layer: int, order: torch.Tensor) -> MLP:
    """The same function with the neurons of a hidden layer in another order."""
    W, b = list(mlp.weights), list(mlp.biases)
    W[layer] = W[layer][order]
    b[layer] = None if b[layer] is None else b[layer][order]  # type: ignore[index]
    W[layer + 1] = W[layer + 1][:, order]
    return MLP(W, b, mlp.activation)


def widen(mlp: MLP, seed: int) -> MLP:
    """Random splits (some with negative ratios) and null neurons in every hidden layer,
    then the neurons of every layer shuffled."""
    gen = torch.Generator().manual_seed(seed)
    net = mlp
    for layer in range(mlp.depth - 1):
        for _ in range(2):
            k = int(torch.randint(net.widths[layer], (1,), generator=gen))
            r = float(torch.rand(1, generator=gen)) * 3 - 1  # ratios in [−1, 2)
            net = split_mlp_neuron(net, layer, k, [r, 1.0 - r]).net
        u = torch.randn(net.layout.sizes[layer], generator=gen)
        net = add_mlp_null_neuron(net, layer, u).net
        net = permute_layer(net, layer, torch.randperm(net.widths[layer], generator=gen))
    return net


CASES = list(itertools.product([(2, 3, 2, 1), (3, 2, 3, 2, 2), (2, 2, 2, 2, 2, 1)],
                               ["tanh", "sigmoid", "softplus", "erf", "gelu", "relu"], [0, 1]))


@pytest.mark.parametrize(("sizes", "activation", "seed"), CASES)
def test_reduce_recovers_random_splits_and_null_neurons(sizes: tuple[int, ...],
                                                        activation: str, seed: int) -> None:
    original = random_mlp(sizes, activation, seed, bias=seed == 0)
    wide = widen(original, seed)
    assert all(w > w0 for w, w0 in zip(wide.widths, original.widths, strict=True))
    X = torch.randn(13, sizes[0], generator=torch.Generator().manual_seed(9))
    red = reduce_mlp(wide, X)
    assert red.widths_before == wide.widths
    assert red.widths_after == original.widths
    assert red.is_minimal
    assert any("outside the theory" in n for n in red.notes) == (activation == "relu")
    scale = 1.0 + float(original(X).abs().max())
    assert red.output_change <= 1e-12 * scale
    probe = torch.randn(50, sizes[0], generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(red.net(probe), original(probe), rtol=0, atol=1e-12 * scale)
    # bookkeeping: every original neuron is kept in exactly one group or dropped
    for j, width in enumerate(wide.widths):
        kept = sorted(k for g in red.groups[j] for k in g)
        assert sorted(kept + list(red.dropped[j])) == list(range(width))
        assert all(red.assignment[j][k] == -1 for k in red.dropped[j])
        assert len(red.dropped[j]) >= 1  # the null neuron of each layer


def test_sign_twins_of_an_odd_activation_are_folded() -> None:
    mlp = random_mlp((2, 3, 2, 1), "tanh", 0)
    W, b = list(mlp.weights), list(mlp.biases)
    # neuron 3 of layer 1 is −(neuron 0) with outgoing −ρ a: together (1 − ρ) a + ρ a
    rho = 0.3
    twin_in = -W[1][0:1]
    W[1] = torch.cat([W[1], twin_in])
    b[1] = torch.cat([b[1], -b[1][0:1]])  # type: ignore[index]
    out = W[2].clone()
    W[2] = torch.cat([out, -rho * out[:, 0:1]], dim=1)
    W[2][:, 0] = (1 - rho) * out[:, 0]
    twin = MLP(W, b, "tanh")
    X = torch.randn(7, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(twin(X), mlp(X), rtol=0, atol=1e-14)
    red = reduce_mlp(twin, X)
    assert red.widths_after == (3, 2) and red.groups[1] == ((0, 2), (1,))
    torch.testing.assert_close(red.net(X), mlp(X), rtol=0, atol=1e-14)


def test_sigmoid_twins_move_their_constant_into_the_next_bias() -> None:
    # σ(−z) = 1 − σ(z): a copy (−w̃, −a) adds −a(1 − σ(z)); +a in the next bias undoes it
    mlp = random_mlp((2, 3, 2, 1), "sigmoid", 2)
    W, b = list(mlp.weights), list(mlp.biases)
    a = W[1][:, 1:2].clone()
    W[0] = torch.cat([W[0], -W[0][1:2]])
    b[0] = torch.cat([b[0], -b[0][1:2]])  # type: ignore[index]
    W[1] = torch.cat([W[1], -0.5 * a], dim=1)
    W[1][:, 1:2] = 0.5 * a
    b[1] = b[1] + 0.5 * a[:, 0]  # type: ignore[operator]
    twin = MLP(W, b, "sigmoid")
    X = torch.randn(7, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(twin(X), mlp(X), rtol=0, atol=1e-14)
    red = reduce_mlp(twin, X)
    assert red.widths_after == (3, 2)
    torch.testing.assert_close(red.net(X), mlp(X), rtol=0, atol=1e-14)


def test_constant_neurons_are_absorbed_by_the_next_bias() -> None:
    mlp = random_mlp((2, 3, 2, 1), "erf", 3)
    W, b = list(mlp.weights), list(mlp.biases)
    W[0] = torch.cat([W[0], torch.zeros(1, 2)])  # neuron 3: the constant erf(0.8)
    b[0] = torch.cat([b[0], torch.tensor([0.8])])  # type: ignore[index]
    W[1] = torch.cat([W[1], torch.tensor([[1.5], [-2.0]])], dim=1)
    const = MLP(W, b, "erf")
    red = reduce_mlp(const)
    assert red.widths_after == (3, 2) and red.dropped[0] == (3,)
    X = torch.randn(7, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(red.net(X), const(X), rtol=0, atol=1e-14)
    # without a bias to absorb it, a constant that is not zero stays
    no_bias = MLP(W, [b[0], None, b[2]], "erf")
    kept = reduce_mlp(no_bias)
    assert kept.widths_after == (4, 2) and any("no bias" in n for n in kept.notes)


def test_a_layer_that_carries_nothing_keeps_one_null_neuron() -> None:
    mlp = MLP([torch.randn(3, 2), torch.randn(2, 3), torch.zeros(1, 2)], activation="tanh")
    red = reduce_mlp(mlp)
    assert red.widths_after == (1, 1)
    assert any("every neuron dropped" in n for n in red.notes)
    assert red.output_change == 0.0


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(tol=-1.0), "tol"), (dict(a_tol=float("nan")), "a_tol"), (dict(num_probes=-1),
                                                                    "num_probes")])
def test_bad_options_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(sm.OptionError, match=match):
        reduce_mlp(random_mlp((2, 3, 1), "tanh", 0), **kwargs)
