"""Summaries and exports of a study database.

:func:`summarize` groups the finished runs by activation and overparameterisation ratio
m/r*; :func:`export_csv` and :func:`export_parquet` write the ``runs`` and ``plateaus``
tables (spec fields as columns); :func:`plot_summary` draws a bar chart.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..verdicts import PlateauVerdict
from .config import RunSpec
from .store import PLATEAU_COLUMNS, RUN_COLUMNS, StudyStore

__all__ = [
    "NARROWER_VERDICT",
    "RUN_EXPORT_COLUMNS",
    "Summary",
    "SummaryRow",
    "export_csv",
    "export_parquet",
    "plot_summary",
    "summarize",
]

#: The stored verdict of a plateau at a saddle embedded from a narrower network.
NARROWER_VERDICT = PlateauVerdict.NARROWER_SADDLE.value
_SPEC_FIELDS = tuple(RunSpec.__dataclass_fields__)


def _is_narrower(verdict: str) -> bool:
    return verdict.strip().lower() == NARROWER_VERDICT


@dataclass(frozen=True)
class SummaryRow:
    """One group of finished runs: an activation and a ratio m/r*.

    Attributes:
        activation: the activation.
        ratio: m / r*.
        runs: number of finished runs.
        frac_narrower: fraction of runs with at least one plateau judged a saddle of a
            narrower network.
        mean_plateau_duration: mean duration (steps) over all plateaus of the group; NaN if
            none.
        mean_final_loss: mean final training loss.
    """

    activation: str
    ratio: float
    runs: int
    frac_narrower: float
    mean_plateau_duration: float
    mean_final_loss: float


@dataclass(frozen=True)
class Summary:
    """The table of :func:`summarize`, rows sorted by activation then ratio.

    Attributes:
        rows: the groups.
        failed: number of runs stored as failed (not in the rows).
    """

    rows: tuple[SummaryRow, ...]
    failed: int = 0

    def to_markdown(self) -> str:
        """The table as GitHub Markdown."""
        lines = [
            "| activation | m/r* | runs | frac. narrower saddle | mean plateau duration "
            "| mean final loss |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            dur = "–" if math.isnan(r.mean_plateau_duration) else f"{r.mean_plateau_duration:.1f}"
            lines.append(
                f"| {r.activation} | {r.ratio:g} | {r.runs} | {r.frac_narrower:.2f} | {dur} "
                f"| {r.mean_final_loss:.3e} |"
            )
        if self.failed:
            lines.append(f"\n{self.failed} failed run(s) not included.")
        return "\n".join(lines)


def summarize(db_path: str | Path) -> Summary:
    """Group the finished runs of the database by activation and m/r*.

    Args:
        db_path: the study database (it must exist; it is checked like any store).

    Returns:
        The :class:`Summary`.

    Raises:
        StoreError: a missing file, or one that fails the store's checks.
    """
    with StudyStore(db_path, create=False) as store:
        runs = store.runs()
        plateaus = store.plateaus()
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in plateaus:
        by_run[p["run_id"]].append(p)
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    failed = 0
    for run in runs:
        if run["status"] != "ok":
            failed += 1
            continue
        spec = run["spec"]
        groups[(spec["activation"], spec["width"] / spec["teacher_width"])].append(run)
    rows = []
    for (activation, ratio), members in sorted(groups.items()):
        durations = [p["duration"] for m in members for p in by_run[m["run_id"]]]
        narrower = sum(any(_is_narrower(p["verdict"]) for p in by_run[m["run_id"]])
                       for m in members)
        rows.append(SummaryRow(
            activation=activation,
            ratio=ratio,
            runs=len(members),
            frac_narrower=narrower / len(members),
            mean_plateau_duration=sum(durations) / len(durations) if durations else math.nan,
            mean_final_loss=sum(m["final_loss"] for m in members) / len(members),
        ))
    return Summary(tuple(rows), failed)


#: The columns of the exported runs table: the ``runs`` columns, then the spec fields; a spec
#: field named like a ``runs`` column gets the prefix ``spec_`` (``spec_steps``, the steps
#: asked for, beside ``steps``, the steps made).
RUN_EXPORT_COLUMNS = (
    *(c for c in RUN_COLUMNS if c != "spec"),
    *(f"spec_{f}" if f in RUN_COLUMNS else f for f in _SPEC_FIELDS),
)


def _flat_run(run: dict[str, Any]) -> dict[str, Any]:
    """A run row with its spec fields as columns, named as in :data:`RUN_EXPORT_COLUMNS`."""
    row = {k: v for k, v in run.items() if k != "spec"}
    for field in _SPEC_FIELDS:
        row[f"spec_{field}" if field in RUN_COLUMNS else field] = run["spec"].get(field)
    return row


def _tables(db_path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with StudyStore(db_path, create=False) as store:
        runs = store.runs()
        plateaus = store.plateaus()
    return [_flat_run(run) for run in runs], plateaus


def export_csv(db_path: str | Path, path: str | Path) -> tuple[Path, Path]:
    """Write ``runs.csv`` (spec fields as columns) and ``plateaus.csv`` into a folder.

    The column names of each file are unique: see :data:`RUN_EXPORT_COLUMNS`.

    Args:
        db_path: the study database.
        path: the output folder (created if missing).

    Returns:
        The paths of the runs and plateaus files.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    runs, plateaus = _tables(db_path)
    run_columns = list(RUN_EXPORT_COLUMNS)
    written = []
    for name, columns, rows in (("runs.csv", run_columns, runs),
                                ("plateaus.csv", list(PLATEAU_COLUMNS), plateaus)):
        target = out / name
        with target.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        written.append(target)
    return written[0], written[1]


def export_parquet(db_path: str | Path, path: str | Path) -> tuple[Path, Path]:
    """Write ``runs.parquet`` and ``plateaus.parquet`` into a folder (needs pandas, pyarrow).

    Args:
        db_path: the study database.
        path: the output folder (created if missing).

    Returns:
        The paths of the runs and plateaus files.

    Raises:
        ImportError: pandas or pyarrow is not installed.
    """
    try:
        import pandas as pd
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError("Parquet export needs pandas and pyarrow: pip install pandas pyarrow") \
            from None
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    runs, plateaus = _tables(db_path)
    targets = (out / "runs.parquet", out / "plateaus.parquet")
    pd.DataFrame(runs, columns=list(RUN_EXPORT_COLUMNS)).to_parquet(targets[0], index=False)
    pd.DataFrame(plateaus, columns=list(PLATEAU_COLUMNS)).to_parquet(targets[1], index=False)
    return targets


def plot_summary(summary: Summary, ax: Any = None) -> Any:
    """Bar chart of the fraction of runs with a narrower-network saddle, per m/r*.

    One group of bars per ratio m/r*, one bar per activation.

    Args:
        summary: a :func:`summarize` result.
        ax: a matplotlib Axes (default: a new figure's).

    Returns:
        The Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    ratios = sorted({r.ratio for r in summary.rows})
    activations = sorted({r.activation for r in summary.rows})
    width = 0.8 / max(len(activations), 1)
    for k, act in enumerate(activations):
        vals = {r.ratio: r.frac_narrower for r in summary.rows if r.activation == act}
        xs = [i + (k - (len(activations) - 1) / 2) * width for i in range(len(ratios))]
        ax.bar(xs, [vals.get(q, 0.0) for q in ratios], width=width, label=act)
    ax.set_xticks(range(len(ratios)))
    ax.set_xticklabels([f"{q:g}" for q in ratios])
    ax.set_xlabel("m / r*")
    ax.set_ylabel("fraction of runs with a narrower-network saddle")
    ax.set_ylim(0, 1)
    if activations:
        ax.legend()
    return ax
