"""Validated training data: inputs X (n × d), targets prepared for a loss.

>>> import numpy as np
>>> data = Dataset(np.zeros((3, 2)), np.ones(3))
>>> data.n, data.input_dim, data.output_dim, data.loss.name
(3, 2, 1, 'mse')
>>> Dataset(np.array([[np.nan, 0.0]]), np.ones(1))
Traceback (most recent call last):
    ...
saddlemap.errors.DataError: X contains NaN or Inf (1 entries, first at row 0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .losses import Loss, Penalty, as_penalty, get_loss

__all__ = ["Dataset", "as_tensor"]

_REAL_KINDS = "biuf"


def as_tensor(
    value: Any,
    name: str,
    dtype: torch.dtype | None = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Convert an array-like to a tensor, rejecting non-numeric dtypes with a clear error.

    ``dtype=None`` keeps an integer or boolean dtype (for class labels); floating input is
    cast to ``dtype`` (float64 unless asked otherwise).
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.is_complex():
            raise DataError(f"{name} must be real, got dtype {tensor.dtype}")
    else:
        try:
            array = np.asarray(value)
        except Exception as exc:
            raise DataError(f"{name} cannot be read as an array: {exc}") from exc
        if array.dtype.kind not in _REAL_KINDS:
            raise DataError(f"{name} must be real numbers, got dtype {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if dtype is not None or tensor.is_floating_point():
        tensor = tensor.to(dtype=dtype or torch.float64)
    if device is not None:
        tensor = tensor.to(device)
    return tensor


def _check_finite(tensor: torch.Tensor, name: str) -> None:
    if tensor.is_floating_point():
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            rows = bad.reshape(bad.shape[0], -1).any(1).nonzero()
            raise DataError(
                f"{name} contains NaN or Inf ({int(bad.sum())} entries, "
                f"first at row {int(rows[0])})"
            )


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs and targets for one loss, validated and stored as tensors.

    Args:
        X: inputs, shape (n, d); a 1-d array is read as n samples of dimension 1.
        y: targets: (n,) or (n, K) real values for the squared loss; class labels (n,) or
            probability rows (n, K) for cross-entropy; values in [0, 1] for binary
            cross-entropy.
        loss: a loss name (``"mse"``, ``"cross_entropy"``, ``"bce"``) or a :class:`Loss`.
        num_outputs: K, when the labels alone do not say it (cross-entropy).
        dtype: floating dtype for X and the targets (float64 by default, for analysis).
        device: where the tensors live.
        penalty: weight decay, a :class:`~saddlemap.losses.Penalty` or a number λ (read as
            ``Penalty(λ, "all")``).  The objective is then R(θ) + (λ/2)‖Mθ‖², and every
            closed form (loss, gradient, Hessian, products) includes the penalty once; the
            outputs' Jacobian, the residuals and the residual function φ stay those of R.
            None (the default) for no penalty.

    Raises:
        DataError: NaN or Inf, mismatched or wrong shapes, empty data, non-numeric dtypes.
        OptionError: a negative, NaN or infinite λ, or a penalty that is not a number.

    >>> Dataset([[0.0], [1.0]], [0.0, 1.0], penalty=1e-3).penalty
    Penalty(weight_decay=0.001, scope='all')
    """

    X: torch.Tensor
    targets: torch.Tensor
    loss: Loss
    penalty: Penalty | None

    def __init__(
        self,
        X: Any,
        y: Any,
        loss: str | Loss = "mse",
        num_outputs: int | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        penalty: Penalty | float | None = None,
    ) -> None:
        if not dtype.is_floating_point:
            raise DataError(f"dtype must be a floating dtype, got {dtype}")
        loss_obj = get_loss(loss)
        penalty_obj = as_penalty(penalty)
        x = as_tensor(X, "X", dtype, device)
        if x.ndim == 1:
            x = x.unsqueeze(1)
        if x.ndim != 2:
            raise DataError(f"X must have shape (n, d), got {tuple(x.shape)}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise DataError(f"X is empty: shape {tuple(x.shape)}")
        _check_finite(x, "X")
        y_raw = as_tensor(y, "y", None, device)
        if y_raw.ndim == 0 or y_raw.shape[0] != x.shape[0]:
            shape = tuple(y_raw.shape)
            raise DataError(f"X has {x.shape[0]} samples but y has shape {shape}")
        _check_finite(y_raw, "y")
        targets = loss_obj.targets(y_raw, num_outputs).to(dtype=dtype)
        object.__setattr__(self, "X", x)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "loss", loss_obj)
        object.__setattr__(self, "penalty", penalty_obj)

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.X.shape[0])

    @property
    def input_dim(self) -> int:
        """Input dimension d."""
        return int(self.X.shape[1])

    @property
    def output_dim(self) -> int:
        """Output dimension K the targets ask for."""
        return int(self.targets.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of X and the targets."""
        return self.X.dtype

    @property
    def device(self) -> torch.device:
        """Device of X and the targets."""
        return self.X.device

    @classmethod
    def _from_tensors(
        cls, X: torch.Tensor, targets: torch.Tensor, loss: Loss, penalty: Penalty | None
    ) -> Dataset:
        # Already validated tensors: skip __init__'s checks.
        new = object.__new__(cls)
        object.__setattr__(new, "X", X)
        object.__setattr__(new, "targets", targets)
        object.__setattr__(new, "loss", loss)
        object.__setattr__(new, "penalty", penalty)
        return new

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Dataset:
        """The same data in another dtype or on another device."""
        dtype = dtype or self.dtype
        return Dataset._from_tensors(
            self.X.to(dtype=dtype, device=device),
            self.targets.to(dtype=dtype, device=device),
            self.loss,
            self.penalty,
        )

    def subset(self, index: slice | torch.Tensor) -> Dataset:
        """The samples selected by ``index`` (a slice or an index tensor), same penalty.

        The penalty does not scale with the number of samples: on a subset it is still
        (λ/2)‖Mθ‖², added to that subset's mean loss.
        """
        return Dataset._from_tensors(self.X[index], self.targets[index], self.loss, self.penalty)

    def with_penalty(self, penalty: Penalty | float | None) -> Dataset:
        """The same samples and loss with another penalty (None removes it).

        Raises:
            OptionError: a bad λ.
        """
        return Dataset._from_tensors(self.X, self.targets, self.loss, as_penalty(penalty))

    def __repr__(self) -> str:
        penalty = "" if self.penalty is None else f", penalty={self.penalty!r}"
        return (
            f"Dataset(n={self.n}, d={self.input_dim}, K={self.output_dim}, "
            f"loss={self.loss.name!r}, dtype={self.dtype}{penalty})"
        )
