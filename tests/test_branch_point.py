"""The branch point nearest to a model: refine narrow, embed back, measure, classify."""

from __future__ import annotations

import torch

import saddlemap as sm
from saddlemap.branch_point import _ratios, merged_network, nearest_branch_point

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


def test_ratios_put_the_split_closest_to_the_model() -> None:
    # Near-cancelling members (a ≈ ±1, same w) with a refined a* far from their sum 0.02: the
    # old ratios ⟨s a, A⟩/‖A‖² were ±50 and put the branch point 50× away; the minimiser
    # of Σ‖ρ_k a* − s_k a_k‖² under Σρ = 1 stays within ‖a*‖ of the model.
    a = torch.tensor([[1.0, 0.5], [-0.98, -0.49], [0.3, 0.1]])
    signs = [1.0, 1.0, -1.0]
    star_a = torch.tensor([0.4, -0.2])
    rho = _ratios(a, signs, star_a)
    assert abs(float(rho.sum()) - 1.0) < 1e-14

    def distance(r: torch.Tensor) -> float:
        s = torch.tensor(signs)[:, None]
        return float(((r[:, None] * star_a - s * a) ** 2).sum())

    gen = torch.Generator().manual_seed(3)
    for _ in range(7):  # every feasible perturbation (Σ δ = 0) is farther
        delta = torch.randn(3, generator=gen, dtype=torch.float64).to(a.dtype)
        delta -= delta.mean()
        assert distance(rho) < distance(rho + 1e-2 * delta)
    assert torch.equal(_ratios(a, signs, torch.zeros(2)), torch.full((3,), 1 / 3))


def test_merged_network_undoes_a_split() -> None:
    # (2A, w), (−A, w) merge to (A, w); an odd activation's sign twin (A, −w) joins with its
    # sign; the start need not be given
    split = sm.TwoLayerNet([2 * A, -A, 0.5, 0.0], [[W], [W], [-0.3], [1.0]])
    narrow = merged_network(split, [(0, 1), (2,)])
    torch.testing.assert_close(narrow.a.flatten(), torch.tensor([A, 0.5], dtype=torch.float64))
    torch.testing.assert_close(narrow.W.flatten(), torch.tensor([W, -0.3], dtype=torch.float64))
    twin = sm.TwoLayerNet([A, 0.2], [[W], [-W]])
    torch.testing.assert_close(merged_network(twin, [(0, 1)]).a.flatten(),
                               torch.tensor([A - 0.2], dtype=torch.float64))
    bp = nearest_branch_point(split, WORKED, None, groups=[(0, 1), (2,)], dropped=(3,))
    assert bp.width == 2 and bp.net.width == 4
