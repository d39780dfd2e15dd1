"""The zero set Z_f of the residual function: 1-d roots, projections, classification."""

from __future__ import annotations

import pytest
import torch

import saddlemap as sm
from saddlemap.errors import OptionError
from saddlemap.zero_set import ZeroSet

X_WORKED = [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0]
Y_WORKED = [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0]
A_STAR, W_STAR = 0.610515537972, 1.433931221329


def test_worked_example_zeros() -> None:
    # docs/theory.md §8: a simple zero at 0 with φ'(0) = 0.023593373810 and double zeros at ±w*
    rf = sm.residual_function(sm.TwoLayerNet([A_STAR], [[W_STAR]]), sm.Dataset(X_WORKED, Y_WORKED))
    zeros = ZeroSet(rf).zeros_1d((-12.0, 12.0))
    assert [round(z.u[0], 4) + 0.0 for z in zeros] == [-1.4339, 0.0, 1.4339]
    assert [z.regular for z in zeros] == [False, True, False]
    assert zeros[1].grad_norm == pytest.approx(0.023593373810, rel=1e-9)
    assert all(z.phi_norm <= 1e-9 * float(rf.e.abs().sum()) for z in zeros)
    # a double zero known to δ ≈ 1e-13 is resolved to about √δ
    assert zeros[2].u[0] == pytest.approx(W_STAR, abs=1e-4)


def test_simple_zero_at_the_origin_survives_rounding() -> None:
    # σ(0) = 0 makes every term of φ vanish at u = 0; a root found as 1e-17 is still a zero
    cp = sm.find_critical_point(sm.TwoLayerNet([0.6], [[1.4]]), sm.Dataset(X_WORKED, Y_WORKED))
    rf = sm.residual_function(cp.net, sm.Dataset(X_WORKED, Y_WORKED))
    zeros = ZeroSet(rf).zeros_1d()
    assert len(zeros) == 3 and abs(zeros[1].u[0]) < 1e-12 and zeros[1].regular


def test_two_outputs_share_zeros_when_components_agree() -> None:
    data = sm.Dataset(X_WORKED, torch.tensor([Y_WORKED, Y_WORKED]).T)
    rf = sm.residual_function(sm.TwoLayerNet([[A_STAR, A_STAR]], [[W_STAR]]), data)
    assert [round(z.u[0], 4) + 0.0 for z in ZeroSet(rf).zeros_1d()] == [-1.4339, 0.0, 1.4339]


def test_projection_in_two_dimensions_with_bias() -> None:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(40, 2, generator=gen)
    net = sm.TwoLayerNet([0.5, -0.3], torch.randn(2, 2, generator=gen), b=[0.1, -0.2],
                         activation="tanh")
    rf = sm.residual_function(net, sm.Dataset(X, torch.sin(X[:, 0])))
    points = ZeroSet(rf).sample(num_starts=24)
    assert len(points) >= 10
    scale = float(rf.e.abs().sum())
    for p in points:
        assert len(p.u) == 3  # augmented (w, b)
        assert p.phi_norm <= 1e-13 * scale
        assert float(rf.phi(torch.tensor(p.u)).abs().max()) <= 1e-13 * scale
    assert all(p.regular for p in points)  # generic points of a smooth hypersurface
    distinct = {tuple(round(x, 6) for x in p.u) for p in points}
    assert len(distinct) == len(points)


def test_projection_fails_cleanly_where_there_is_no_zero() -> None:
    # exp neurons with residuals all of one sign: φ(u) = Σ e_i exp(uᵀx_i) never vanishes
    data = sm.Dataset([[0.5], [1.0], [1.5]], [-1.0, -2.0, -3.0])
    rf = sm.residual_function(sm.TwoLayerNet([0.1], [[0.1]], activation="exp"), data)
    assert bool((rf.e > 0).all())
    assert ZeroSet(rf).project(torch.tensor([0.3])) is None
    assert ZeroSet(rf).zeros_1d((-5.0, 5.0)) == []


def test_zeros_1d_needs_one_dimension() -> None:
    data = sm.Dataset([[0.5, 1.0]], [1.0])
    rf = sm.residual_function(sm.TwoLayerNet([0.1], [[0.1, 0.2]]), data)
    with pytest.raises(OptionError, match="one-dimensional"):
        ZeroSet(rf).zeros_1d()
