"""The analysis context: cached objects, the dense rule and the budget for expensive products."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import Case, make_problem

import saddlemap as sm
from saddlemap import analysis, spectral


def _net(d: int, m: int, K: int) -> sm.TwoLayerNet:
    gen = torch.Generator().manual_seed(0)
    return sm.TwoLayerNet(torch.randn(m, K, generator=gen), torch.randn(m, d, generator=gen),
                          torch.zeros(m), torch.zeros(K))


@pytest.mark.parametrize(
    ("n", "d", "m", "K", "budget"),
    [
        (1797, 64, 20, 10, None),  # digits: products are cheap, ARPACK runs to convergence
        (13, 3, 5, 1, None),
        (2000, 784, 256, 1, 621),  # MNIST-sized inputs: ⌊2.5e11 / (n m (D + K))⌋
        (10_000, 784, 256, 1, 124),
    ],
)
def test_matvec_budget_by_the_cost_of_a_product(
    n: int, d: int, m: int, K: int, budget: int | None
) -> None:
    net = _net(d, m, K)
    data = sm.Dataset(torch.zeros(n, d), torch.zeros(n, K))
    assert sm.Analysis(net, data).matvec_budget == budget
    assert sm.Analysis(net, data, max_matvecs=40).matvec_budget == 40
    with pytest.raises(sm.OptionError, match="max_matvecs"):
        sm.Analysis(net, data, max_matvecs=1)


def test_budgeted_spectrum_is_used_and_kept() -> None:
    net, data = make_problem(Case("tanh", "both_biases", 2, 7, d=3, m=5))
    an = sm.Analysis(net, data, dense_limit=10, max_matvecs=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 9 products leave pairs unconverged
        spec = an.spectrum
    assert spec.method == "lanczos" and spec.num_matvecs <= 9 and an.spectrum is spec
    dense = sm.Analysis(net, data).spectrum
    assert dense.min <= spec.min and spec.max <= dense.max  # Ritz values lie inside


def test_diagnose_skips_refinement_where_products_are_expensive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, data = make_problem(Case("tanh", "both_biases", 1, 13, d=2, m=4))
    monkeypatch.setattr(spectral, "SPECTRUM_WORK", 1.0)  # every product "expensive"
    monkeypatch.setattr(analysis, "DENSE_WORK", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rep = sm.diagnose(net, data, escape_steps=0)
    assert rep.refined is None and not rep.start.converged
    assert any("refinement skipped" in note.text for note in rep.notes)
    assert rep.start.spectrum.num_matvecs <= spectral.MIN_MATVECS
    if rep.branch is not None:
        assert rep.branch.star.iterations == 0
