"""Per-sample losses ℓ(g, y) with their gradient ∇_g ℓ and Hessian ∇²_g ℓ.

The empirical risk is R(θ) = (1/n) Σ_i ℓ(g(θ, x_i), y_i) (docs/theory.md §1).  A loss sees outputs
``g`` of shape (n, K) and targets ``t`` of shape (n, K) (as :meth:`Loss.targets` prepares
them from user labels) and returns per-sample values (n,), gradients (n, K) and Hessians
(n, K, K).  To add a loss, subclass :class:`Loss` and :func:`register_loss` an instance.

>>> import torch
>>> g = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
>>> t = torch.tensor([[0.0], [0.0]], dtype=torch.float64)
>>> SquaredLoss().value(g, t).tolist()
[0.5, 2.0]

A :class:`Penalty` (weight decay) adds (λ/2)‖Mθ‖² to R; it lives on the
:class:`~saddlemap.Dataset` with the loss, since both together define the objective.
"""

from __future__ import annotations

import abc
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from .errors import DataError, LossError, OptionError

if TYPE_CHECKING:  # the layout lives in a higher layer; only its attributes are used here
    from .network import ParamLayout

__all__ = [
    "BinaryCrossEntropy",
    "CrossEntropy",
    "Loss",
    "Penalty",
    "PenaltyScope",
    "SquaredLoss",
    "as_penalty",
    "available_losses",
    "get_loss",
    "register_loss",
]


class Loss(abc.ABC):
    """A C² per-sample loss; subclasses give ℓ, ∇ℓ, ∇²ℓ in closed form."""

    name: str = "loss"
    #: True when ∇²ℓ = I for every sample: the Gauss–Newton term is then JᵀJ/n.
    identity_curvature: bool = False

    @abc.abstractmethod
    def value(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample loss ℓ(g_i, t_i), shape (n,)."""

    @abc.abstractmethod
    def grad(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample gradient ∇_g ℓ, shape (n, K)."""

    @abc.abstractmethod
    def hess(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample Hessian ∇²_g ℓ, shape (n, K, K)."""

    def hess_apply(self, g: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Per-sample product ∇²_g ℓ · v_i for v of shape (..., n, K)."""
        return torch.einsum("nij,...nj->...ni", self.hess(g, t), v)

    def hess_factor(self, g: torch.Tensor, t: torch.Tensor) -> Any:
        """What :meth:`hess_columns` needs at fixed outputs g (formed once per point)."""
        return (g, t)

    def hess_columns(self, factor: Any, v: torch.Tensor) -> torch.Tensor:
        """∇²_g ℓ · v_i for v of shape (K, r, n): outputs first, samples last.

        The layout of the Hessian-vector kernels; ``factor`` comes from :meth:`hess_factor`.
        """
        g, t = factor
        return self.hess_apply(g, t, v.permute(1, 2, 0)).permute(2, 0, 1).contiguous()

    @abc.abstractmethod
    def targets(self, y: torch.Tensor, num_outputs: int | None = None) -> torch.Tensor:
        """Validate user targets and return them as an (n, K) floating tensor."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _as_columns(y: torch.Tensor) -> torch.Tensor:
    if y.ndim == 1:
        return y.unsqueeze(1)
    if y.ndim != 2:
        raise DataError(f"y must have shape (n,) or (n, K), got {tuple(y.shape)}")
    return y


class SquaredLoss(Loss):
    """ℓ(g, y) = ½‖g − y‖², so R = (1/2n) Σ‖g − y‖² (docs/theory.md §1)."""

    name = "mse"
    identity_curvature = True

    def value(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return 0.5 * ((g - t) ** 2).sum(-1)

    def grad(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return g - t

    def hess(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
        return eye.expand(g.shape[0], -1, -1)

    def hess_apply(  # noqa: D102
        self, g: torch.Tensor, t: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        return v

    def targets(  # noqa: D102
        self, y: torch.Tensor, num_outputs: int | None = None
    ) -> torch.Tensor:
        if not (y.is_floating_point() or y.dtype in _INTEGER_DTYPES):
            raise DataError(f"y for the squared loss must be real numbers, got dtype {y.dtype}")
        t = _as_columns(y)
        if num_outputs is not None and t.shape[1] != num_outputs:
            raise DataError(f"y has {t.shape[1]} output columns but the network has {num_outputs}")
        return t


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


class CrossEntropy(Loss):
    """Softmax cross-entropy ℓ(g, t) = logsumexp(g) − tᵀg for a probability vector t.

    ∇ℓ = p − t and ∇²ℓ = diag(p) − ppᵀ with p = softmax(g).  Targets are class labels
    (integers in [0, K)) or rows of probabilities.
    """

    name = "cross_entropy"

    def value(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.logsumexp(g, dim=-1) - (t * g).sum(-1)

    def grad(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.softmax(g, dim=-1) - t

    def hess(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        p = torch.softmax(g, dim=-1)
        return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)

    def hess_apply(  # noqa: D102
        self, g: torch.Tensor, t: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        p = torch.softmax(g, dim=-1)
        return p * v - p * (p * v).sum(-1, keepdim=True)

    def hess_factor(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.softmax(g, dim=-1).T.contiguous()[:, None, :]  # p, shape (K, 1, n)

    def hess_columns(self, factor: Any, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        pv = factor * v
        return pv.sub_(factor * pv.sum(0, keepdim=True))

    def targets(  # noqa: D102
        self, y: torch.Tensor, num_outputs: int | None = None
    ) -> torch.Tensor:
        if y.dtype in _INTEGER_DTYPES or y.dtype == torch.bool:
            if y.ndim != 1:
                raise DataError(f"class labels must have shape (n,), got {tuple(y.shape)}")
            if y.numel() and int(y.min()) < 0:
                raise DataError(f"class labels must be ≥ 0, got {int(y.min())}")
            k = num_outputs if num_outputs is not None else int(y.max()) + 1 if y.numel() else 0
            if y.numel() and int(y.max()) >= k:
                raise DataError(f"class label {int(y.max())} is out of range for {k} outputs")
            if k < 2:
                raise DataError("cross-entropy needs at least 2 classes")
            return torch.nn.functional.one_hot(y.long(), k).to(torch.float64)
        if not y.is_floating_point() or y.ndim != 2:
            raise DataError(
                "cross-entropy targets must be integer labels of shape (n,) or "
                f"probability rows of shape (n, K); got dtype {y.dtype}, shape {tuple(y.shape)}"
            )
        if num_outputs is not None and y.shape[1] != num_outputs:
            raise DataError(f"y has {y.shape[1]} classes but the network has {num_outputs}")
        if bool((y < 0).any()) or not torch.allclose(y.sum(1), torch.ones_like(y[:, 0])):
            raise DataError("cross-entropy probability targets must be ≥ 0 with rows summing to 1")
        return y


class BinaryCrossEntropy(Loss):
    """Logistic loss on one output: ℓ(g, y) = log(1 + eᵍ) − y g, y ∈ [0, 1].

    ∇ℓ = s − y and ∇²ℓ = s(1 − s) with s = sigmoid(g).
    """

    name = "binary_cross_entropy"

    def value(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return (torch.logaddexp(g, torch.zeros_like(g)) - t * g).sum(-1)

    def grad(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.sigmoid(g) - t

    def hess(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        s = torch.sigmoid(g)
        return (s * (1 - s)).unsqueeze(-1)

    def hess_apply(  # noqa: D102
        self, g: torch.Tensor, t: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        s = torch.sigmoid(g)
        return s * (1 - s) * v

    def hess_factor(self, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        s = torch.sigmoid(g)
        return (s * (1 - s)).T.contiguous()[:, None, :]  # shape (1, 1, n)

    def hess_columns(self, factor: Any, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return factor * v

    def targets(  # noqa: D102
        self, y: torch.Tensor, num_outputs: int | None = None
    ) -> torch.Tensor:
        t = _as_columns(y).to(torch.float64)
        if t.shape[1] != 1 or (num_outputs is not None and num_outputs != 1):
            raise DataError("binary cross-entropy needs one output column")
        if bool(((t < 0) | (t > 1)).any()):
            raise DataError("binary cross-entropy targets must lie in [0, 1]")
        return t


_LOSSES: dict[str, Loss] = {}


def register_loss(loss: Loss, *aliases: str) -> Loss:
    """Add a loss instance to the registry under its name and any aliases; returns it."""
    for key in (loss.name, *aliases):
        _LOSSES[key.lower()] = loss
    return loss


register_loss(SquaredLoss(), "squared", "l2")
register_loss(CrossEntropy(), "ce", "softmax_cross_entropy")
register_loss(BinaryCrossEntropy(), "bce", "logistic")


def available_losses() -> list[str]:
    """Names of the registered losses (aliases included), sorted."""
    return sorted(_LOSSES)


def get_loss(loss: str | Loss) -> Loss:
    """Look a loss up by name (case-insensitive), or pass a :class:`Loss` through.

    >>> get_loss("ce").name
    'cross_entropy'
    """
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str):
        raise LossError(f"loss must be a name or a Loss, got {type(loss).__name__}")
    try:
        return _LOSSES[loss.lower()]
    except KeyError:
        known = ", ".join(available_losses())
        raise LossError(f"unknown loss {loss!r}; known: {known}") from None


# ------------------------------------------------------------------------------ penalty
#: Which parameters a :class:`Penalty` decays: every one, or the weights a, W only.
PenaltyScope = Literal["all", "weights"]
_SCOPES: tuple[str, ...] = ("all", "weights")


@dataclass(frozen=True)
class Penalty:
    """Weight decay: the objective becomes L(θ) = R(θ) + P(θ) with P(θ) = (λ/2)‖Mθ‖².

    M is the diagonal 0/1 mask of the parameters in ``scope`` (:meth:`mask`), so
    ∇P = λ Mθ and ∇²P = λ diag(M) (M² = M).

    * ``"all"``: every parameter, biases b and c included.  This is an L2 term on the loss
      with torch's convention: ``weight_decay`` of ``torch.optim.SGD`` and ``Adam`` adds
      wd·θ to the gradient of every parameter it is given.  AdamW's decoupled decay is not
      a term of the objective and has no exact equivalent here.
    * ``"weights"``: the weights a and W only, not the biases b, c (scikit-learn's
      convention: ``alpha`` decays ``coefs_``, not ``intercepts_``; see
      :func:`saddlemap.io._sklearn.sklearn_penalty`).

    λ is in the units of saddlemap's R = (1/n) Σ ℓ (ℓ = ½‖g − y‖² for the squared loss).  An
    optimiser minimising c·R + (wd/2)‖Mθ‖² has λ = wd / c: ``nn.MSELoss()`` is (2/K)·R, so
    λ = K·wd/2; ``nn.CrossEntropyLoss()`` is R, so λ = wd.

    Args:
        weight_decay: λ ≥ 0, finite.
        scope: ``"all"`` or ``"weights"``.

    Raises:
        OptionError: λ negative, NaN, infinite or not a number; an unknown scope.

    >>> from saddlemap.network import ParamLayout
    >>> lay = ParamLayout(width=2, input_dim=1, output_dim=1, hidden_bias=True, output_bias=True)
    >>> pen = Penalty(0.5, "weights")
    >>> pen.mask(lay).tolist()      # [a_1, w_1, b_1, a_2, w_2, b_2, c]
    [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    >>> theta = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    >>> float(pen.value(theta, lay))  # (0.5 / 2) (1 + 4 + 1 + 4)
    2.5
    >>> pen.gradient(theta, lay).tolist()
    [0.5, 1.0, 0.0, 0.5, 1.0, 0.0, 0.0]
    >>> Penalty(0.5).describe()
    'weight decay λ = 0.5 on all parameters: R + (λ/2)‖θ‖²'
    >>> Penalty(-1.0)
    Traceback (most recent call last):
        ...
    saddlemap.errors.OptionError: weight_decay must be finite and ≥ 0, got -1.0
    """

    weight_decay: float
    scope: PenaltyScope = "all"

    def __post_init__(self) -> None:
        lam = self.weight_decay
        if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
            raise OptionError(f"weight_decay must be a real number, got {lam!r}")
        lam = float(lam)
        if not (math.isfinite(lam) and lam >= 0.0):
            raise OptionError(f"weight_decay must be finite and ≥ 0, got {lam!r}")
        if self.scope not in _SCOPES:
            raise OptionError(
                f"unknown penalty scope {self.scope!r}; known: {', '.join(_SCOPES)}"
            )
        object.__setattr__(self, "weight_decay", lam)

    def mask(
        self,
        layout: ParamLayout,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """The diagonal of M over the flat vector (length P): 1 in scope, 0 outside."""
        if self.scope == "all":
            return torch.ones(layout.num_params, dtype=dtype, device=device)
        m, K = layout.width, layout.output_dim
        a = torch.ones(m, K, dtype=dtype, device=device)
        w_aug = torch.ones(m, layout.aug_dim, dtype=dtype, device=device)
        w_aug[:, layout.input_dim :] = 0.0  # b_k, the last entry of w̃_k with a hidden bias
        c = torch.zeros(K * int(layout.output_bias), dtype=dtype, device=device)
        return layout.join(a, w_aug, c)

    def _masked(self, theta: torch.Tensor, layout: ParamLayout) -> torch.Tensor:
        """Mθ for θ of shape (..., P)."""
        if self.scope == "all":
            return theta
        return theta * self.mask(layout, theta.dtype, theta.device)

    def value(self, theta: torch.Tensor, layout: ParamLayout) -> torch.Tensor:
        """P(θ) = (λ/2)‖Mθ‖² for θ of shape (..., P), a tensor of shape (...)."""
        masked = self._masked(theta, layout)
        return 0.5 * self.weight_decay * (masked * masked).sum(-1)

    def gradient(self, theta: torch.Tensor, layout: ParamLayout) -> torch.Tensor:
        """∇P(θ) = λ Mθ; also the Hessian product λ M v, for v of shape (..., P)."""
        return self.weight_decay * self._masked(theta, layout)

    def describe(self) -> str:
        """One line saying what the penalty adds to R."""
        if self.scope == "all":
            return f"weight decay λ = {self.weight_decay:g} on all parameters: R + (λ/2)‖θ‖²"
        return (
            f"weight decay λ = {self.weight_decay:g} on the weights a, W (not the biases b, c): "
            "R + (λ/2)(‖a‖² + ‖W‖²)"
        )


def as_penalty(penalty: Penalty | float | None) -> Penalty | None:
    """None, a :class:`Penalty`, or a number λ read as ``Penalty(λ, "all")``.

    Raises:
        OptionError: anything else, or a bad λ.

    >>> as_penalty(0.25)
    Penalty(weight_decay=0.25, scope='all')
    >>> as_penalty(None) is None
    True
    """
    if penalty is None or isinstance(penalty, Penalty):
        return penalty
    return Penalty(penalty, "all")
