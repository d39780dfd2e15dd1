"""Activations σ with their first two derivatives and symmetry class.

The theory (Zhang, Zhang & Luo, arXiv:2405.17501) needs σ real-analytic and not a
polynomial, and its statements about minimal width depend on which linear identities the
neurons σ(wᵀx) satisfy.  Each :class:`Activation` therefore carries σ, σ', σ'' in closed
form and a :class:`Symmetry` class:

* ``GENERIC``: distinct weights give linearly independent neurons (exp),
* ``ODD``: σ(−z) = −σ(z), so (a, w) ≡ (−a, −w) (tanh, erf, sin),
* ``ODD_PLUS_CONSTANT``: σ(z) + σ(−z) = 2σ(0) (sigmoid),
* ``ODD_PART_LINEAR``: σ(z) − σ(−z) = z (softplus, GELU, SiLU),
* ``POLYNOMIAL``: a finite span, outside the theory (identity),
* ``NON_ANALYTIC``: piecewise linear, σ'' = 0 almost everywhere (ReLU, leaky ReLU).

>>> import torch
>>> act = get_activation("tanh")
>>> z = torch.tensor([0.3], dtype=torch.float64)
>>> bool(torch.allclose(act.d1(z), 1 - torch.tanh(z) ** 2))
True
>>> act.symmetry.name
'ODD'
"""

from __future__ import annotations

import enum
import functools
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import ActivationError

__all__ = [
    "Activation",
    "Symmetry",
    "available_activations",
    "custom_activation",
    "get_activation",
    "leaky_relu",
    "register_activation",
]

Elementwise = Callable[[torch.Tensor], torch.Tensor]
# Writes σ(z), σ'(z), σ''(z) into three tensors of z's shape; the first may be z itself, so
# each writes σ only once it no longer reads z.  The third may be None: then σ'' is skipped.
Fused = Callable[[Tensor, Tensor, Tensor, Tensor | None], None]


class Symmetry(enum.Enum):
    """Linear identities among neurons σ(wᵀx) (docs/theory.md §3)."""

    GENERIC = "generic"
    ODD = "odd"
    ODD_PLUS_CONSTANT = "odd_plus_constant"
    ODD_PART_LINEAR = "odd_part_linear"
    POLYNOMIAL = "polynomial"
    NON_ANALYTIC = "non_analytic"


@dataclass(frozen=True)
class Activation:
    """An elementwise activation with σ, σ', σ'' and its symmetry class.

    Attributes:
        name: registry name (``"tanh"``, ...); a custom activation keeps the name it was given.
        fn: σ, elementwise on a tensor.
        d1: σ', elementwise.
        d2: σ'', elementwise.
        symmetry: the :class:`Symmetry` class.
        analytic: False for ReLU-type activations; results on them hold only off the kinks.
        torch_module: name of the ``torch.nn`` module class that computes σ, if any.
        params: extra parameters (the slope of leaky ReLU), part of the identity.
        fused: optional kernel ``fused(z, s, s1, s2)`` that writes σ, σ', σ'' into the
            three given tensors (``s`` may be ``z`` itself; ``s2`` may be None, and then
            σ'' is skipped), sharing transcendental evaluations; without it
            :meth:`with_derivatives` calls fn, d1 and d2.
    """

    name: str
    fn: Elementwise = field(compare=False, repr=False)
    d1: Elementwise = field(compare=False, repr=False)
    d2: Elementwise = field(compare=False, repr=False)
    symmetry: Symmetry = Symmetry.GENERIC
    analytic: bool = True
    torch_module: str | None = field(default=None, compare=False)
    params: tuple[tuple[str, float], ...] = ()
    fused: Fused | None = field(default=None, compare=False, repr=False)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """Evaluate σ(z)."""
        return self.fn(z)

    def with_derivatives(
        self,
        z: torch.Tensor,
        out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(σ(z), σ'(z), σ''(z)), sharing the transcendental evaluations where it can.

        With ``out`` (three tensors shaped like z; the first may be z itself, to evaluate
        in place), the values are written there and ``out`` is returned.
        """
        if not self._can_fuse(z):
            return _into((self.fn(z), self.d1(z), self.d2(z)), out)
        if out is None:
            out = (torch.empty_like(z), torch.empty_like(z), torch.empty_like(z))
        assert self.fused is not None  # for the type checker: _can_fuse says so
        self.fused(z, *out)
        return out

    def with_first_derivative(
        self, z: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(σ(z), σ'(z)): :meth:`with_derivatives` without the work for σ''."""
        if not self._can_fuse(z):
            return _into((self.fn(z), self.d1(z)), out)
        if out is None:
            out = (torch.empty_like(z), torch.empty_like(z))
        assert self.fused is not None  # for the type checker: _can_fuse says so
        self.fused(z, out[0], out[1], None)
        return out

    def _can_fuse(self, z: Tensor) -> bool:
        # Fused kernels write in place, which autograd cannot follow.
        return self.fused is not None and not (z.requires_grad and torch.is_grad_enabled())

    @property
    def zero_at_origin(self) -> bool:
        """Whether σ(0) = 0, i.e. a neuron with w = 0 is the zero function."""
        return float(self.fn(torch.zeros(1, dtype=torch.float64))[0]) == 0.0

    @property
    def in_theory(self) -> bool:
        """Whether σ is real-analytic and not a polynomial, as the theory assumes."""
        return self.analytic and self.symmetry is not Symmetry.POLYNOMIAL


_Values = typing.TypeVar("_Values", bound=tuple[Tensor, ...])


def _into(values: _Values, out: _Values | None) -> _Values:
    """``values``, or copied into ``out`` and ``out`` returned."""
    if out is None:
        return values
    for dst, src in zip(out, values, strict=True):
        dst.copy_(src)
    return out


_SQRT_2PI = math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _normal_pdf(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z * z) / _SQRT_2PI


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.special.erf(z / math.sqrt(2.0)))


def _tanh_d1(z: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(z)
    return 1.0 - t * t


def _tanh_d2(z: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(z)
    return -2.0 * t * (1.0 - t * t)


@functools.lru_cache(maxsize=64)
def _cached_scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """A 0-d constant on ``like``'s dtype and device, made once (read only)."""
    return _cached_scalar(value, like.dtype, like.device)


def _tanh_into(z: Tensor, s: Tensor, s1: Tensor, s2: Tensor | None) -> None:
    torch.tanh(z, out=s)
    torch.addcmul(_scalar(1.0, z), s, s, value=-1.0, out=s1)  # 1 − t²
    if s2 is not None:
        torch.addcmul(_scalar(0.0, z), s, s1, value=-2.0, out=s2)  # −2t(1 − t²)


def _sigmoid_into(z: Tensor, s: Tensor, s1: Tensor, s2: Tensor | None) -> None:
    torch.sigmoid(z, out=s)
    # s(1 − s), not s − s²: 1 − s is exact near saturation, s − s² cancels there.
    torch.sub(_scalar(1.0, s), s, out=s1).mul_(s)
    if s2 is not None:
        torch.add(_scalar(1.0, s), s, alpha=-2.0, out=s2).mul_(s1)  # s(1 − s)(1 − 2s)


def _softplus_into(z: Tensor, s: Tensor, s1: Tensor, s2: Tensor | None) -> None:
    torch.sigmoid(z, out=s1)
    if s2 is not None:
        torch.sub(_scalar(1.0, z), s1, out=s2).mul_(s1)
    torch.logaddexp(z, _scalar(0.0, z), out=s)


def _erf_into(z: Tensor, s: Tensor, s1: Tensor, s2: Tensor | None) -> None:
    torch.addcmul(_scalar(0.0, z), z, z, value=-1.0, out=s1).exp_().mul_(_TWO_OVER_SQRT_PI)
    if s2 is not None:
        torch.addcmul(_scalar(0.0, z), z, s1, value=-2.0, out=s2)
    torch.special.erf(z, out=s)


def _exp_into(z: Tensor, s: Tensor, s1: Tensor, s2: Tensor | None) -> None:
    torch.exp(z, out=s)
    s1.copy_(s)
    if s2 is not None:
        s2.copy_(s)


def _sin_into(z: Tensor, s: Tensor, s1: Tensor, s2: Tensor | None) -> None:
    torch.cos(z, out=s1)
    torch.sin(z, out=s)
    if s2 is not None:
        torch.neg(s, out=s2)


def _sigmoid_d1(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1.0 - s)


def _sigmoid_d2(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _softplus(z: torch.Tensor) -> torch.Tensor:
    # logaddexp is exact everywhere; torch's softplus switches to z above a threshold.
    return torch.logaddexp(z, torch.zeros_like(z))


def _gelu(z: torch.Tensor) -> torch.Tensor:
    return z * _normal_cdf(z)


def _gelu_d1(z: torch.Tensor) -> torch.Tensor:
    return _normal_cdf(z) + z * _normal_pdf(z)


def _gelu_d2(z: torch.Tensor) -> torch.Tensor:
    return _normal_pdf(z) * (2.0 - z * z)


def _silu(z: torch.Tensor) -> torch.Tensor:
    return z * torch.sigmoid(z)


def _silu_d1(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s + z * s * (1.0 - s)


def _silu_d2(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))


def _erf_d1(z: torch.Tensor) -> torch.Tensor:
    return _TWO_OVER_SQRT_PI * torch.exp(-z * z)


def _erf_d2(z: torch.Tensor) -> torch.Tensor:
    return -2.0 * z * _erf_d1(z)


def _neg_sin(z: torch.Tensor) -> torch.Tensor:
    return -torch.sin(z)


def _one(z: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(z)


def _zero(z: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(z)


def _relu_d1(z: torch.Tensor) -> torch.Tensor:
    return (z > 0).to(z.dtype)


def _identity(z: torch.Tensor) -> torch.Tensor:
    return z


def leaky_relu(negative_slope: float = 0.01) -> Activation:
    """Leaky ReLU σ(z) = max(z, αz) with slope α on the negative side (non-analytic).

    >>> leaky_relu(0.2).params
    (('negative_slope', 0.2),)
    """
    alpha = float(negative_slope)
    if not math.isfinite(alpha):
        raise ActivationError(f"leaky_relu needs a finite negative_slope, got {negative_slope!r}")

    def fn(z: torch.Tensor) -> torch.Tensor:
        return torch.where(z > 0, z, alpha * z)

    def d1(z: torch.Tensor) -> torch.Tensor:
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, alpha))

    return Activation(
        "leaky_relu", fn, d1, _zero, Symmetry.NON_ANALYTIC, analytic=False,
        torch_module="LeakyReLU", params=(("negative_slope", alpha),),
    )


_REGISTRY: dict[str, Activation] = {}


def register_activation(activation: Activation, *aliases: str) -> Activation:
    """Add an activation to the registry under its name and any aliases; returns it."""
    for key in (activation.name, *aliases):
        _REGISTRY[key.lower()] = activation
    return activation


for _act, _aliases in [
    (Activation("tanh", torch.tanh, _tanh_d1, _tanh_d2, Symmetry.ODD, torch_module="Tanh",
                fused=_tanh_into), ()),
    (Activation("sigmoid", torch.sigmoid, _sigmoid_d1, _sigmoid_d2, Symmetry.ODD_PLUS_CONSTANT,
                torch_module="Sigmoid", fused=_sigmoid_into), ("logistic",)),
    (Activation("softplus", _softplus, torch.sigmoid, _sigmoid_d1, Symmetry.ODD_PART_LINEAR,
                torch_module="Softplus", fused=_softplus_into), ()),
    (Activation("gelu", _gelu, _gelu_d1, _gelu_d2, Symmetry.ODD_PART_LINEAR,
                torch_module="GELU"), ()),
    (Activation("silu", _silu, _silu_d1, _silu_d2, Symmetry.ODD_PART_LINEAR,
                torch_module="SiLU"), ("swish",)),
    (Activation("erf", torch.special.erf, _erf_d1, _erf_d2, Symmetry.ODD, fused=_erf_into), ()),
    (Activation("sin", torch.sin, torch.cos, _neg_sin, Symmetry.ODD, fused=_sin_into), ()),
    (Activation("exp", torch.exp, torch.exp, torch.exp, Symmetry.GENERIC, fused=_exp_into), ()),
    (Activation("identity", _identity, _one, _zero, Symmetry.POLYNOMIAL,
                torch_module="Identity"), ("linear",)),
    (Activation("relu", torch.relu, _relu_d1, _zero, Symmetry.NON_ANALYTIC, analytic=False,
                torch_module="ReLU"), ()),
    (leaky_relu(), ()),
]:
    register_activation(_act, *_aliases)


def available_activations() -> list[str]:
    """Names of the registered activations (aliases included), sorted.

    >>> "tanh" in available_activations()
    True
    """
    return sorted(_REGISTRY)


def get_activation(activation: str | Activation) -> Activation:
    """Look an activation up by name (case-insensitive), or pass an :class:`Activation` through.

    >>> get_activation("Logistic").name
    'sigmoid'
    """
    if isinstance(activation, Activation):
        return activation
    if not isinstance(activation, str):
        raise ActivationError(
            f"activation must be a name or an Activation, got {type(activation).__name__}"
        )
    try:
        return _REGISTRY[activation.lower()]
    except KeyError:
        known = ", ".join(available_activations())
        raise ActivationError(f"unknown activation {activation!r}; known: {known}") from None


def _autodiff_derivative(f: Elementwise) -> Elementwise:
    # σ is elementwise, so a JVP with a tangent of ones gives σ' at every entry at once.
    def derivative(z: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(f, (z,), (torch.ones_like(z),))[1]

    return derivative


def custom_activation(
    name: str,
    fn: Elementwise,
    d1: Elementwise | None = None,
    d2: Elementwise | None = None,
    symmetry: Symmetry | str = Symmetry.GENERIC,
    analytic: bool = True,
) -> Activation:
    """Build an activation from σ, taking σ' and σ'' from autodiff where not given.

    ``fn`` must be written with torch operations so that ``torch.func`` can differentiate it.
    The symmetry class is the caller's claim; nothing checks it.

    >>> import torch
    >>> act = custom_activation("cube_tanh", lambda z: torch.tanh(z) ** 3, symmetry="odd")
    >>> z = torch.tensor([0.2, -1.0], dtype=torch.float64)
    >>> t = torch.tanh(z)
    >>> bool(torch.allclose(act.d1(z), 3 * t**2 * (1 - t**2)))
    True
    """
    sym = Symmetry(symmetry) if isinstance(symmetry, str) else symmetry
    first = d1 if d1 is not None else _autodiff_derivative(fn)
    second = d2 if d2 is not None else _autodiff_derivative(first)
    try:
        probe = torch.linspace(-2.0, 2.0, 5, dtype=torch.float64)
        values = [f(probe) for f in (fn, first, second)]
    except Exception as exc:
        raise ActivationError(f"activation {name!r} cannot be evaluated: {exc}") from exc
    for label, value in zip(("σ", "σ'", "σ''"), values, strict=True):
        if value.shape != probe.shape:
            raise ActivationError(
                f"activation {name!r}: {label} is not elementwise "
                f"(shape {tuple(value.shape)} for input {tuple(probe.shape)})"
            )
    return Activation(name, fn, first, second, sym, analytic=analytic)
