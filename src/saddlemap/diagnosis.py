"""Diagnose a trained two-layer model, critical or not: smaller, what keeps it, way down.

``diagnose(model, data)`` answers, for any model and with the numbers behind each answer:

1. *A smaller model, with a loss budget.* The width–loss profile
   (:func:`~saddlemap.compression_profile`): merges of near-equal neurons, drops of near-null
   ones, each followed by an exact refit of the output layer; the answer is the smallest
   width whose loss stays within ``max_loss_increase`` (1 % by default), exported in the
   model's own type, dtype and device.
2. *Which parameters keep the output.* The clusters and null neurons at that width, and the
   branch point of the critical set they indicate (:func:`~saddlemap.nearest_branch_point`:
   the narrow network refined to a critical point and embedded back), with its distance from
   the model, output difference and loss gap (docs/theory.md §5–§6).
3. *A way down, now.* The most negative Hessian curvature at the model itself, the loss
   along it on both sides, and the step taken (:func:`~saddlemap.negative_curvature_step`);
   when the model (or a refinement of it that stayed within ``tolerances.near``) is a
   critical point, its saddle classification and escape (docs/theory.md §7).

It is honest about where the theory stops: a point whose loss still falls along the output
ray is "heading to a critical point at infinity", never critical; a refined point that moved
farther than ``tolerances.near`` is labelled as describing that point; a weight-decay
penalty is analysed as trained (R + (λ/2)‖Mθ‖²) and the report says what it changes.

``model`` is a :class:`~saddlemap.TwoLayerNet` or a :class:`~saddlemap.LoadedModel`;
anything else (a torch module, a fitted scikit-learn MLP, a file) goes through
:func:`~saddlemap.load_model` first.  The :class:`Report` is a dataclass; ``to_dict`` is its
JSON record (schema :data:`SCHEMA_VERSION`) and :func:`~saddlemap.save_report` writes it
with Markdown, HTML and figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ._record import SCHEMA_VERSION, report_record
from .analysis import Analysis
from .branch_point import BranchPoint, nearest_branch_point
from .compression import CompressionProfile, compression_profile
from .critical_points import REFINE_PATIENCE, CriticalPoint, certify, find_critical_point
from .data import Dataset
from .descent import Descent, negative_curvature_step
from .errors import OptionError
from .escapes import EscapeResult, escape
from .io import LoadedModel, export_model, load_model, sklearn_penalty
from .losses import Penalty
from .network import TwoLayerNet
from .reduction import Reduction, reduce
from .saddles import Classification, classify
from .tolerances import Tolerances
from .verdicts import Kind, ModelKind, Note, NoteCode

__all__ = ["SCHEMA_VERSION", "Compressed", "Report", "compress", "diagnose", "flops_per_sample"]

#: Refinement iterations diagnose spends at most (it is an optional, bounded step).
REFINE_ITERATIONS = 30


def as_loaded(model: Any, activation: str | None = None, trust_pickle: bool = False
              ) -> LoadedModel:
    """``model`` as a :class:`LoadedModel` (float64 network), loading it when needed."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, TwoLayerNet):
        return LoadedModel(model.to(torch.float64), ModelKind.NET, "mse", None, None, (),
                           dtype=model.dtype, device=model.device)
    return load_model(model, activation=activation, trust_pickle=trust_pickle)


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
    """A smaller model in the type it came in, with the evidence of what it costs.

    Attributes:
        model: the smaller model: a TwoLayerNet, torch module (original dtype and device) or
            scikit-learn estimator.
        net: the smaller network (float64).
        width: its width.
        params_before: parameters of the original network.
        params_after: parameters of the smaller one.
        flops_before: flops per sample of the original.
        flops_after: flops per sample of the smaller one.
        loss_before: R of the original (None without data).
        loss_after: R of the smaller one (None without data).
        max_output_change: max |g_original − g_smaller| over the data (and probe points).
        profile: the width–loss profile the width was chosen from (None for an exact
            reduction).
        reduction: the exact reduction (None for a budgeted compression).
    """

    model: Any
    net: TwoLayerNet
    width: int
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    loss_before: float | None
    loss_after: float | None
    max_output_change: float
    profile: CompressionProfile | None = None
    reduction: Reduction | None = None


def _export(net: TwoLayerNet, loaded: LoadedModel) -> Any:
    if loaded.kind in (ModelKind.TORCH, ModelKind.SKLEARN):
        return export_model(net, loaded)
    return net.to(loaded.dtype)


def compress(
    model: Any,
    data: Dataset | Any = None,
    y: Any = None,
    *,
    max_loss_increase: float = 0.01,
    tol: float | None = None,
    activation: str | None = None,
    finetune_steps: int = 0,
    tolerances: Tolerances | None = None,
    progress: bool | None = False,
    trust_pickle: bool = False,
) -> Compressed:
    """A smaller ``model`` in its own type: within a loss budget, or exactly.

    With data (a :class:`~saddlemap.Dataset`, or X with ``y``) and no ``tol``: the smallest
    width of the :func:`~saddlemap.compression_profile` whose loss is within
    ``max_loss_increase`` (relative) of the model's.  Without targets, or with ``tol``: the
    exact critical reduction (:func:`~saddlemap.reduce`, equal-weight tolerance ``tol``,
    inputs X alone serving as probe points), which keeps the output function.
    ``trust_pickle`` lets a model file that needs unpickling load: that runs code from the
    file, so only for files you trust (:func:`~saddlemap.load_model`).

    >>> out = compress(TwoLayerNet([0.3, 0.7], [[1.0], [1.0]]))
    >>> out.params_before, out.params_after, out.max_output_change < 1e-15
    (4, 2, True)
    """
    loaded = as_loaded(model, activation, trust_pickle)
    net = loaded.net
    probes = None
    if data is not None and not isinstance(data, Dataset):
        if y is None:  # inputs alone: probe points of the exact reduction
            probes, data = torch.as_tensor(data, dtype=net.dtype), None
        else:
            data = Dataset(data, y, loss=loaded.loss, num_outputs=net.output_dim)
    if data is None or tol is not None:
        X = probes if data is None else data.X.to(net.dtype)
        red = reduce(net, X, tol=tol, tolerances=tolerances)
        before = None if data is None else float(Analysis(net, data, tolerances).loss)
        after = None if data is None else float(Analysis(red.net, data, tolerances).loss)
        return Compressed(_export(red.net, loaded), red.net, red.width, net.num_params,
                          red.net.num_params, flops_per_sample(net), flops_per_sample(red.net),
                          before, after, red.output_change, reduction=red)
    profile = compression_profile(net, data, max_loss_increase=max_loss_increase,
                                  finetune_steps=finetune_steps, progress=bool(progress))
    return _from_profile(net, profile, loaded)


def _from_profile(net: TwoLayerNet, profile: CompressionProfile, loaded: LoadedModel) -> Compressed:
    chosen = profile.chosen
    return Compressed(
        _export(chosen.net, loaded), chosen.net, chosen.width, net.num_params,
        chosen.net.num_params, flops_per_sample(net), flops_per_sample(chosen.net),
        profile.loss_before, chosen.loss, chosen.output_change, profile=profile,
    )


@dataclass(frozen=True, eq=False)
class Report:
    """Everything ``diagnose`` found, for people (``summary``) and programs (``to_dict``).

    Attributes:
        net: the network as given (float64).
        data: the data (with the penalty analysed, if any).
        loss: R of the network as given (with the penalty, if any).
        start: the certificate of the network as given.
        descent: the negative-curvature step at the network as given.
        compression: the smaller model chosen within the loss budget, with its profile.
        branch: the branch point nearest to the model at the chosen width (None when no
            narrower width is within the budget).
        refined: the bounded refinement of the network, when it was not critical and
            ``refine`` was asked for (its ``moved`` says how far it went).
        point: the certificate the classification is about: ``start``, or ``refined`` when
            that converged.
        describes_model: whether ``point`` is the model or within ``tolerances.near`` of it.
        classification: the saddle classification of ``point``.
        reduction: the exact reduction of ``point``.
        escape: the escape from a saddle, when one was taken.
        source: where the model came from (``ModelKind.value`` and the file, if any).
        tolerances: every tolerance the answers were decided with.
        penalty: the weight-decay penalty analysed with R, if any.
        notes: what loading and the analysis noted (dtype conversions, assumed loss, a
            refinement that stopped short, the penalty).
    """

    net: TwoLayerNet
    data: Dataset
    loss: float
    start: CriticalPoint
    descent: Descent
    compression: Compressed
    branch: BranchPoint | None
    refined: CriticalPoint | None
    point: CriticalPoint
    describes_model: bool
    classification: Classification
    reduction: Reduction
    escape: EscapeResult | None
    source: str
    tolerances: Tolerances
    penalty: Penalty | None = None
    notes: tuple[Note, ...] = ()

    @property
    def verdict(self) -> Kind:
        """The kind of the diagnosed point."""
        return self.classification.kind

    @property
    def minimal_width(self) -> int:
        """r: the width the exact reduction of the analysed point needs."""
        return self.reduction.width

    def summary(self) -> str:
        """Plain-language answers to the three questions, each with its numbers."""
        return "\n".join(_summary_lines(self))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (schema :data:`SCHEMA_VERSION`): enums as their values."""
        return report_record(self)


def _percent(after: float | None, before: float | None) -> str:
    if after is None or before is None or before <= 0:
        return "n/a"
    return f"{100 * (after - before) / before:+.2f} %"


def _answer_smaller(rep: Report) -> str:
    comp, m = rep.compression, rep.net.width
    prof = comp.profile
    budget = f"{100 * prof.max_loss_increase:g} %" if prof is not None else "0 %"
    if comp.width < m:
        acc = ""
        if prof is not None and prof.accuracy_before is not None:
            acc = f", accuracy {prof.accuracy_before:.3f} → {prof.chosen.accuracy:.3f}"
        return (f"1. Smaller model: yes — width {comp.width} of {m} keeps R within the "
                f"{budget} budget (R {comp.loss_before:.6g} → {comp.loss_after:.6g}, "
                f"{_percent(comp.loss_after, comp.loss_before)}{acc}); "
                f"{comp.params_before} → {comp.params_after} parameters.")
    nxt = next((p for p in prof.points if p.width == m - 1), None) if prof else None
    cost = "" if nxt is None else (
        f"; the best width {m - 1} costs {_percent(nxt.loss, comp.loss_before)}")
    return f"1. Smaller model: no — no narrower width stays within the {budget} budget{cost}."


def _answer_keeps(rep: Report) -> str:
    bp = rep.branch
    if bp is None:
        return ("2. What keeps the output: all neurons are needed at this budget; "
                f"the exact reduction has width {rep.minimal_width}.")
    clusters = [list(g) for g in bp.groups if len(g) > 1]
    return (f"2. What keeps the output: clusters {clusters or 'none'} and null neurons "
            f"{list(bp.nulls) or 'none'}; {bp.summary()}.")


def _answer_down(rep: Report) -> str:
    parts = [rep.descent.summary()]
    cp, kind = rep.point, rep.classification.kind
    if rep.start.at_infinity:
        parts.append("the loss still falls along the output-layer ray: heading to a critical "
                     "point at infinity, not at one")
    elif not cp.converged:
        parts.append(f"not at a critical point (‖∇R‖ = {cp.grad_norm:.1e} > {cp.grad_tol:.0e}"
                     f"{'' if rep.refined is None else ', and refinement did not reach one'})")
    else:
        which = "the model" if rep.refined is None else (
            f"a refined point {rep.refined.moved:.2g} away"
            + ("" if rep.describes_model else ", which describes that point, not the model"))
        parts.append(f"{which} is a {kind.value}")
        if rep.escape is not None and rep.escape.end is not None:
            parts.append(f"escaping it lowers R from {rep.escape.loss_before:.6g} to "
                         f"{rep.escape.end.loss:.6g}")
    return "3. A way down: " + "; ".join(parts) + "."


def _summary_lines(rep: Report) -> list[str]:
    lines = [_answer_smaller(rep), _answer_keeps(rep), _answer_down(rep)]
    if rep.penalty is not None:
        lines.append(f"Penalty: {_penalty_sentence(rep.penalty)}")
    return lines


def _penalty_sentence(penalty: Penalty) -> str:
    return (f"analysed as trained, R + (λ/2)‖θ‖² with λ = {penalty.weight_decay:.3g} over "
            f"{'all parameters' if penalty.scope == 'all' else 'the weights (not biases)'} "
            "(the compression budget compares R alone: a narrower network pays less penalty). "
            "The critical-set theory assumes no penalty: with one, splitting a neuron changes "
            "the penalty, so embedded points are no longer critical, and the branch and saddle "
            "answers describe the unpenalised geometry")


def _penalty(loaded: LoadedModel, weight_decay: float | None, n: int) -> Penalty | None:
    if weight_decay is not None:
        return Penalty(weight_decay, "all") if weight_decay > 0 else None
    if loaded.kind is ModelKind.SKLEARN and loaded.source is not None:
        return sklearn_penalty(loaded.source, n)
    return None


def _dataset(data: Any, y: Any, loss: str | None, loaded: LoadedModel,
             weight_decay: float | None) -> Dataset:
    net = loaded.net
    if isinstance(data, Dataset):
        base = data
    else:
        base = Dataset(data, y, loss=loss or loaded.loss, num_outputs=net.output_dim)
    penalty = _penalty(loaded, weight_decay, base.n)
    return base if penalty is None else base.with_penalty(penalty)


class _Stages:
    """One progress bar over the stages of a diagnosis (stderr; off when not a terminal)."""

    NAMES = ("certify", "descent", "compress", "branch point", "refine", "classify", "escape")

    def __init__(self, progress: bool | None) -> None:
        self.bar = tqdm(total=len(self.NAMES), desc="diagnose", unit="stage",
                        disable=None if progress is None else not progress, leave=False)

    def __call__(self, name: str) -> None:
        self.bar.set_postfix_str(name)
        self.bar.update(0 if name == self.NAMES[0] else 1)

    def close(self) -> None:
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


def diagnose(
    model: Any,
    data: Dataset | Any,
    y: Any = None,
    *,
    loss: str | None = None,
    activation: str | None = None,
    max_loss_increase: float = 0.01,
    finetune_steps: int = 0,
    weight_decay: float | None = None,
    refine: bool = True,
    escape_steps: int = 1000,
    tolerances: Tolerances | None = None,
    progress: bool | None = False,
    trust_pickle: bool = False,
) -> Report:
    """Diagnose a model on its data (see the module docstring).

    Args:
        model: a TwoLayerNet or LoadedModel; or a torch module, fitted scikit-learn MLP or
            model file, read by :func:`~saddlemap.load_model`.
        data: a :class:`~saddlemap.Dataset`, or the inputs X (n, d) with ``y``.
        y: the targets, when ``data`` is X.
        loss: the loss name for X, y; by default the one the model was trained with.
        activation: for state_dict files, which carry none.
        max_loss_increase: the relative loss budget of the smaller model (0.01 = 1 %).
        finetune_steps: fine-tune candidate widths (L-BFGS, all parameters) before judging
            them against the budget; 0 judges the output-layer refits alone.
        weight_decay: analyse R + (λ/2)‖θ‖² over all parameters (torch's ``weight_decay``);
            by default none, except a scikit-learn model's own ``alpha``.
        refine: when the model is not critical, refine it (bounded: at most
            :data:`REFINE_ITERATIONS` iterations, a third of that matrix-free, and
            3 · ``tolerances.near`` away).
        escape_steps: training steps after an escape from a saddle (0 skips the escape).
        tolerances: the analysis tolerances (default :class:`~saddlemap.Tolerances`).
        progress: a progress bar on stderr (None: only on a terminal).
        trust_pickle: unpickle a model file that needs it; this runs code from the file, so
            only for files you trust.
    """
    if not (isinstance(escape_steps, int) and 0 <= escape_steps <= 10**7):
        raise OptionError(f"escape_steps must be an integer in [0, 1e7], got {escape_steps!r}")
    if not (isinstance(max_loss_increase, (int, float)) and 0 <= max_loss_increase < math.inf):
        raise OptionError(f"max_loss_increase must be a finite number ≥ 0, got "
                          f"{max_loss_increase!r}")
    if weight_decay is not None and not (isinstance(weight_decay, (int, float))
                                         and 0 <= weight_decay < math.inf):
        raise OptionError(f"weight_decay must be a finite number ≥ 0, got {weight_decay!r}")
    loaded = as_loaded(model, activation, trust_pickle)
    data = _dataset(data, y, loss, loaded, weight_decay)
    stage = _Stages(progress)
    try:
        return _diagnose(loaded, data, (max_loss_increase, finetune_steps), refine,
                         escape_steps, tolerances, stage)
    finally:
        stage.close()


def _diagnose(
    loaded: LoadedModel, data: Dataset, budget: tuple[float, int], refine: bool,
    escape_steps: int, tolerances: Tolerances | None, stage: _Stages,
) -> Report:
    net, notes = loaded.net, list(loaded.notes)
    if data.penalty is not None:  # the report's penalty line replaces the loader's caveat
        notes = [note for note in notes if note.code is not NoteCode.PENALTY]
    stage("certify")
    given = Analysis(net, data, tolerances)
    tol = given.tolerances
    start = certify(given)
    stage("descent")
    descent = negative_curvature_step(given)
    stage("compress")
    profile = compression_profile(net, data, max_loss_increase=budget[0],
                                  finetune_steps=budget[1])
    compression = _from_profile(net, profile, loaded)
    stage("branch point")
    chosen = profile.chosen
    branch = None if chosen.width >= net.width else nearest_branch_point(
        net, data, None, chosen.groups, chosen.dropped, tolerances=tol)
    stage("refine")
    refined, point, an = None, start, given
    if refine and given.matvec_budget is not None and not start.converged:
        notes.append(Note(NoteCode.REFINEMENT_STOPPED, "refinement skipped: at P = "
                          f"{net.num_params} each Hessian-vector product is expensive; run "
                          "saddlemap.find_critical_point on the model to refine it"))
    elif refine and not start.converged and not start.at_infinity:
        iterations = REFINE_ITERATIONS if given.dense else REFINE_ITERATIONS // 3
        refined = find_critical_point(net, data, tolerances=tol, max_iter=iterations,
                                      max_move=3 * tol.near, patience=REFINE_PATIENCE)
        if refined.converged:
            point, an = refined, Analysis(refined.net, data, tol)
            an.memo("certificate", lambda: refined)
        else:
            notes.append(Note(NoteCode.REFINEMENT_STOPPED, "refinement did not reach a "
                              f"critical point within {refined.iterations} iterations "
                              f"(moved {refined.moved:.2g}): the model is still training"))
    describes_model = point is start or point.moved <= tol.near
    stage("classify")
    classification = classify(an)
    reduction = an.memo("reduction", lambda: reduce(an.net, an.data.X, tolerances=tol))
    stage("escape")
    escaped = None
    if escape_steps and classification.kind.is_saddle:
        escaped = escape(an, steps=escape_steps)
    source = loaded.kind.value + ("" if loaded.path is None else f" ({loaded.path})")
    return Report(
        net, data, given.loss, start, descent, compression, branch, refined, point,
        describes_model, classification, reduction, escaped, source, tol, data.penalty,
        tuple(notes),
    )
