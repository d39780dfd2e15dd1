"""The forward pass shared by every closed-form derivative (private)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .data import Dataset
from .errors import DataError
from .network import TwoLayerNet


@dataclass(frozen=True)
class Forward:
    """Quantities at θ on a block of samples, with residuals scaled by the full 1/n.

    X is the augmented input X̃ (n_b, D); Z = X̃W̃ᵀ; S, S1, S2 = σ, σ', σ'' of Z (n_b, m);
    g the outputs (n_b, K); e = ∇ℓ/n the residuals (n_b, K); ea = e aᵀ (n_b, m).
    """

    net: TwoLayerNet
    data: Dataset
    n_total: int
    X: torch.Tensor
    S: torch.Tensor
    S1: torch.Tensor
    S2: torch.Tensor
    g: torch.Tensor
    e: torch.Tensor
    ea: torch.Tensor

    @functools.cached_property
    def eaS2(self) -> torch.Tensor:
        """(aᵀe_i) σ''(w̃_kᵀx̃_i), shape (n_b, m): the coefficient of G in the Hessian."""
        return self.ea * self.S2

    @functools.cached_property
    def grad_phi(self) -> torch.Tensor:
        """∇φ(w̃_k) on this block, shape (m, K, D): rows Σ_i e_ic σ'_ik x̃_i."""
        n, m = self.S1.shape
        K, D = self.e.shape[1], self.X.shape[1]
        ex = (self.e[:, :, None] * self.X[:, None, :]).reshape(n, K * D)
        return (self.S1.T @ ex).reshape(m, K, D)

    def curvature_apply(self, v: torch.Tensor) -> torch.Tensor:
        """h_i v_i with h_i = ∇²ℓ/n, for v of shape (..., n_b, K)."""
        return self.data.loss.hess_apply(self.g, self.data.targets, v) / self.n_total


def checked_data(net: TwoLayerNet, data: Dataset) -> Dataset:
    """The data on the network's dtype and device, after checking the dimensions agree."""
    if data.input_dim != net.input_dim:
        raise DataError(f"the data has d={data.input_dim}, the network d={net.input_dim}")
    if data.output_dim != net.output_dim:
        raise DataError(
            f"the targets have K={data.output_dim} columns, the network K={net.output_dim}"
        )
    if data.dtype != net.dtype or data.device != net.device:
        data = data.to(net.dtype, net.device)
    return data


def forward(net: TwoLayerNet, data: Dataset, n_total: int | None = None) -> Forward:
    """Evaluate the network and its activation derivatives on ``data``."""
    X = net.augment(data.X)
    Z = X @ net.W_aug.T
    S, S1, S2 = net.activation.with_derivatives(Z)
    g = S @ net.a
    if net.c is not None:
        g = g + net.c
    n = data.n if n_total is None else n_total
    e = data.loss.grad(g, data.targets) / n
    return Forward(net, data, n, X, S, S1, S2, g, e, e @ net.a.T)


def batches(
    net: TwoLayerNet, data: Dataset, batch_size: int | None
) -> Iterator[Forward]:
    """Forward passes over consecutive blocks of at most ``batch_size`` samples."""
    data = checked_data(net, data)
    if batch_size is None or batch_size >= data.n:
        yield forward(net, data)
        return
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    for start in range(0, data.n, batch_size):
        yield forward(net, data.subset(slice(start, start + batch_size)), data.n)
