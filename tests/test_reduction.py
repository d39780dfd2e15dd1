"""The critical reduction operator: recovers the minimal network from its embeddings."""

from __future__ import annotations

import itertools

import pytest
import torch

import saddlemap as sm
from saddlemap.critical_points import certify
from saddlemap.reduction import reduce

ACTIVATIONS = ["tanh", "erf", "exp", "sigmoid", "softplus"]
BIASES = {"no_bias": (False, False), "hidden_bias": (True, False), "both_biases": (True, True)}


def _minimal(act: str, bias: str, K: int, seed: int) -> sm.TwoLayerNet:
    gen = torch.Generator().manual_seed(seed)
    hidden, output = BIASES[bias]
    W = torch.randn(3, 2, generator=gen)
    W[:, 0] = W[:, 0].abs() + 0.1  # canonical orientation: leading coordinate positive
    return sm.TwoLayerNet(
        torch.randn(3, K, generator=gen) + 0.5, W,
        b=torch.randn(3, generator=gen) if hidden else None,
        c=torch.randn(K, generator=gen) if output else None, activation=act,
    )


def _embedded(net: sm.TwoLayerNet, seed: int) -> sm.TwoLayerNet:
    """Split every neuron in two or three, add a null neuron and a zero-sum pair, shuffle."""
    gen = torch.Generator().manual_seed(seed + 100)
    a, w = [], []
    W = net.W_aug
    for k in range(net.width):
        parts = 2 + k % 2
        ratios = torch.rand(parts, generator=gen) - 0.3
        ratios = torch.cat([ratios[:-1], (1 - ratios[:-1].sum()).reshape(1)])
        for rho in ratios:
            a.append(rho * net.a[k])
            w.append(W[k])
    u = torch.randn(W.shape[1], generator=gen)
    a += [torch.zeros(net.output_dim), 0.7 * torch.ones(net.output_dim),
          -0.7 * torch.ones(net.output_dim)]
    w += [torch.randn(W.shape[1], generator=gen), u, u]
    order = torch.randperm(len(a), generator=gen)
    A, Wa = torch.stack(a)[order], torch.stack(w)[order]
    d = net.input_dim
    return sm.TwoLayerNet(A, Wa[:, :d], b=Wa[:, d] if net.b is not None else None, c=net.c,
                          activation=net.activation)


def _sorted_neurons(net: sm.TwoLayerNet) -> torch.Tensor:
    rows = torch.cat([net.W_aug, net.a], dim=1)
    return rows[torch.argsort(rows[:, 0])]


@pytest.mark.parametrize(
    ("act", "bias", "K", "seed"),
    list(itertools.product(ACTIVATIONS, BIASES, [1, 2], [0, 1])),
)
def test_reduce_inverts_embedding(act: str, bias: str, K: int, seed: int) -> None:
    net = _minimal(act, bias, K, seed)
    wide = _embedded(net, seed)
    red = reduce(wide)
    assert red.width == 3 and red.is_minimal and red.original_width == wide.width
    torch.testing.assert_close(_sorted_neurons(red.net), _sorted_neurons(net), rtol=0,
                               atol=1e-12)
    assert red.output_change <= 1e-12
    assert len(red.dropped_null) == 2  # the null neuron and the zero-sum pair
    assert sorted(i for g in red.groups for i in g) == [
        k for k in range(wide.width) if red.assignment[k] >= 0
    ]


@pytest.mark.parametrize("act", ["tanh", "erf", "sin"])
def test_odd_sign_twins_merge(act: str) -> None:
    net = sm.TwoLayerNet([0.5, -0.2, 0.3], [[1.0, 2.0], [-1.0, -2.0], [0.5, 0.1]], activation=act)
    red = reduce(net)
    assert red.groups == ((0, 1), (2,)) and red.signs == (1, -1, 1)
    torch.testing.assert_close(red.net.a.flatten(), torch.tensor([0.7, 0.3]), rtol=0, atol=1e-15)
    assert red.output_change <= 1e-15


def test_sigmoid_twins_merge_only_with_an_output_bias() -> None:
    W = [[1.0, 2.0], [-1.0, -2.0]]
    with_bias = reduce(sm.TwoLayerNet([0.5, -0.2], W, c=[0.1], activation="sigmoid"))
    assert with_bias.width == 1 and with_bias.output_change <= 1e-15
    # aσ(z) = −aσ(−z) + a moves a = −0.2 into the bias
    assert float(with_bias.net.c[0]) == pytest.approx(0.1 - 0.2)
    without = reduce(sm.TwoLayerNet([0.5, -0.2], W, activation="sigmoid"))
    assert without.width == 2 and without.is_minimal
    assert any("no output bias" in n for n in without.notes)


def test_softplus_flips_only_where_linear_parts_cancel() -> None:
    u = torch.tensor([-1.0, 0.5])
    # (2, u) and (−1, 2u) flip with linear parts 2u − 2u = 0, then merge with (3, −u)
    net = sm.TwoLayerNet([2.0, -1.0, 3.0], torch.stack([u, 2 * u, -u]), activation="softplus")
    red = reduce(net)
    assert red.width == 2 and red.output_change <= 1e-14
    lone = reduce(sm.TwoLayerNet([0.5, 0.5], [[1.0, 2.0], [-1.0, -2.0]], activation="softplus"))
    assert lone.width == 2 and any("do not cancel" in n for n in lone.notes)


def test_relu_merges_by_direction() -> None:
    net = sm.TwoLayerNet([1.0, 2.0, 0.5], [[1.0, 2.0], [2.0, 4.0], [-1.0, 0.3]], activation="relu")
    red = reduce(net)
    assert red.width == 2 and red.output_change <= 1e-14
    assert any("not analytic" in n for n in red.notes)
    # the representative keeps its own scale: a = Σ a_k‖w_k‖/‖w_rep‖ = (1·1 + 2·2)/2
    assert sorted(red.net.a.flatten().tolist()) == pytest.approx([0.5, 2.5])


def test_zero_and_constant_neurons() -> None:
    zero = reduce(sm.TwoLayerNet([1.0, 2.0], [[0.0, 0.0], [1.0, 0.0]], activation="tanh"))
    assert zero.width == 1 and zero.dropped_zero == (0,)
    const = reduce(sm.TwoLayerNet([1.0, 2.0], [[0.0, 0.0], [1.0, 0.0]], c=[0.0],
                                  activation="sigmoid"))
    assert const.width == 1 and float(const.net.c[0]) == pytest.approx(0.5)
    kept = reduce(sm.TwoLayerNet([1.0, 2.0], [[0.0, 0.0], [1.0, 0.0]], activation="sigmoid"))
    assert kept.width == 2  # no bias to absorb the constant σ(0)·a


def test_polynomial_dependence_is_reported() -> None:
    red = reduce(sm.TwoLayerNet([1.0, 1.0, 1.0], [[1.0], [2.0], [3.0]], activation="identity"))
    assert red.rank_deficiency == 2 and not red.is_minimal
    assert any("polynomial" in n for n in red.notes)


def test_tolerance_decides_what_is_equal() -> None:
    net = sm.TwoLayerNet([1.0, 1.0], [[1.0], [1.0 + 1e-6]], activation="tanh")
    assert reduce(net).width == 2  # default tol √ε ≈ 1.5e-8
    loose = reduce(net, tol=1e-5)
    assert loose.width == 1 and loose.tol == 1e-5
    assert 0 < loose.output_change < 1e-5


def test_reduce_of_a_critical_point_is_critical() -> None:
    data = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
    a, w = 0.610515537972, 1.433931221329
    split = sm.find_critical_point(sm.TwoLayerNet([2 * a, -a, 0.0], [[w], [w], [0.05]]), data)
    assert split.converged
    red = reduce(split.net, data.X)
    assert red.width == 1
    assert certify(red.net, data).converged
    assert red.net.W[0, 0] == pytest.approx(w, abs=1e-9)


def test_null_neuron_sliding_into_a_cluster_needs_a_looser_tolerance() -> None:
    # A null neuron started at 0.7 slides along Z_f into the double zero at w* (docs/theory.md §6:
    # branches meet there); refinement leaves it ~1e-5 from w* with a ~ 1e-6.
    data = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
    a, w = 0.610515537972, 1.433931221329
    cp = sm.find_critical_point(sm.TwoLayerNet([2 * a, -a, 0.0], [[w], [w], [0.7]]), data)
    assert cp.converged
    assert reduce(cp.net, data.X).width == 2
    loose = reduce(cp.net, data.X, tol=1e-4)
    assert loose.width == 1 and loose.output_change < 1e-9


def test_many_neurons_group_in_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(40, 20, generator=gen)
    labels = torch.randint(0, 40, (20_000,), generator=gen)
    net = sm.TwoLayerNet(torch.rand(20_000, generator=gen) + 0.1, centres[labels],
                         activation="exp")
    red = reduce(net, check_rank=False)
    assert red.width == len(labels.unique())
    assert red.output_change <= 1e-9 * float(net.a.abs().sum())
