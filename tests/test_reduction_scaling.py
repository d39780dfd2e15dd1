"""reduce on wide, already-minimal networks, and the windowed dependence check."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch

import saddlemap as sm
from saddlemap import reduction
from saddlemap.reduction import _probe_inputs, _rank_deficiency, _windowed_rank_deficiency

GEN_SEED = 0


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(GEN_SEED)


def test_a_minimal_network_of_20000_neurons_reduces_to_itself_quickly() -> None:
    gen = _gen()
    m = 20_000
    net = sm.TwoLayerNet(torch.randn(m, generator=gen), torch.randn(m, 20, generator=gen),
                         activation="tanh")
    start = time.perf_counter()
    red = sm.reduce(net)
    elapsed = time.perf_counter() - start
    assert red.width == m and red.is_minimal and red.output_change == 0.0
    assert red.assignment == tuple(range(m)) and not red.dropped_null
    signs = torch.tensor(red.signs, dtype=net.dtype)[:, None]  # tanh: canonical signs
    assert torch.equal(red.net.a, signs * net.a) and torch.equal(red.net.W, signs * net.W)
    # 0.7 s measured on a loaded 2-core machine; the single SVD this replaces needs about
    # 45 min here (0.34 s at m = 1,000, m³).  A 40× margin for load.
    assert elapsed < 30.0


def _random(act: str, m: int, d: int, bias: bool) -> sm.TwoLayerNet:
    gen = _gen()
    return sm.TwoLayerNet(torch.randn(m, generator=gen), torch.randn(m, d, generator=gen),
                          b=torch.randn(m, generator=gen) if bias else None, activation=act)


def _sign_pairs() -> sm.TwoLayerNet:
    """Sigmoid neurons at ±w with an output bias: σ(z) + σ(−z) = 1, one dependence a pair."""
    gen = _gen()
    w = torch.randn(10, 3, generator=gen)
    return sm.TwoLayerNet(torch.randn(20, generator=gen), torch.cat([w, -w]), c=[0.1],
                          activation="sigmoid")


def _bias_pairs() -> sm.TwoLayerNet:
    """exp neurons with equal w and different b: e^{wᵀx + b} = e^b e^{wᵀx}."""
    gen = _gen()
    w = torch.randn(12, 3, generator=gen)
    return sm.TwoLayerNet(torch.randn(24, generator=gen), torch.cat([w, w]),
                          b=torch.randn(24, generator=gen), activation="exp")


def _duplicates() -> sm.TwoLayerNet:
    gen = _gen()
    W = torch.randn(30, 4, generator=gen)
    W[7], W[19] = W[3], W[11]
    return sm.TwoLayerNet(torch.randn(30, generator=gen), W, activation="tanh")


AGREE: list[tuple[str, Callable[[], sm.TwoLayerNet], int]] = [
    ("random tanh", lambda: _random("tanh", 40, 3, True), 0),
    ("random softplus", lambda: _random("softplus", 37, 5, False), 0),
    ("random erf", lambda: _random("erf", 13, 2, True), 0),
    ("sigmoid ±w pairs", _sign_pairs, 10),
    ("exp bias pairs", _bias_pairs, 12),
    ("tanh duplicates", _duplicates, 2),
]


@pytest.mark.parametrize(("name", "build", "expected"), AGREE, ids=[a[0] for a in AGREE])
@pytest.mark.parametrize("window", [4, 8, 16])
def test_windowed_check_agrees_with_the_svd(
    name: str, build: Callable[[], sm.TwoLayerNet], expected: int, window: int
) -> None:
    net = build()
    probes = _probe_inputs(net, None, 2 * net.width + 8)
    exact, _ = _rank_deficiency(net, probes)
    windowed, _ = _windowed_rank_deficiency(net, probes, window)
    assert exact == windowed == expected


@pytest.mark.parametrize("window", [8, 16])
def test_windowed_check_is_a_lower_bound_for_global_dependence(window: int) -> None:
    # Identity neurons span the D + 1 = 4 dimensional affine functions: 36 of 40 are
    # dependent, but a window sees only its own (window − 4 or fewer) of them.
    net = _random("identity", 40, 3, True)
    probes = _probe_inputs(net, None, 88)
    exact, _ = _rank_deficiency(net, probes)
    windowed, _ = _windowed_rank_deficiency(net, probes, window)
    assert exact == 36 and 0 < windowed <= exact
    assert windowed >= (40 // window) * (window - 4)  # every full window of one tiling


def test_wide_reduce_reports_dependence_through_the_windows() -> None:
    gen = _gen()
    pairs = (reduction.EXACT_RANK_WIDTH + 76) // 2  # 550 pairs: above the exact width
    w = torch.randn(pairs, 3, generator=gen)
    net = sm.TwoLayerNet(torch.randn(2 * pairs, generator=gen), torch.cat([w, w]),
                         b=torch.randn(2 * pairs, generator=gen), activation="exp")
    X = 0.5 * torch.randn(300, 3, generator=gen)  # more rows than a window uses: a subset
    for red in (sm.reduce(net), sm.reduce(net, X)):
        assert red.width == 2 * pairs > reduction.EXACT_RANK_WIDTH
        assert red.rank_deficiency == pairs and not red.is_minimal
        assert any("linearly dependent" in note for note in red.notes)
    minimal = sm.TwoLayerNet(torch.randn(2 * pairs, generator=gen),
                             torch.randn(2 * pairs, 3, generator=gen), activation="tanh")
    assert sm.reduce(minimal, X).is_minimal


def test_small_networks_keep_the_single_svd(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("windowed check used below EXACT_RANK_WIDTH")

    monkeypatch.setattr(reduction, "_windowed_rank_deficiency", fail)
    red = sm.reduce(sm.TwoLayerNet([1.0, 1.0, 1.0], [[1.0], [2.0], [3.0]], activation="identity"))
    assert red.rank_deficiency == 2
