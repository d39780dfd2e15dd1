"""Diagnose a trained two-layer model: is it stuck at a saddle, and can it be smaller?

``diagnose(model, X, y)`` answers the three questions of a stalled run:

1. *Can the current output be computed by a smaller network?* — the critical reduction
   operator gives the minimal width and the neuron clusters (THEORY §4);
2. *Which parameters keep that output, and is the point critical?* — refinement and the
   certificate (‖∇R‖, the gradient-flat guard, the spectrum);
3. *Is there a direction that goes down on one side and up on the other?* — the saddle
   classification with its witness and the escape it leads to (THEORY §7).

The :class:`Report` is a dataclass; :meth:`Report.save` writes JSON (versioned schema),
Markdown and a self-contained HTML page with the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .critical_points import CriticalPoint, certify, find_critical_point
from .data import Dataset
from .derivatives import loss as risk
from .escape import EscapeResult, escape
from .network import TwoLayerNet
from .reduction import Reduction, reduce
from .saddles import Classification, Kind, classify

__all__ = ["SCHEMA_VERSION", "Compressed", "Report", "compress", "diagnose"]

#: Version of the JSON schema written by :meth:`Report.to_dict`.
SCHEMA_VERSION = "1.0"


def _as_loaded(model: Any, activation: str | None) -> tuple[TwoLayerNet, Any]:
    """The network and the loader's record (None for a TwoLayerNet given directly)."""
    if isinstance(model, TwoLayerNet):
        return model.to(torch.float64), None
    from .io import load_model

    loaded = load_model(model, activation=activation)
    return loaded.net, loaded


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
    model: Any, X: Any = None, *, tol: float | None = None, activation: str | None = None
) -> Compressed:
    """The critical reduction of ``model``, exported back as the same kind of model.

    >>> from saddlemap import TwoLayerNet
    >>> out = compress(TwoLayerNet([0.3, 0.7], [[1.0], [1.0]]))
    >>> out.params_before, out.params_after, out.max_output_change < 1e-15
    (4, 2, True)
    """
    net, loaded = _as_loaded(model, activation)
    X_t = None if X is None else torch.as_tensor(X, dtype=net.dtype)
    return _compressed(net, reduce(net, X_t, tol=tol), loaded)


def _compressed(net: TwoLayerNet, red: Reduction, loaded: Any) -> Compressed:
    exported: Any = red.net
    if loaded is not None and loaded.kind in ("torch", "sklearn"):
        from .io import export_model

        exported = export_model(red.net, loaded)
    return Compressed(
        exported, red.net, red, net.num_params, red.net.num_params,
        flops_per_sample(net), flops_per_sample(red.net), red.output_change,
    )


@dataclass(frozen=True, eq=False)
class Report:
    """Everything ``diagnose`` found, for people (``summary``) and programs (``to_dict``)."""

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
    notes: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        """The kind of the diagnosed point, in words."""
        return self.classification.kind.value

    @property
    def minimal_width(self) -> int:
        """r: the width the output needs."""
        return self.reduction.width

    def summary(self) -> str:
        """Plain-language answers to the three questions."""
        return "\n".join(_summary_lines(self))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (schema :data:`SCHEMA_VERSION`)."""
        from ._report import report_dict

        return report_dict(self)

    def save(self, folder: str) -> dict[str, str]:
        """Write report.json, report.md, report.html and the figures into ``folder``."""
        from ._report import save_report

        return save_report(self, folder)


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
    if kind in (Kind.STRICT_SADDLE, Kind.NON_STRICT_SADDLE):
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
    elif kind is Kind.NOT_CRITICAL:
        lines.append("3. Saddle: not settled — the point is not critical; keep training.")
    else:
        lines.append("3. Saddle: undetermined at second order — " + "; ".join(
            rep.classification.evidence))
    return lines


def diagnose(
    model: Any,
    X: Any,
    y: Any = None,
    *,
    loss: str | None = None,
    activation: str | None = None,
    refine: bool = True,
    escape_steps: int = 1000,
    data: Dataset | None = None,
) -> Report:
    """Diagnose a model on its data (see the module docstring).

    Args:
        model: a TwoLayerNet, a torch module, a fitted scikit-learn MLP or a model file.
        X: inputs (n, d) (ignored when ``data`` is given).
        y: targets.
        loss: the loss name; by default the one the model was trained with.
        activation: for state_dict files, which carry none.
        refine: refine to a nearby critical point before classifying.
        escape_steps: training steps after an escape (0 skips the escape).
        data: a prepared :class:`~saddlemap.Dataset` instead of X, y.
    """
    net, loaded = _as_loaded(model, activation)
    if data is None:
        chosen = loss or (loaded.loss if loaded is not None else "mse")
        data = Dataset(X, y, loss=chosen, num_outputs=net.output_dim)
    notes = [] if loaded is None else list(loaded.notes)
    start = certify(net, data)
    point = find_critical_point(net, data) if refine and not start.converged else start
    refined = point is not start
    if refined and not point.converged:
        notes.append("refinement did not reach a critical point: the model is still training")
    at = point.net if point.converged else net
    # the certificate of ``at`` is already known: ``point`` when refined to it, else ``start``
    classification = classify(at, data, certificate=point if point.converged else start)
    reduction = reduce(at, data.X)
    escaped = None
    if escape_steps and classification.kind in (Kind.STRICT_SADDLE, Kind.NON_STRICT_SADDLE):
        escaped = escape(at, data, steps=escape_steps, start=classification)
    source = "TwoLayerNet" if loaded is None else f"{loaded.kind} model"
    compression = _compressed(at, reduction, None)
    return Report(
        net, data, risk(net, data), start, point, refined, classification, reduction,
        compression, escaped, source, tuple(notes),
    )
