"""The JSON record of a diagnosis: plain types, enums as their values, a versioned schema.

Keys are stable within a schema version; :data:`SCHEMA_VERSION` changes when one is
renamed or removed.  Schema 2.0 (the real-model diagnosis) has, besides the certificate,
spectrum, classification, reduction and escape: ``compression`` (``width``,
``loss_before``, ``loss_after``, ``profile``: a list of {width, loss, accuracy}),
``nearest_branch`` (``width``, ``distance``, ``output_change``, ``loss_gap``), ``descent``
(``lambda_min``, ``loss_after_step``), ``critical_point.at_infinity`` and
``penalty.weight_decay``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ._version import __version__

if TYPE_CHECKING:
    from .branch_point import BranchPoint
    from .descent import Descent
    from .diagnosis import Report
    from .escapes import EscapeResult

__all__ = ["SCHEMA_VERSION", "report_record"]

#: Version of the JSON schema written by :meth:`~saddlemap.Report.to_dict`.
SCHEMA_VERSION = "2.0"

def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _floats(values: Any) -> list[float | None]:
    return [_num(float(v)) for v in np.asarray(values, dtype=float)]


def report_record(rep: Report) -> dict[str, Any]:
    """The report as plain JSON types; keys are stable within a schema version."""
    cp, cls, red, comp = rep.point, rep.classification, rep.reduction, rep.compression
    spec = cp.spectrum
    return {
        "schema_version": SCHEMA_VERSION,
        "saddlemap_version": __version__,
        "summary": rep.summary().splitlines(),
        "model": {
            "source": rep.source, "width": rep.net.width, "input_dim": rep.net.input_dim,
            "output_dim": rep.net.output_dim, "activation": rep.net.activation.name,
            "hidden_bias": rep.net.b is not None, "output_bias": rep.net.c is not None,
            "parameters": rep.net.num_params,
        },
        "data": {"samples": rep.data.n, "loss": rep.data.loss.name},
        "loss": rep.loss,
        "tolerances": rep.tolerances.to_dict(),
        "penalty": {
            "weight_decay": None if rep.penalty is None else rep.penalty.weight_decay,
            "scope": None if rep.penalty is None else rep.penalty.scope,
        },
        "compression": {
            "width": comp.width, "loss_before": comp.loss_before, "loss_after": comp.loss_after,
            "max_loss_increase": None if comp.profile is None else comp.profile.max_loss_increase,
            "profile": [] if comp.profile is None else [p.to_dict() for p in comp.profile.points],
            "finetuned": None if comp.profile is None else comp.profile.chosen.finetuned,
            "params_before": comp.params_before, "params_after": comp.params_after,
            "flops_per_sample_before": comp.flops_before,
            "flops_per_sample_after": comp.flops_after,
            "max_output_change": comp.max_output_change,
        },
        "nearest_branch": None if rep.branch is None else _branch_dict(rep.branch),
        "descent": _descent_dict(rep.descent),
        "critical_point": {
            "describes_model": rep.describes_model, "refined": rep.refined is not None,
            "moved": cp.moved, "critical": cp.converged, "at_infinity": rep.start.at_infinity,
            "loss": cp.loss, "grad_norm": cp.grad_norm,
            "grad_tol": cp.grad_tol, "hgrad_ratio": _num(cp.hgrad_ratio),
            "iterations": cp.iterations, "verdict": cp.verdict.value,
            "warnings": [w.to_dict() for w in cp.warnings],
            "start_grad_norm": rep.start.grad_norm, "start_verdict": rep.start.verdict.value,
        },
        "spectrum": {
            "method": spec.method, "min": spec.min, "max": spec.max,
            "inertia": None if spec.inertia is None else list(spec.inertia),
            "zero_tol": spec.zero_tol, "zero_rtol": spec.zero_rtol,
            "eigenvalues": _floats(spec.eigenvalues),
        },
        "classification": {
            "kind": cls.kind.value, "curvature": _num(cls.curvature),
            "evidence": list(cls.evidence),
            "witness": "direction" if cls.direction is not None else (
                "curve" if cls.curve is not None else None),
        },
        "reduction": {
            "minimal_width": red.width, "groups": [list(g) for g in red.groups],
            "null_groups": [list(g) for g in red.dropped_null],
            "zero_neurons": list(red.dropped_zero), "tol": red.tol,
            "output_change": red.output_change, "is_minimal": red.is_minimal,
            "notes": list(red.notes),
        },
        "escape": None if rep.escape is None else _escape_dict(rep.escape),
        "notes": [n.to_dict() for n in rep.notes],
    }


def _branch_dict(bp: BranchPoint) -> dict[str, Any]:
    return {
        "width": bp.width, "distance": bp.distance, "output_change": bp.output_change,
        "loss_gap": bp.loss_gap, "near": bp.near, "saddle_branch": bp.is_saddle_branch,
        "kind": bp.classification.kind.value, "star_critical": bp.star.converged,
        "star_grad_norm": bp.star.grad_norm, "clusters": [list(g) for g in bp.groups],
        "nulls": list(bp.nulls), "nulls_on_zero_set": bp.nulls_on_zero_set,
    }


def _descent_dict(d: Descent) -> dict[str, Any]:
    return {
        "lambda_min": d.lambda_min, "lambda_max": d.lambda_max, "negative": d.negative,
        "zero_tol": d.zero_tol, "curvature": _num(d.curvature), "step": d.step,
        "loss_before": d.loss_before, "loss_after_step": d.loss_after_step,
        "improved": d.improved, "path_t": _floats(d.path_t), "path_loss": _floats(d.path_loss),
    }


def _escape_dict(esc: EscapeResult) -> dict[str, Any]:
    return {
        "method": esc.method.value, "step": esc.step, "loss_before": esc.loss_before,
        "loss_after_step": esc.loss_after_step, "escaped": esc.escaped,
        "end_loss": None if esc.end is None else esc.end.loss,
        "end_verdict": None if esc.end is None else esc.end.verdict.value,
        "end_width": esc.end_width,
        "path_t": _floats(esc.path_t), "path_loss": _floats(esc.path_loss),
    }
