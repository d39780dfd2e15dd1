"""Diagnose a trained two-layer model: is it stuck at a saddle, and can it be smaller?

``diagnose(model, data)`` answers the three questions of a stalled run:

1. *Can the current output be computed by a smaller network?* — the critical reduction
   operator gives the minimal width and the neuron clusters (docs/theory.md §4);
2. *Which parameters keep that output, and is the point critical?* — refinement and the
   certificate (‖∇R‖, the gradient-flat guard, the spectrum);
3. *Is there a direction that goes down on one side and up on the other?* — the saddle
   classification with its witness and the escape it leads to (docs/theory.md §7).

``model`` is a :class:`~saddlemap.TwoLayerNet` or a :class:`~saddlemap.LoadedModel` (what
:func:`~saddlemap.load_model` read, with its notes); anything else (a torch module, a fitted
scikit-learn MLP, a file) goes through ``load_model`` first.  Every step shares one
:class:`~saddlemap.Analysis`, so nothing is computed twice.  The :class:`Report` is a
dataclass; ``to_dict`` is its JSON record (versioned schema) and
:func:`~saddlemap.save_report` writes it with Markdown, HTML and figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._version import __version__
from .analysis import Analysis
from .critical_points import CriticalPoint, certify, find_critical_point
from .data import Dataset
from .errors import OptionError
from .escapes import EscapeResult, escape
from .io import LoadedModel, export_model, load_model
from .network import TwoLayerNet
from .reduction import Reduction, reduce
from .saddles import Classification, classify
from .tolerances import Tolerances
from .verdicts import Kind, ModelKind, Note, NoteCode

__all__ = ["SCHEMA_VERSION", "Compressed", "Report", "compress", "diagnose", "flops_per_sample"]

#: Version of the JSON schema written by :meth:`Report.to_dict`.
SCHEMA_VERSION = "1.1"


def as_loaded(model: Any, activation: str | None = None) -> LoadedModel:
    """``model`` as a :class:`LoadedModel` (float64 network), loading it when needed."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, TwoLayerNet):
        return LoadedModel(model.to(torch.float64), ModelKind.NET, "mse", None, None, ())
    return load_model(model, activation=activation)


def flops_per_sample(net: TwoLayerNet) -> int:
    """Multiply-adds of one forward pass, counted as 2 flops each, plus m activations.

    >>> flops_per_sample(TwoLayerNet([1.0, 2.0], [[1.0, 0.0], [0.0, 1.0]]))
    14
    """
    m, d, K = net.width, net.input_dim, net.output_dim
    return 2 * m * d + m + 2 * m * K + (m if net.b is not None else 0) + (
        K if net.c is not None else 0
    )


@dataclass(frozen=True, eq=False)
class Compressed:
    """A reduced model in the type it came in, with the evidence that it computes the same.

    Attributes:
        model: the reduced model: a TwoLayerNet, torch module or scikit-learn estimator.
        net: the reduced network.
        reduction: the :class:`~saddlemap.Reduction` behind it.
        params_before: parameters of the original network.
        params_after: parameters of the reduced one.
        flops_before: flops per sample of the original.
        flops_after: flops per sample of the reduced one.
        max_output_change: max |g_original − g_reduced| over the data and probe points.
    """

    model: Any
    net: TwoLayerNet
    reduction: Reduction
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    max_output_change: float


def compress(
    model: Any,
    X: Any = None,
    *,
    tol: float | None = None,
    activation: str | None = None,
    tolerances: Tolerances | None = None,
) -> Compressed:
    """The critical reduction of ``model``, exported back as the same kind of model.

    >>> out = compress(TwoLayerNet([0.3, 0.7], [[1.0], [1.0]]))
    >>> out.params_before, out.params_after, out.max_output_change < 1e-15
    (4, 2, True)
    """
    loaded = as_loaded(model, activation)
    net = loaded.net
    X_t = None if X is None else torch.as_tensor(X, dtype=net.dtype)
    return _compressed(net, reduce(net, X_t, tol=tol, tolerances=tolerances), loaded)


def _compressed(net: TwoLayerNet, red: Reduction, loaded: LoadedModel | None) -> Compressed:
    exported: Any = red.net
    if loaded is not None and loaded.kind in (ModelKind.TORCH, ModelKind.SKLEARN):
        exported = export_model(red.net, loaded)
    return Compressed(
        exported, red.net, red, net.num_params, red.net.num_params,
        flops_per_sample(net), flops_per_sample(red.net), red.output_change,
    )


@dataclass(frozen=True, eq=False)
class Report:
    """Everything ``diagnose`` found, for people (``summary``) and programs (``to_dict``).

    Attributes:
        net: the network as given (float64).
        data: the data.
        loss: R of the network as given.
        start: the certificate of the network as given.
        point: the certificate of the analysed point: ``start``, or the refined point.
        refined: whether ``point`` is a refinement of the network.
        classification: the saddle classification of ``point`` when critical, else of the
            network as given.
        reduction: the reduction of that same point.
        compression: the reduced network and its savings.
        escape: the escape from a saddle, when one was taken.
        source: where the model came from (``ModelKind.value`` and the file, if any).
        tolerances: every tolerance the answers were decided with.
        notes: what loading and the analysis noted (dtype conversions, assumed loss, a
            refinement that stopped short).
    """

    net: TwoLayerNet
    data: Dataset
    loss: float
    start: CriticalPoint
    point: CriticalPoint
    refined: bool
    classification: Classification
    reduction: Reduction
    compression: Compressed
    escape: EscapeResult | None
    source: str
    tolerances: Tolerances
    notes: tuple[Note, ...] = ()

    @property
    def verdict(self) -> Kind:
        """The kind of the diagnosed point."""
        return self.classification.kind

    @property
    def minimal_width(self) -> int:
        """r: the width the output needs."""
        return self.reduction.width

    def summary(self) -> str:
        """Plain-language answers to the three questions."""
        return "\n".join(_summary_lines(self))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (schema :data:`SCHEMA_VERSION`): enums as their values."""
        return _report_dict(self)


def _summary_lines(rep: Report) -> list[str]:
    m, r = rep.net.width, rep.minimal_width
    cp = rep.point
    lines = []
    if r < m:
        lines.append(
            f"1. Smaller network: yes — {r} of the {m} neurons compute the same output "
            f"(max change {rep.reduction.output_change:.1e}); "
            f"{rep.compression.params_before} → {rep.compression.params_after} parameters."
        )
    else:
        lines.append(f"1. Smaller network: no — all {m} neurons are needed for this output.")
    where = "after refinement" if rep.refined else "as given"
    state = "critical" if cp.converged else "not critical (still training)"
    lines.append(
        f"2. Critical point: {state} {where}; R = {cp.loss:.6g}, ‖∇R‖ = {cp.grad_norm:.1e} "
        f"(tolerance {cp.grad_tol:.0e}); Hessian: {cp.spectrum.summary()}."
    )
    kind = rep.classification.kind
    if kind.is_saddle:
        way = "a direction of negative curvature" if kind is Kind.STRICT_SADDLE else (
            "an escape curve (the Hessian is PSD, so random perturbations miss it)"
        )
        line = f"3. Saddle: yes — a {kind.value}; there is {way}."
        if rep.escape is not None and rep.escape.end is not None:
            line += (
                f" Escaping it lowers R from {rep.escape.loss_before:.6g} to "
                f"{rep.escape.end.loss:.6g} ({rep.escape.end.verdict.value}, minimal width "
                f"{rep.escape.end_width})."
            )
        lines.append(line)
    elif kind is Kind.LOCAL_MINIMUM:
        lines.append("3. Saddle: no — a local minimum; no second-order way down at this width.")
    elif kind is Kind.GLOBAL_MINIMUM:
        lines.append("3. Saddle: no — the residuals vanish: a global minimum, nothing lowers R.")
    elif kind is Kind.NOT_CRITICAL:
        lines.append("3. Saddle: not settled — the point is not critical; keep training.")
    else:
        lines.append("3. Saddle: undetermined at second order — " + "; ".join(
            rep.classification.evidence))
    return lines


def diagnose(
    model: Any,
    data: Dataset | Any,
    y: Any = None,
    *,
    loss: str | None = None,
    activation: str | None = None,
    refine: bool = True,
    escape_steps: int = 1000,
    tolerances: Tolerances | None = None,
) -> Report:
    """Diagnose a model on its data (see the module docstring).

    Args:
        model: a TwoLayerNet or LoadedModel; or a torch module, fitted scikit-learn MLP or
            model file, read by :func:`~saddlemap.load_model`.
        data: a :class:`~saddlemap.Dataset`, or the inputs X (n, d) with ``y``.
        y: the targets, when ``data`` is X.
        loss: the loss name for X, y; by default the one the model was trained with.
        activation: for state_dict files, which carry none.
        refine: refine to a nearby critical point before classifying.
        escape_steps: training steps after an escape (0 skips the escape).
        tolerances: the analysis tolerances (default :class:`~saddlemap.Tolerances`).
    """
    if not (isinstance(escape_steps, int) and 0 <= escape_steps <= 10**7):
        raise OptionError(f"escape_steps must be an integer in [0, 1e7], got {escape_steps!r}")
    loaded = as_loaded(model, activation)
    net = loaded.net
    if not isinstance(data, Dataset):
        data = Dataset(data, y, loss=loss or loaded.loss, num_outputs=net.output_dim)
    notes = list(loaded.notes)
    given = Analysis(net, data, tolerances)
    start = certify(given)
    point = start
    if refine and not start.converged:
        point = find_critical_point(net, data, tolerances=given.tolerances)
        if not point.converged:
            notes.append(Note(NoteCode.REFINEMENT_STOPPED, "refinement did not reach a "
                              "critical point: the model is still training"))
    # Analyse the refined point when it is critical, else the network as given.
    an = Analysis(point.net, data, given.tolerances) if point.converged else given
    if an is not given:
        an.memo("certificate", lambda: point)
    classification = classify(an)
    reduction = an.memo("reduction", lambda: reduce(an.net, an.data.X, tolerances=an.tolerances))
    escaped = None
    if escape_steps and classification.kind.is_saddle:
        escaped = escape(an, steps=escape_steps)
    source = loaded.kind.value + ("" if loaded.path is None else f" ({loaded.path})")
    return Report(
        net, an.data, given.loss, start, point, point is not start, classification, reduction,
        _compressed(an.net, reduction, None), escaped, source, given.tolerances, tuple(notes),
    )


# ----------------------------------------------------------------------- JSON record
def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _report_dict(rep: Report) -> dict[str, Any]:
    """The report as plain JSON types; keys are stable within a schema version."""
    cp, cls, red, comp = rep.point, rep.classification, rep.reduction, rep.compression
    spec = cp.spectrum
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "saddlemap_version": __version__,
        "model": {
            "source": rep.source, "width": rep.net.width, "input_dim": rep.net.input_dim,
            "output_dim": rep.net.output_dim, "activation": rep.net.activation.name,
            "hidden_bias": rep.net.b is not None, "output_bias": rep.net.c is not None,
            "parameters": rep.net.num_params,
        },
        "data": {"samples": rep.data.n, "loss": rep.data.loss.name},
        "loss": rep.loss,
        "tolerances": rep.tolerances.to_dict(),
        "critical_point": {
            "refined": rep.refined, "critical": cp.converged, "loss": cp.loss,
            "grad_norm": cp.grad_norm, "grad_tol": cp.grad_tol,
            "hgrad_ratio": _num(cp.hgrad_ratio), "iterations": cp.iterations,
            "verdict": cp.verdict.value, "warnings": [w.to_dict() for w in cp.warnings],
            "start_grad_norm": rep.start.grad_norm,
        },
        "spectrum": {
            "method": spec.method, "min": spec.min, "max": spec.max,
            "inertia": None if spec.inertia is None else list(spec.inertia),
            "zero_tol": spec.zero_tol, "zero_rtol": spec.zero_rtol,
            "eigenvalues": [float(x) for x in np.asarray(spec.eigenvalues)],
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
        "compression": {
            "params_before": comp.params_before, "params_after": comp.params_after,
            "flops_per_sample_before": comp.flops_before,
            "flops_per_sample_after": comp.flops_after,
            "max_output_change": comp.max_output_change,
        },
        "escape": None if rep.escape is None else _escape_dict(rep.escape),
        "summary": rep.summary().splitlines(),
        "notes": [n.to_dict() for n in rep.notes],
    }
    return out


def _escape_dict(esc: EscapeResult) -> dict[str, Any]:
    return {
        "method": esc.method.value, "step": esc.step, "loss_before": esc.loss_before,
        "loss_after_step": esc.loss_after_step, "escaped": esc.escaped,
        "end_loss": None if esc.end is None else esc.end.loss,
        "end_verdict": None if esc.end is None else esc.end.verdict.value,
        "end_width": esc.end_width,
        "path_t": [float(t) for t in esc.path_t],
        "path_loss": [float(x) for x in esc.path_loss],
    }
