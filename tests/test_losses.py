"""Losses: closed-form per-sample gradient and Hessian against autodiff; target checks."""

from __future__ import annotations

import pytest
import torch

import saddlemap as sm

GEN = torch.Generator().manual_seed(0)


def _targets(loss: sm.Loss, n: int, K: int) -> torch.Tensor:
    if isinstance(loss, sm.CrossEntropy):
        return loss.targets(torch.randint(0, K, (n,), generator=GEN), K)
    if isinstance(loss, sm.BinaryCrossEntropy):
        return loss.targets(torch.rand(n, 1, generator=GEN))
    return loss.targets(torch.randn(n, K, generator=GEN))


@pytest.mark.parametrize(
    ("name", "K"), [("mse", 1), ("mse", 3), ("cross_entropy", 2), ("cross_entropy", 4), ("bce", 1)]
)
@pytest.mark.parametrize("n", [1, 3, 7])
def test_grad_and_hess_match_autodiff(name: str, K: int, n: int) -> None:
    loss = sm.get_loss(name)
    g = 2 * torch.randn(n, K, generator=GEN)
    t = _targets(loss, n, K)

    def single(gi: torch.Tensor, ti: torch.Tensor) -> torch.Tensor:
        return loss.value(gi[None], ti[None])[0]

    grad = torch.func.vmap(torch.func.grad(single))(g, t)
    hess = torch.func.vmap(torch.func.hessian(single))(g, t)
    torch.testing.assert_close(loss.grad(g, t), grad, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(loss.hess(g, t), hess, rtol=1e-13, atol=1e-14)
    v = torch.randn(5, n, K, generator=GEN)
    torch.testing.assert_close(
        loss.hess_apply(g, t, v), torch.einsum("nij,rnj->rni", hess, v), rtol=1e-13, atol=1e-14
    )
    # outputs-first layout of the HVP kernels, with the factor formed once
    columns = loss.hess_columns(loss.hess_factor(g, t), v.permute(2, 0, 1))
    torch.testing.assert_close(
        columns, torch.einsum("nij,rnj->irn", hess, v), rtol=1e-13, atol=1e-14
    )


def test_squared_loss_convention() -> None:
    g = torch.tensor([[1.0, 2.0]])
    assert float(sm.SquaredLoss().value(g, torch.zeros(1, 2))[0]) == 2.5  # ½‖g − y‖²


def test_target_errors() -> None:
    ce = sm.get_loss("ce")
    with pytest.raises(sm.DataError, match="out of range"):
        ce.targets(torch.tensor([0, 3]), 3)
    with pytest.raises(sm.DataError, match="≥ 0"):
        ce.targets(torch.tensor([0, -1]))
    with pytest.raises(sm.DataError, match="at least 2 classes"):
        ce.targets(torch.tensor([0, 0]))
    with pytest.raises(sm.DataError, match="summing to 1"):
        ce.targets(torch.tensor([[0.5, 0.6]]))
    with pytest.raises(sm.DataError, match=r"\[0, 1\]"):
        sm.get_loss("bce").targets(torch.tensor([2.0]))
    with pytest.raises(sm.LossError, match="unknown loss 'hinge'"):
        sm.get_loss("hinge")


def test_probability_targets_accepted() -> None:
    t = torch.tensor([[0.2, 0.8], [1.0, 0.0]])
    assert torch.equal(sm.get_loss("ce").targets(t), t)
