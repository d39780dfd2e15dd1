"""The vocabularies of saddlemap's answers, as enums: every verdict is data, never prose.

Each enum's value is the phrase a person reads; JSON reports write ``.value`` and read it
back with ``Enum(value)``.  Findings that qualify an answer (a dead neuron, a diverging pair,
a dtype conversion) are :class:`Note` objects: a :class:`NoteCode` that programs decide on,
and a sentence for people.  Decisions are made on codes, never by searching the text.

>>> Kind("strict saddle") is Kind.STRICT_SADDLE
True
>>> note = Note(NoteCode.DEAD_NEURONS, "neurons [2] are saturated or dead")
>>> str(note), note.to_dict()["code"]
('neurons [2] are saturated or dead', 'dead neurons')
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BranchVerdict",
    "EdgeKind",
    "EscapeMethod",
    "Kind",
    "ModelKind",
    "Note",
    "NoteCode",
    "PlateauVerdict",
    "SplitRegion",
    "Verdict",
]


class Verdict(enum.Enum):
    """What a point is by its gradient and Hessian spectrum alone (the certificate)."""

    STRICT_MINIMUM = "strict local minimum"
    STRICT_SADDLE = "strict saddle"
    DEGENERATE = "degenerate"  # PSD with zero eigenvalues: second order cannot settle it
    GRADIENT_FLAT = "gradient-flat"  # H∇R ≈ 0 with ∇R ≠ 0: a stall of Newton-type finders
    AT_INFINITY = "heading to a critical point at infinity"  # R still falls along a ray
    NOT_CRITICAL = "not critical"


class Kind(enum.Enum):
    """What a critical point is, settled by the spectrum and the saddle theory together."""

    STRICT_SADDLE = "strict saddle"
    NON_STRICT_SADDLE = "non-strict saddle"
    LOCAL_MINIMUM = "local minimum"
    GLOBAL_MINIMUM = "global minimum"  # the residuals vanish: every representation is optimal
    UNDETERMINED = "undetermined at second order"
    NOT_CRITICAL = "not critical"

    @property
    def is_saddle(self) -> bool:
        """Strict or non-strict saddle."""
        return self in (Kind.STRICT_SADDLE, Kind.NON_STRICT_SADDLE)


class SplitRegion(enum.Enum):
    """What the points of a splitting line λ ↦ (λa*, (1 − λ)a*) are on one interval."""

    STRICT_SADDLE = "strict saddle"
    NON_STRICT_SADDLE = "non-strict saddle"
    LOCAL_MINIMUM = "local minimum (if θ* is a strict minimum)"
    UNDETERMINED = "undetermined at second order"


class BranchVerdict(enum.Enum):
    """The saddle verdict over one branch of the critical set Q_m(f)."""

    SADDLE_BRANCH = "saddle branch"  # every point is a saddle
    MIXED = "mixed"  # saddles and minima (or undetermined points), by the signs of the ratios
    UNDETERMINED = "undetermined"


class EdgeKind(enum.Enum):
    """How two branches of the hierarchy are related."""

    SPLIT = "split"  # a neuron of a cluster split in two (width m − 1 → m)
    NULL = "null"  # a null neuron added (width m − 1 → m)
    MEET = "meet"  # two width-m branches meet: a null neuron slides into a cluster


class EscapeMethod(enum.Enum):
    """How an escape left its saddle."""

    NEGATIVE_CURVATURE = "negative-curvature direction"
    ESCAPE_CURVE = "escape curve"
    THREE_FOLD_SPLIT = "three-fold split"
    NONE = "none"


class PlateauVerdict(enum.Enum):
    """What a plateau of the training loss sits near."""

    NARROWER_SADDLE = "saddle of a narrower network"
    SADDLE = "saddle"
    LOCAL_MINIMUM = "local minimum"
    UNDETERMINED = "critical point of undetermined type"
    CHANNEL_TO_INFINITY = "channel to infinity"
    NOT_NEAR_CRITICAL = "not near a critical point"
    NOT_REFINED = "not refined"


class ModelKind(enum.Enum):
    """Where a loaded model came from (and what type ``compress`` gives back)."""

    NET = "TwoLayerNet"
    TORCH = "torch"
    STATE_DICT = "state_dict"
    SAFETENSORS = "safetensors"
    SKLEARN = "sklearn"
    NPZ = "npz"


class NoteCode(enum.Enum):
    """What a :class:`Note` is about."""

    NOT_ANALYTIC = "activation not analytic"
    POLYNOMIAL = "polynomial activation"
    DEAD_NEURONS = "dead neurons"
    LARGE_WEIGHTS = "large weights"
    CHANNEL_PAIR = "channel pair"
    LINEAR_CONVERGENCE = "linear convergence"
    PARAMETERS_GREW = "parameters grew"
    AT_INFINITY = "at infinity"
    DTYPE_CONVERTED = "dtype converted"
    LOSS_ASSUMED = "loss assumed"
    ACTIVATION_DIFFERS = "activation differs"
    SOFTPLUS_THRESHOLD = "softplus threshold"
    REFINEMENT_STOPPED = "refinement stopped"
    PENALTY = "penalty"
    OTHER = "other"


@dataclass(frozen=True)
class Note:
    """A finding that qualifies an answer: a code to decide on, a sentence to read."""

    code: NoteCode
    text: str

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        """``{"code": ..., "text": ...}`` for JSON."""
        return {"code": self.code.value, "text": self.text}
