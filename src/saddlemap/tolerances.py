"""Every tolerance of an analysis in one object, derived from the dtype and overridable.

A practitioner's model is never exactly at a critical point, so each yes/no of the analysis
("is ∇R zero?", "is this eigenvalue zero?", "do these neurons coincide?", "is u on Z_f?")
is a comparison against a tolerance.  :class:`Tolerances` names each of them, fills the ones
left as None from the dtype (√ε for eigenvalues and weights, the float64 defaults scaled by
√(ε/ε₆₄) for gradients and zero sets), checks every value, and is written into every result
and report (``to_dict``), so an answer can always be re-checked with the numbers behind it.

Each field is relative to a stated scale (see the attribute list), except ``grad``, which is
an absolute floor for ‖∇R‖ that the rounding floor of ∇R raises where that is larger
(:func:`saddlemap.grad_tolerance`).

>>> import torch
>>> tol = Tolerances().resolved(torch.float64)
>>> tol.grad, tol.zero_eig == tol.merge == 2.0 ** -26
(1e-10, True)
>>> Tolerances(grad=1e-8).resolved(torch.float32).grad  # a value given stays as given
1e-08
>>> Tolerances(zero_set=-1.0)
Traceback (most recent call last):
saddlemap.errors.OptionError: tolerance zero_set must be a finite number in [0, 1), got -1.0
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from .errors import OptionError

__all__ = ["Tolerances"]

_EPS64 = torch.finfo(torch.float64).eps


@dataclass(frozen=True)
class Tolerances:
    """The tolerances of one analysis.

    Attributes:
        grad: ‖∇R‖ at or below this (or the rounding floor of ∇R, if larger) is critical.
            None: 1e-10 in float64, scaled by √(ε/ε₆₄) for other dtypes.
        flat: a non-critical point is gradient-flat when ‖H∇R‖/‖∇R‖ ≤ flat · max|λ(H)|
            (docs/theory.md §9).
        zero_eig: an eigenvalue is zero when |λ| ≤ zero_eig · max|λ| (docs/theory.md §10.5).
            None: √ε of the dtype.
        merge: two neurons coincide when their (sign-canonical) input weights are within
            merge · max(1, max‖w̃‖); an output weight is zero below merge · max(1, max|a|).
            None: √ε of the dtype.
        zero_set: u is on Z_f when ‖φ(u)‖ ≤ zero_set · Σ_i ‖e_i‖₁ max(|σ(uᵀx̃_i)|, 1), the size
            of φ's terms (or when its Newton distance is that small relative to 1 + ‖u‖).
            None: 1e-9 in float64, scaled by √(ε/ε₆₄).
        singular: a point of Z_f is singular (on Z'_f) when ‖∇φ(u)‖ ≤ singular times the
            size of ∇φ's terms.
        kernel: an eigenvalue μ of K_j = G_{a_j*}(w̃_j*) is zero when
            |μ| ≤ kernel · max(max|μ|, Σ_i ‖e_i‖₁) (the Fukumizu–Amari rule).
        ratio: a split copy's output-weight ratio counts as zero below this.
        weight_limit: weights above this are flagged as diverging (docs/theory.md §10.4).
        near: a refined point or a branch point within ``near`` · ‖θ‖ of the model (relative
            distance in parameter space) describes the model; farther, an answer about it is
            labelled as describing that other point.
    """

    grad: float | None = None
    flat: float = 1e-6
    zero_eig: float | None = None
    merge: float | None = None
    zero_set: float | None = None
    singular: float = 1e-6
    kernel: float = 1e-8
    ratio: float = 1e-12
    weight_limit: float = 1e3
    near: float = 0.1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            upper = math.inf if f.name == "weight_limit" else 1.0
            ok = isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value < upper
            if f.name == "weight_limit":
                ok = ok and value > 0
            if not ok:
                span = "> 0" if f.name == "weight_limit" else "in [0, 1)"
                raise OptionError(
                    f"tolerance {f.name} must be a finite number {span}, got {value!r}"
                )

    def resolved(self, dtype: torch.dtype) -> Tolerances:
        """A copy with every None filled in for ``dtype``."""
        eps = torch.finfo(dtype).eps
        scale = math.sqrt(eps / _EPS64)
        return dataclasses.replace(
            self,
            grad=1e-10 * scale if self.grad is None else self.grad,
            zero_eig=math.sqrt(eps) if self.zero_eig is None else self.zero_eig,
            merge=math.sqrt(eps) if self.merge is None else self.merge,
            zero_set=1e-9 * scale if self.zero_set is None else self.zero_set,
        )

    def replace(self, **changes: Any) -> Tolerances:
        """A copy with some fields changed (each checked)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, float | None]:
        """The fields by name, for JSON reports."""
        return dataclasses.asdict(self)

    # The resolved fields, typed as floats for the code that reads them.
    @property
    def grad_value(self) -> float:
        """``grad`` of a resolved instance."""
        return _need(self.grad, "grad")

    @property
    def zero_eig_value(self) -> float:
        """``zero_eig`` of a resolved instance."""
        return _need(self.zero_eig, "zero_eig")

    @property
    def merge_value(self) -> float:
        """``merge`` of a resolved instance."""
        return _need(self.merge, "merge")

    @property
    def zero_set_value(self) -> float:
        """``zero_set`` of a resolved instance."""
        return _need(self.zero_set, "zero_set")


def _need(value: float | None, name: str) -> float:
    if value is None:
        raise RuntimeError(f"tolerance {name} is unresolved: call Tolerances.resolved(dtype)")
    return value
