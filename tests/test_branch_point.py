"""The branch point nearest to a model: refine narrow, embed back, measure, classify."""

from __future__ import annotations

import torch

import saddlemap as sm
from saddlemap.branch_point import nearest_branch_point

WORKED = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
A, W = 0.610515537972, 1.433931221329


def test_perturbed_split_saddle_is_near_a_saddle_branch_of_width_one() -> None:
    gen = torch.Generator().manual_seed(1)
    exact = sm.TwoLayerNet([2 * A, -A, 0.0], [[W], [W], [0.0]])
    model = exact.unflatten(exact.flatten() + 1e-3 * torch.randn(6, generator=gen))
    narrow = sm.TwoLayerNet([A], [[W + 0.01]])
    bp = nearest_branch_point(model, WORKED, narrow, groups=[(0, 1)], dropped=(2,))
    assert bp.star.converged and bp.nulls_on_zero_set
    assert bp.distance < 1e-2 and abs(bp.loss_gap) < 1e-4
    assert bp.is_saddle_branch and "near a saddle branch of width 1" in bp.summary()
    # the branch point keeps the narrow network's output and the model's ratios (2, −1)
    a = bp.net.a.flatten()
    assert float(a[0] + a[1]) == torch.tensor(A).item() or abs(float(a[0] + a[1]) - A) < 1e-9
    assert abs(float(a[0] / a[1]) + 2.0) < 1e-2 and float(a[2]) == 0.0
    assert sm.certify(bp.net, WORKED).converged


def test_far_model_is_not_near() -> None:
    model = sm.TwoLayerNet([1.5, 0.2], [[0.3], [-2.0]])
    bp = nearest_branch_point(model, WORKED, sm.TwoLayerNet([A], [[W]]), groups=[(0, 1)])
    assert not bp.near and bp.distance > 0.1
    assert bp.summary().startswith("not near")
