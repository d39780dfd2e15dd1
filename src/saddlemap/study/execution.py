"""One teacher–student run of a study: build the problem, train it with a plateau monitor.

:func:`run_one` is pure: the same :class:`~saddlemap.study.config.RunSpec` always gives the
same record.  :func:`execute` wraps it for the engines (timing, errors caught) and is a
top-level function, so it pickles under the ``spawn`` start method.  :func:`build_problem`
rebuilds a run's student and data, so stored points can be checked again without training.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import Dataset
from ..monitor import Plateau, PlateauMonitor
from ..network import TwoLayerNet
from ..problems import teacher_student
from ..training import train
from .config import RunSpec

__all__ = ["MAX_HISTORY_POINTS", "Outcome", "build_problem", "execute", "run_one",
           "thin_history"]

#: Most points of the loss history a run record keeps.
MAX_HISTORY_POINTS = 2000


def build_problem(spec: RunSpec) -> tuple[TwoLayerNet, Dataset]:
    """The initial student and the data of the run of ``spec``.

    Args:
        spec: the run.

    Returns:
        The student (with unit output weights for a committee run) and the dataset.
    """
    prob = teacher_student(
        teacher_width=spec.teacher_width,
        width=spec.width,
        d=spec.d,
        n=spec.n,
        activation=spec.activation,
        seed=spec.seed,
        noise=spec.noise,
        init_scale=spec.init_scale,
        orthonormal=spec.committee,
    )
    student = prob.student
    if spec.committee:  # Saad & Solla: output weights fixed at 1
        student = student.replace(a=torch.ones_like(student.a))
    return student, prob.data


def thin_history(history: Mapping[str, np.ndarray], keep: Iterable[int] = (),
                 max_points: int = MAX_HISTORY_POINTS) -> dict[str, np.ndarray]:
    """At most ``max_points`` points of a history, evenly spread over its steps.

    The first and last steps and the steps of ``keep`` (plateau starts, ends and
    snapshots) are always kept, unless they alone are more than ``max_points``.

    Args:
        history: ``"step"``, ``"loss"`` and ``"grad_norm"`` arrays of one length.
        keep: steps to keep (steps not in the history are ignored).
        max_points: the most points kept (≥ 2).

    Returns:
        ``"step"`` (int64), ``"loss"`` and ``"grad_norm"`` (float64) arrays, steps ascending.
    """
    step = np.asarray(history["step"], dtype=np.int64)
    n = step.size
    if n <= max_points:
        chosen = np.arange(n)
    else:
        wanted = np.unique(np.fromiter(keep, dtype=np.int64))
        at = np.searchsorted(step, wanted)
        inside = at < n
        at = at[inside][step[at[inside]] == wanted[inside]]
        required = np.union1d([0, n - 1], at)
        if required.size >= max_points:  # absurdly many plateaus: spread those instead
            chosen = required[_spread(required.size, max_points)]
        else:
            others = np.setdiff1d(np.arange(n), required)
            chosen = np.union1d(required,
                                others[_spread(others.size, max_points - required.size)])
    return {"step": step[chosen].copy(),
            "loss": np.asarray(history["loss"], dtype=np.float64)[chosen].copy(),
            "grad_norm": np.asarray(history["grad_norm"], dtype=np.float64)[chosen].copy()}


def _spread(size: int, count: int) -> np.ndarray:
    """``count`` distinct indices evenly spread over ``range(size)`` (``count`` ≤ ``size``)."""
    return np.linspace(0, size - 1, count).round().astype(np.int64)


def _flat(net: TwoLayerNet | None) -> np.ndarray | None:
    if net is None:
        return None
    return net.flatten().detach().to(device="cpu", dtype=torch.float64).numpy().copy()


def _plateau_record(p: Plateau) -> dict[str, Any]:
    """A plateau as plain values and float64 arrays (it crosses process boundaries)."""
    # the trained block's spectrum (frozen blocks), else the full-space refinement's
    spectrum = p.spectrum if p.spectrum is not None else (
        None if p.critical_point is None else p.critical_point.spectrum)
    has_values = spectrum is not None and spectrum.eigenvalues.size > 0
    inertia = None if spectrum is None else spectrum.inertia
    net = p.snapshot if p.snapshot is not None else p.refined
    layout = None if net is None else net.layout
    return {
        "start": int(p.start),
        "end": int(p.end),
        "duration": int(p.duration),
        "loss": float(p.loss),
        "width": int(p.width),
        "verdict": p.verdict.value,
        "kind": None if p.kind is None else p.kind.value,
        "snapshot_step": None if p.snapshot_step is None else int(p.snapshot_step),
        "distance": None if p.distance is None else float(p.distance),
        "grad_norm": None if p.grad_norm is None else float(p.grad_norm),
        "lambda_min": float(spectrum.min) if spectrum is not None and has_values else None,
        "n_negative": None if inertia is None else int(inertia.negative),
        "n_zero": None if inertia is None else int(inertia.zero),
        "n_positive": None if inertia is None else int(inertia.positive),
        "accepted": bool(p.accepted),
        "max_path_loss": None if p.max_path_loss is None else float(p.max_path_loss),
        "channel": None if p.channel is None else [int(k) for k in p.channel],
        "clusters": [[int(k) for k in g] for g in p.clusters],
        "null_neurons": [[int(k) for k in g] for g in p.null_neurons],
        "warnings": [str(w) for w in p.warnings],
        "frozen": [str(b) for b in p.frozen],
        "activation": None if net is None else net.activation.name,
        "layout": None if layout is None else [
            layout.width, layout.input_dim, layout.output_dim, int(layout.hidden_bias),
            int(layout.output_bias)],
        "snapshot": _flat(p.snapshot),
        "refined": _flat(p.refined),
        "batch_size": p.batch_size,
        "noise_lambda_min": p.lambda_min,
        "noise_along_escape": p.noise_along_escape,
    }


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Build the teacher–student problem of ``spec``, train with a plateau monitor, report.

    The monitor follows ``spec.plateau_rules()``, all of them.

    Args:
        spec: the run.

    Returns:
        A picklable record of plain values and numpy arrays: ``run_id``, ``spec`` (dict),
        ``final_loss``, ``steps``, ``r0`` (the first loss), ``rules`` (the
        :class:`~saddlemap.PlateauRules` as a dict), ``history`` (:func:`thin_history` of
        the monitor's history: at most :data:`MAX_HISTORY_POINTS` points, the first and
        last step and every plateau's start, end and snapshot step among them) and
        ``plateaus``: a list of dicts with start, end, duration, loss, width, verdict,
        kind, snapshot_step, distance, grad_norm, lambda_min, n_negative, n_zero,
        n_positive, accepted, max_path_loss, channel (a pair or None), clusters and
        null_neurons (lists of lists of neuron indices), warnings (note codes), frozen
        (block names), activation, layout ([width, d, outputs, hidden bias, output bias])
        and the float64 flat parameters ``snapshot`` and ``refined`` (or None); for a
        minibatch run also ``batch_size``, ``noise_lambda_min`` and ``noise_along_escape``
        (the :class:`~saddlemap.Plateau` noise measure at the snapshot; None otherwise, and
        not kept by the store).
    """
    student, data = build_problem(spec)
    rules = spec.plateau_rules()
    # the monitor's keywords are the PlateauRules fields: the rules recorded are those used
    monitor = PlateauMonitor(data, **rules.to_dict())
    result = train(
        student,
        data,
        optimizer=spec.optimizer,  # type: ignore[arg-type]
        lr=spec.lr,
        steps=spec.steps,
        callbacks=[monitor],
        seed=spec.seed,
        freeze=("a",) if spec.committee else (),
        batch_size=spec.batch_size,
        eval_every=spec.eval_every,
    )
    found = monitor.finish()
    history = monitor.history
    marks = [s for p in found for s in (p.start, p.end, p.snapshot_step) if s is not None]
    return {
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "final_loss": float(result.loss),
        "steps": int(result.steps),
        "r0": float(history["loss"][0]),
        "rules": rules.to_dict(),
        "history": thin_history(history, marks),
        "plateaus": [_plateau_record(p) for p in found],
    }


@dataclass(frozen=True)
class Outcome:
    """What an engine hands back for one run.

    Attributes:
        spec: the run.
        record: the :func:`run_one` record, or None if the run failed.
        seconds: wall-clock seconds of the run.
        error: a one-line error message if the run failed, else None.
    """

    spec: RunSpec
    record: dict[str, Any] | None
    seconds: float
    error: str | None = None


def execute(spec: RunSpec) -> Outcome:
    """Run ``spec`` with :func:`run_one`, timing it and catching any exception."""
    start = time.perf_counter()
    try:
        record = run_one(spec)
    except Exception as exc:
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return Outcome(spec, None, time.perf_counter() - start, last.splitlines()[0])
    return Outcome(spec, record, time.perf_counter() - start)
