"""Re-open one run of a study database: its text, its annotated loss curve, its points.

:func:`load_run` reads a run (by id or a unique id prefix) with its plateaus and history;
:func:`format_run` renders it as text (the spec, status, R0, rules and two tables of its
plateaus) and :func:`plot_run` draws its loss curve with the plateaus shaded by verdict.
:func:`export_points` writes the stored points of every plateau into one ``.npz`` file.

**The .npz layout** (every array loads with ``np.load(path, allow_pickle=False)``).  With N
the number of plateaus that have stored points, row k (0 ≤ k < N) of the arrays below is one
plateau, in the order of run id and plateau index:

* ``run_id``, ``verdict``, ``activation``: (N,) unicode arrays;
* ``index`` (N,) int64: the plateau's index in its run; ``snapshot_step`` (N,) int64
  (−1 where unknown); ``loss`` (N,) float64: the plateau loss;
* ``layout`` (N, 5) int64: width, input dimension, outputs, hidden bias (0/1), output bias
  (0/1), which with the activation rebuild the network:
  ``TwoLayerNet.from_flat(torch.from_numpy(theta), ParamLayout(*layout[k]), activation[k])``;
* ``snapshot_k`` and ``refined_k`` (P,) float64: the flat parameters of plateau k at the
  mid-plateau snapshot and at the refined point (a key is absent where that point was not
  stored, e.g. a plateau that was not refined), ``k`` written without padding;
* ``meta``: a 0-d unicode array of JSON: ``format``, ``version`` (1),
  ``saddlemap_version``, ``database`` and ``plateaus``, a list of one object per row with the
  same fields and the keys of its points.

>>> from saddlemap.study.inspect import _cell
>>> _cell(None), _cell(0.000123456), _cell([[0, 1], [2]])
('–', '0.0001235', '{0,1} {2}')
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import OptionError
from ..verdicts import PlateauVerdict
from .store import POINT_KINDS, StudyStore
from .summary import VERDICT_COLOURS

__all__ = ["NPZ_FORMAT", "RunView", "export_points", "format_run", "load_run", "plot_run"]

#: The ``format`` of the ``meta`` record of :func:`export_points` files.
NPZ_FORMAT = "saddlemap study points"
_OTHER_COLOUR = "#444444"
_VERDICTS = {v.value: v for v in PlateauVerdict}


@dataclass(frozen=True)
class RunView:
    """One stored run, as read by :func:`load_run`.

    Attributes:
        run: the run row (``spec`` parsed) with ``r0`` and ``rules`` (None when the run was
            stored before schema version 3 or failed).
        plateaus: its plateau rows (see :meth:`StudyStore.plateaus`).
        history: its thinned loss history (see :meth:`StudyStore.history`), or None.
    """

    run: dict[str, Any]
    plateaus: list[dict[str, Any]]
    history: dict[str, Any] | None

    @property
    def run_id(self) -> str:
        """The full run id."""
        return str(self.run["run_id"])


def load_run(db_path: str | Path, run_id: str) -> RunView:
    """Read one run of a study database.

    Args:
        db_path: the study database (not created if missing).
        run_id: the run id, or a prefix of exactly one run's id.

    Returns:
        The :class:`RunView`.

    Raises:
        StoreError: a missing or damaged database, no run or several runs matching.
    """
    with StudyStore(db_path, create=False) as store:
        run = store.run(run_id)
        return RunView(run, store.plateaus(run["run_id"]), store.history(run["run_id"]))


# ---------------------------------------------------------------------------- text


def _cell(value: Any) -> str:
    """A table cell: – for nothing, 4 significant digits, groups as {i,j}."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        if not value:
            return "none"
        if all(isinstance(v, list | tuple) for v in value):
            return " ".join("{" + ",".join(str(k) for k in g) + "}" for g in value)
        return ",".join(str(v) for v in value)
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(headers), line(["---"] * len(headers)),
            *(line([_cell(v) for v in row]) for row in rows)]


def _inertia(p: Mapping[str, Any]) -> str:
    counts = (p.get("n_negative"), p.get("n_zero"), p.get("n_positive"))
    return "–" if None in counts else f"{counts[0]}, {counts[1]}, {counts[2]}"


def _pairs(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_cell(v)}" for k, v in values.items())


def format_run(view: RunView) -> str:
    """A run as text: its spec, status, final loss, steps, R0, rules and plateaus.

    The plateaus are two Markdown tables keyed by their index ``#``: when and where (start,
    end, duration, snapshot step, loss, effective width, verdict, kind) and the evidence of
    the refinement (accepted, relative distance moved, ‖∇R‖, λ_min, the inertia as counts of
    negative, zero and positive eigenvalues, the largest loss on the path, the channel pair,
    the clusters and null neurons of the refined point's reduction, frozen blocks, warnings).

    Args:
        view: the run, from :func:`load_run`.

    Returns:
        The text, lines joined by newlines (no trailing newline).
    """
    run = view.run
    seconds = run.get("seconds")
    lines = [
        f"run {view.run_id}: status {run['status']}, final loss {_cell(run['final_loss'])}, "
        f"steps {_cell(run['steps'])}, seconds {_cell(seconds)}",
        f"spec: {_pairs(run['spec'])}",
        f"R0 (first loss): {_cell(run.get('r0'))}",
        f"rules: {_pairs(run['rules']) if run.get('rules') else '– (not stored)'}",
    ]
    if run.get("error"):
        lines.append(f"error: {run['error']}")
    if view.history is not None:
        lines.append(f"history: {len(view.history['step'])} stored points")
    lines.append(f"plateaus: {len(view.plateaus)}")
    if view.plateaus:
        lines += ["", *_table(
            ["#", "start", "end", "duration", "snapshot step", "loss", "width", "verdict",
             "kind"],
            [[p["index"], p["start"], p["end"], p["duration"], p.get("snapshot_step"),
              p["loss"], p["width"], p["verdict"], p["kind"]] for p in view.plateaus],
        ), "", *_table(
            ["#", "accepted", "distance", "‖∇R‖", "λ_min", "inertia (−, 0, +)",
             "max path loss", "channel", "clusters", "null neurons", "frozen", "warnings"],
            [[p["index"], p.get("accepted"), p.get("distance"), p.get("grad_norm"),
              p.get("lambda_min"), _inertia(p), p.get("max_path_loss"), p.get("channel"),
              p.get("clusters"), p.get("null_neurons"), p.get("frozen"), p.get("warnings")]
             for p in view.plateaus],
        )]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- plot


def _colour(verdict: str) -> str:
    found = _VERDICTS.get(verdict)
    return VERDICT_COLOURS[found] if found is not None else _OTHER_COLOUR


def plot_run(view: RunView, ax: Any = None) -> Any:
    """The run's loss curve (log scale) with its plateaus shaded by verdict.

    Each plateau is shaded from its start to its end in the colour of its verdict
    (:data:`~saddlemap.study.VERDICT_COLOURS`; dark grey for a verdict this saddlemap does
    not know), its snapshot step marked by a dotted line and a dot at the plateau loss; the
    legend names the verdicts found.  A run without a stored history (stored before schema
    version 3) shows the plateaus only, and says so.

    Args:
        view: the run, from :func:`load_run`.
        ax: a matplotlib Axes (default: a new figure's).

    Returns:
        The Axes.

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a test dependency
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from exc
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.5))
    h = view.history
    if h is not None and len(h["step"]):
        loss = np.where(h["loss"] > 0, h["loss"], np.nan)  # a log axis shows no R = 0
        ax.plot(h["step"], loss, color="black", lw=1.2, label="loss R")
    else:
        ax.text(0.5, 0.5, "no stored loss history", transform=ax.transAxes, ha="center",
                va="center", color="0.3")
    ax.set_yscale("log")
    named: set[str] = set()
    snapped = False
    for p in view.plateaus:
        verdict = str(p["verdict"])
        ax.axvspan(p["start"], p["end"], color=_colour(verdict), alpha=0.3, lw=0,
                   label=None if verdict in named else verdict)
        named.add(verdict)
        step = p.get("snapshot_step")
        if step is not None:
            ax.axvline(step, color=_colour(verdict), ls=":", lw=1.2)
            if p["loss"] > 0:
                ax.plot([step], [p["loss"]], "o", color=_colour(verdict), mec="black",
                        ms=6, label=None if snapped else "snapshot")
                snapped = True
    ax.set_xlabel("step")
    ax.set_ylabel("loss R (log scale)")
    spec = view.run["spec"]
    ax.set_title(f"run {view.run_id}: {spec.get('activation')}, r* = "
                 f"{spec.get('teacher_width')}, m = {spec.get('width')}, seed "
                 f"{spec.get('seed')}", fontsize="medium")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize="small", loc="best")
    return ax


# ---------------------------------------------------------------------------- export


def export_points(db_path: str | Path, path: str | Path, *,
                  force: bool = False) -> tuple[int, int]:
    """Write the stored points of every plateau into one ``.npz`` file.

    The key layout is in the module docstring.  The file is written beside its target and
    moved into place, so a failed export leaves no partial file.

    Args:
        db_path: the study database (not created if missing).
        path: the file to write (written as given: no suffix is added).
        force: overwrite an existing file.

    Returns:
        The number of plateaus written and the number of points (arrays) among them.

    Raises:
        OptionError: ``path`` exists and ``force`` is False, or is a folder.
        StoreError: a missing or damaged database.
    """
    target = Path(path)
    if target.is_dir():
        raise OptionError(f"{target} is a folder, not a file to write")
    if target.exists() and not force:
        raise OptionError(f"{target} exists; pass --force (force=True) to overwrite it")
    arrays: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    with StudyStore(db_path, create=False) as store:
        for p in store.plateaus():
            nets = {w: store.point(p["run_id"], p["index"], w) for w in POINT_KINDS}
            stored = {w: net for w, net in nets.items() if net is not None}
            if not stored:
                continue  # stored before schema version 3: no points
            k = len(rows)
            net = next(iter(stored.values()))
            lay = net.layout
            for which, point in stored.items():
                arrays[f"{which}_{k}"] = point.flatten().numpy().astype(np.float64)
            rows.append({
                "run_id": p["run_id"], "index": p["index"], "verdict": p["verdict"],
                "kind": p["kind"], "loss": p["loss"], "snapshot_step": p.get("snapshot_step"),
                "activation": net.activation.name,
                "layout": [lay.width, lay.input_dim, lay.output_dim, int(lay.hidden_bias),
                           int(lay.output_bias)],
                "points": {which: f"{which}_{k}" for which in stored},
            })
    meta = {"format": NPZ_FORMAT, "version": 1, "saddlemap_version": __version__,
            "database": str(db_path), "plateaus": rows}
    arrays.update({
        "meta": np.array(json.dumps(meta)),
        "run_id": np.array([r["run_id"] for r in rows], dtype=str),
        "index": np.array([r["index"] for r in rows], dtype=np.int64),
        "verdict": np.array([r["verdict"] for r in rows], dtype=str),
        "activation": np.array([r["activation"] for r in rows], dtype=str),
        "snapshot_step": np.array([-1 if r["snapshot_step"] is None else r["snapshot_step"]
                                   for r in rows], dtype=np.int64),
        "loss": np.array([r["loss"] for r in rows], dtype=np.float64),
        "layout": np.array([r["layout"] for r in rows], dtype=np.int64).reshape(-1, 5),
    })
    _write_npz(target, arrays)
    return len(rows), sum(len(r["points"]) for r in rows)


def _write_npz(target: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` into a new file beside ``target``, then moved onto it."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    named: dict[str, Any] = dict(arrays)  # Any: savez's own keywords would not type-check
    try:
        with tmp.open("xb") as fh:  # a new file, with the permissions any new file gets
            np.savez(fh, **named)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
