"""Tables and figures of the PoC study (docs/poc-study.md) from its database.

Writes into ``--out`` (default ``docs/poc``):

* ``tables.md``: plateau counts per verdict with 95 % Wilson intervals, by
  activation × m/r* × init × optimiser, and the marginal tables the document quotes;
* ``summary.json``: the same numbers as data;
* ``loss-curves.png``: a grid of loss curves (rows: activation, columns: m/r*), R/R0 on a log
  axis, each run's plateaus drawn over its curve in the colour of the verdict;
* ``verdicts.png``: plateaus per verdict by activation and optimiser (stacked bars).

Usage::

    python examples/poc/figures.py poc.sqlite --out docs/poc
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from saddlemap import PlateauVerdict
from saddlemap.study import VERDICT_COLOURS, StudyStore, plot_summary, summarize
from saddlemap.verdicts import NoteCode

COLOURS = {v.value: c for v, c in VERDICT_COLOURS.items()}
#: R/R0 below this is the rounding floor of the study's rules: the axis stops there.
FLOOR = 1e-11

#: The groupings of tables.md: the full cross table first, then its margins.
GROUPINGS = {
    "by activation × m/r* × init × optimiser": "activation,ratio,init,optimizer",
    "by activation and optimiser": "activation,optimizer",
    "by m/r*": "ratio",
    "by initial scale": "init",
    "by optimiser": "optimizer",
    "the committee arm (erf, orthonormal teacher, output weights fixed)":
        "committee,teacher_width,width,optimizer",
    "all runs": "",
}
RATIOS = ("1", "(r+1)/r", "2", "4")
#: Note codes of a refinement that stopped short of a critical point.
UNCONVERGED = {NoteCode.LINEAR_CONVERGENCE.value, NoteCode.REFINEMENT_STOPPED.value}


def _ratio_column(spec: dict[str, Any]) -> int:
    """The column of a run in the curve grid: m = r*, r* + 1, 2r*, 4r*."""
    m, r = spec["width"], spec["teacher_width"]
    if m == r:
        return 0
    if m == 2 * r:
        return 2
    if m == 4 * r:
        return 3
    return 1


def _curves(db: Path, out: Path, optimizer: str, init_scale: float) -> Path:
    """The grid of loss curves of one optimiser and initial scale (the main arm)."""
    activations = ("tanh", "erf", "sigmoid", "softplus")
    fig, axes = plt.subplots(len(activations), len(RATIOS), figsize=(13, 10), sharex=True,
                             sharey=True, squeeze=False)
    named: set[str] = set()
    with StudyStore(db, create=False) as store:
        plateaus: dict[str, list[dict[str, Any]]] = {}
        for p in store.plateaus():
            plateaus.setdefault(p["run_id"], []).append(p)
        for run in store.runs():
            spec = run["spec"]
            if (spec.get("committee") or spec["optimizer"] != optimizer
                    or spec["init_scale"] != init_scale or run.get("status") == "failed"):
                continue
            h = store.history(run["run_id"])
            if h is None:
                continue
            ax = axes[activations.index(spec["activation"]), _ratio_column(spec)]
            rel = np.where(h["loss"] > 0, h["loss"] / h["r0"], np.nan)
            ax.plot(h["step"], np.maximum(rel, FLOOR), color="0.7", lw=0.6)
            for p in plateaus.get(run["run_id"], []):
                on = (h["step"] >= p["start"]) & (h["step"] <= p["end"])
                verdict = str(p["verdict"])
                ax.plot(h["step"][on], rel[on], color=COLOURS.get(verdict, "0.2"),
                        lw=2.2, label=None if verdict in named else verdict)
                named.add(verdict)
    for i, act in enumerate(activations):
        axes[i, 0].set_ylabel(f"{act}\nR / R0")
        for j, ratio in enumerate(RATIOS):
            ax = axes[i, j]
            ax.set_yscale("log")
            ax.set_ylim(FLOOR / 3, 3)
            ax.grid(alpha=0.25, lw=0.5)
            if i == 0:
                ax.set_title(f"m / r* = {ratio}")
            if i == len(activations) - 1:
                ax.set_xlabel("step")
    order = [v.value for v in PlateauVerdict]
    handles, labels = axes[0, 0].figure.axes[0].get_legend_handles_labels()
    for ax in axes.flat[1:]:
        more = ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    pairs = sorted(zip(labels, handles, strict=True), key=lambda lh: order.index(lh[0])
                   if lh[0] in order else len(order))
    fig.legend([h for _, h in pairs], [lab for lab, _ in pairs], loc="lower center", ncol=4,
               frameon=False, title="plateau verdict (grey: the rest of each run)")
    fig.suptitle(f"Loss curves of the main arm, {optimizer}, init scale {init_scale:g} "
                 "(r* = 1, 2, 3 and 10 seeds per panel; plateaus in the verdict's colour)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    path = out / f"loss-curves-{optimizer}-{init_scale:g}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _details(db: Path) -> list[str]:
    """Per verdict: where the plateaus sit and how far their refinement went."""
    rows: dict[str, list[dict[str, Any]]] = {}
    with StudyStore(db, create=False) as store:
        runs = {r["run_id"]: r for r in store.runs()}
        r0 = {rid: (store.history(rid) or {}).get("r0") for rid in runs}
        for p in store.plateaus():
            rows.setdefault(str(p["verdict"]), []).append(p)
    lines = ["| verdict | plateaus | R/R0 at the plateau (median, IQR) | distance to the "
             "refined point / ‖θ‖ (median, IQR) | refinement converged | stuck until "
             "training ended | λ_min < 0 at the refined point |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: |"]

    def q(values: list[float]) -> str:
        if not values:
            return "–"
        a = np.percentile(values, [50, 25, 75])
        return f"{a[0]:.2g} ({a[1]:.2g}–{a[2]:.2g})"

    for verdict, ps in sorted(rows.items(), key=lambda kv: -len(kv[1])):
        rel = [p["loss"] / r0[p["run_id"]] for p in ps if r0.get(p["run_id"])]
        dist = [p["distance"] for p in ps if p["distance"] is not None]
        converged = sum(1 for p in ps if p["grad_norm"] is not None
                        and not UNCONVERGED & set(p["warnings"] or []))
        stuck = sum(1 for p in ps if p["end"] >= runs[p["run_id"]]["spec"]["steps"] - 1)
        negative = sum(1 for p in ps if p["lambda_min"] is not None and p["lambda_min"] < 0)
        lines.append(f"| {verdict} | {len(ps)} | {q(rel)} | {q(dist)} | {converged} | {stuck} "
                     f"| {negative} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Write the tables and figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/poc"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines, data = [], {}
    for title, by in GROUPINGS.items():
        summary = summarize(args.db, by=by)
        table = summary.to_markdown().splitlines()
        if by.startswith("committee"):  # the arm's rows only
            table = [t for t in table if not t.startswith("| False |")]
        lines += [f"### Plateaus {title}", "", *table, ""]
        data[by or "all"] = summary.to_dict()
    lines += ["### Where the plateaus sit, per verdict", "", *_details(args.db), ""]
    (args.out / "tables.md").write_text("\n".join(lines))
    (args.out / "summary.json").write_text(json.dumps(data) + "\n")
    summary = summarize(args.db, by="activation,optimizer")
    ax = plot_summary(summary)
    ax.figure.savefig(args.out / "verdicts.png", dpi=100, bbox_inches="tight")
    plt.close(ax.figure)
    for optimizer in ("gd", "adam"):
        print(_curves(args.db, args.out, optimizer, 1e-2))
    print(f"tables and figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
