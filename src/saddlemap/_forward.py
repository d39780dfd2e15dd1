"""The forward pass shared by every closed-form derivative (private)."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from ._workspace import scratch
from .data import Dataset
from .errors import DataError, OptionError
from .network import TwoLayerNet


class _Shaped(Protocol):
    """What :func:`checked_data` reads of a network."""

    @property
    def input_dim(self) -> int: ...
    @property
    def output_dim(self) -> int: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def device(self) -> torch.device: ...


@dataclass(frozen=True)
class Forward:
    """Quantities at θ on a block of samples, with residuals scaled by the full 1/n.

    X is the augmented input X̃ (n_b, D) and Xt its contiguous transpose (X̃ᵀT runs about
    twice as fast from that layout); Z = X̃W̃ᵀ; S, S1, S2 = σ, σ', σ'' of Z (n_b, m), the
    derivatives up to the ``order`` the pass was made for (a loss needs none, a gradient
    σ', a Hessian σ''); g the outputs (n_b, K); e = ∇ℓ/n the residuals (n_b, K).

    With ``in_scratch`` the n_b × m matrices (and :attr:`eaS2`) are views of the thread's
    scratch buffers: valid until the next scratch forward, so such a Forward must not outlive
    the call that made it.
    """

    net: TwoLayerNet
    data: Dataset
    n_total: int
    X: torch.Tensor
    Xt: torch.Tensor
    S: torch.Tensor
    first: torch.Tensor | None
    second: torch.Tensor | None
    g: torch.Tensor
    e: torch.Tensor
    in_scratch: bool = False

    @property
    def S1(self) -> torch.Tensor:
        """σ'(Z), on a pass of order ≥ 1."""
        if self.first is None:
            raise RuntimeError("this forward pass skipped σ'; ask forward() for order ≥ 1")
        return self.first

    @property
    def S2(self) -> torch.Tensor:
        """σ''(Z), on a pass of order 2."""
        if self.second is None:
            raise RuntimeError("this forward pass skipped σ''; ask forward() for order 2")
        return self.second

    @functools.cached_property
    def eaS2(self) -> torch.Tensor:
        """(aᵀe_i) σ''(w̃_kᵀx̃_i), shape (n_b, m): the coefficient of G in the Hessian."""
        shape = tuple(self.S2.shape)
        out = scratch("eaS2", shape, self.S2) if self.in_scratch else self.S2.new_empty(shape)
        return torch.matmul(self.e, self.net.a.T, out=out).mul_(self.S2)

    @functools.cached_property
    def grad_phi(self) -> torch.Tensor:
        """∇φ(w̃_k) on this block, shape (m, K, D): rows Σ_i e_ic σ'_ik x̃_i."""
        n, m = self.S1.shape
        K, D = self.e.shape[1], self.X.shape[1]
        ex = (self.e.T[:, None, :] * self.Xt[None, :, :]).reshape(K * D, n)
        return (ex @ self.S1).T.reshape(m, K, D)

    def curvature_apply(self, v: torch.Tensor) -> torch.Tensor:
        """h_i v_i with h_i = ∇²ℓ/n, for v of shape (..., n_b, K)."""
        return self.data.loss.hess_apply(self.g, self.data.targets, v) / self.n_total


def checked_data(net: TwoLayerNet | _Shaped, data: Dataset) -> Dataset:
    """The data on the network's dtype and device, after checking the dimensions agree.

    Any network with ``input_dim``, ``output_dim``, ``dtype`` and ``device`` (the deep
    :class:`~saddlemap.deep.MLP` too).
    """
    if not isinstance(data, Dataset):
        raise DataError(f"data must be a saddlemap Dataset, got {type(data).__name__}")
    if data.input_dim != net.input_dim:
        raise DataError(f"the data has d={data.input_dim}, the network d={net.input_dim}")
    if data.output_dim != net.output_dim:
        raise DataError(
            f"the targets have K={data.output_dim} columns, the network K={net.output_dim}"
        )
    if data.dtype != net.dtype or data.device != net.device:
        data = data.to(net.dtype, net.device)
    return data


_INPUTS: weakref.WeakKeyDictionary[Dataset, dict[bool, tuple[int, torch.Tensor, torch.Tensor]]]
_INPUTS = weakref.WeakKeyDictionary()


def _inputs(net: TwoLayerNet, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """X̃ and X̃ᵀ (contiguous), kept with the dataset: they depend only on the bias flag.

    The tensor's version counter guards against a user editing ``data.X`` in place.
    """
    bias = net.b is not None
    try:
        version = data.X._version
    except RuntimeError:  # inference-mode tensors keep no version: do not keep anything
        X = net.augment(data.X)
        return X, X.T.contiguous()
    per_data = _INPUTS.setdefault(data, {})
    kept = per_data.get(bias)
    if kept is None or kept[0] != version:
        X = net.augment(data.X)
        kept = per_data[bias] = version, X, X.T.contiguous()
    return kept[1], kept[2]


def forward(
    net: TwoLayerNet,
    data: Dataset,
    n_total: int | None = None,
    *,
    in_scratch: bool = False,
    order: int = 2,
) -> Forward:
    """Evaluate the network and its activation derivatives on ``data``.

    ``in_scratch`` puts the n × m matrices in this thread's scratch buffers (see
    :class:`Forward`); use it only where the Forward is consumed before the next one.
    ``order`` is the highest derivative of σ evaluated: 0 for losses, 1 for gradients.
    """
    X, Xt = _inputs(net, data)
    shape = (X.shape[0], net.width)

    def buffer(name: str) -> torch.Tensor:
        return scratch(name, shape, X) if in_scratch else X.new_empty(shape)

    Z = torch.matmul(X, net.W_aug.T, out=buffer("S"))
    S1 = S2 = None
    act = net.activation
    if order == 2:
        S, S1, S2 = act.with_derivatives(Z, out=(Z, buffer("S1"), buffer("S2")))
    elif order == 1:
        S, S1 = act.with_first_derivative(Z, out=(Z, buffer("S1")))
    else:
        S = act.fn(Z)
    g = S @ net.a
    if net.c is not None:
        g = g + net.c
    n = data.n if n_total is None else n_total
    e = data.loss.grad(g, data.targets) / n
    return Forward(net, data, n, X, Xt, S, S1, S2, g, e, in_scratch)


def batches(
    net: TwoLayerNet,
    data: Dataset,
    batch_size: int | None,
    *,
    in_scratch: bool = False,
    order: int = 2,
) -> Iterator[Forward]:
    """Forward passes over consecutive blocks of at most ``batch_size`` samples.

    With ``in_scratch`` each block overwrites the previous one's matrices: consume each
    Forward before asking for the next.  Every block is a subset of the data and so carries
    its ``penalty``; the per-block kernels compute the data term R only, and the caller adds
    the penalty once, after the last block.
    """
    data = checked_data(net, data)
    if batch_size is None or batch_size >= data.n:
        yield forward(net, data, in_scratch=in_scratch, order=order)
        return
    if batch_size < 1:
        raise OptionError(f"batch_size must be ≥ 1, got {batch_size}")
    for start in range(0, data.n, batch_size):
        block = data.subset(slice(start, start + batch_size))
        yield forward(net, block, data.n, in_scratch=in_scratch, order=order)
