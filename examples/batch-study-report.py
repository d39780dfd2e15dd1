"""The numbers of docs/stochastic.md from a database of examples/batch-study.toml.

    saddlemap study run examples/batch-study.toml --db batch.sqlite
    python examples/batch-study-report.py batch.sqlite docs/stochastic-results.json

Prints the summary tables (plateau counts per verdict with Wilson intervals, mean plateau
length) by committee, activation, m/r* and batch size; the paired comparison of each
minibatch run with its full-batch twin (same teacher, seed and step size); and, at every
plateau's stored snapshot (least ‖∇R‖), λ_min of the trained block of ∇²R with the
minibatch noise along its eigenvector, vᵀΣ_B v, recomputed from the stored parameters.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import defaultdict
from typing import Any

import torch

from saddlemap.noise import escape_noise
from saddlemap.study import RunSpec, StudyStore, build_problem, summarize
from saddlemap.study.summary import wilson_interval
from saddlemap.training import freeze_mask

BY = ("committee", "activation", "ratio", "batch_size")


def _group(spec: RunSpec) -> tuple[Any, ...]:
    return (spec.committee, spec.activation, spec.ratio, spec.batch_size)


def _twin(spec: RunSpec) -> tuple[Any, ...]:
    """What a run shares with its full-batch twin: every spec field but B and eval_every."""
    d = spec.to_dict()
    return tuple((k, json.dumps(d[k], sort_keys=True)) for k in sorted(d)
                 if k not in ("batch_size", "eval_every"))


def _noise(store: StudyStore, spec: RunSpec, run_id: str, index: int,
           frozen: list[str]) -> tuple[float, float] | None:
    """(λ_min, vᵀΣ₁v) at the stored snapshot: Σ₁ the one-sample gradient covariance."""
    snap = store.point(run_id, index, "snapshot")
    if snap is None:
        return None
    _, data = build_problem(spec)
    free = (freeze_mask(snap, frozen) != 0).nonzero().flatten() if frozen else None
    # B = 1 gives (1/n) Σ (s_i − s̄)²; any B follows by the factor (n − B)/(B (n − 1))
    found = escape_noise(snap, data, batch_size=1, free=free)
    return None if found is None else (found.lambda_min, found.noise)


def _factor(n: int, batch: int | None) -> float:
    return 0.0 if batch is None or batch >= n else (n - batch) / (batch * (n - 1))


def main(db: str, out: str) -> None:
    torch.set_num_threads(1)
    summary = summarize(db, by=BY)
    print(summary.to_markdown(), "\n")
    with StudyStore(db, create=False) as store:
        runs = {r["run_id"]: r for r in store.runs() if r["status"] == "ok"}
        specs = {k: RunSpec.from_dict(r["spec"]) for k, r in runs.items()}
        plateaus = defaultdict(list)
        for p in store.plateaus():
            plateaus[p["run_id"]].append(p)
        per_group: dict[tuple[Any, ...], dict[str, list[float]]] = defaultdict(
            lambda: defaultdict(list))
        for run_id, spec in specs.items():
            g = per_group[_group(spec)]
            g["plateau_steps"].append(sum(p["duration"] for p in plateaus[run_id]))
            g["has_plateau"].append(float(bool(plateaus[run_id])))
            for p in plateaus[run_id]:
                g["open_at_end"].append(float(p["end"] >= runs[run_id]["steps"]))
                found = _noise(store, spec, run_id, p["index"], p["frozen"] or [])
                if found is None:
                    continue
                lam, var1 = found
                g["abs_lambda_min"].append(abs(lam))
                batch = spec.batch_size or 16  # full batch: what B = 16 would add there
                var = _factor(spec.n, batch) * var1
                g["noise"].append(var)
                g["noise_length"].append(math.sqrt(var) / abs(lam) if lam else math.inf)
    rows = []
    for key in sorted(per_group, key=lambda k: tuple(str(v) for v in k)):
        g = per_group[key]
        row: dict[str, Any] = dict(zip(BY, key, strict=True))
        row["runs"] = len(g["plateau_steps"])
        row["runs_with_plateau"] = int(sum(g["has_plateau"]))
        row["runs_with_plateau_ci95"] = list(wilson_interval(row["runs_with_plateau"],
                                                             row["runs"]))
        row["mean_plateau_steps_per_run"] = statistics.fmean(g["plateau_steps"])
        row["open_at_end"] = sum(g["open_at_end"])
        for name in ("abs_lambda_min", "noise", "noise_length"):
            row[f"median_{name}"] = statistics.median(g[name]) if g[name] else None
        lr = next(s.lr for s in specs.values() if _group(s) == key)
        lam = row["median_abs_lambda_min"]
        # e-folding time of the unstable mode under gd with step η: 1 / (η |λ_min|)
        row["efold_steps"] = None if not lam or lr is None else 1 / (lr * lam)
        rows.append(row)
    pairs = _pairs(specs, plateaus)
    _print(rows, pairs)
    with open(out, "w") as fh:
        json.dump({"summary": summary.to_dict(), "plateau_noise": rows, "paired": pairs}, fh,
                  indent=1, allow_nan=False, default=str)


def _pairs(specs: dict[str, RunSpec],
           plateaus: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per group: minibatch run minus its full-batch twin, in plateau steps per run."""
    diffs: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    full = {_twin(s): k for k, s in specs.items() if s.batch_size is None}
    for run_id, spec in specs.items():
        twin = full.get(_twin(spec))
        if spec.batch_size is None or twin is None:
            continue
        mine = sum(p["duration"] for p in plateaus[run_id])
        theirs = sum(p["duration"] for p in plateaus[twin])
        diffs[_group(spec)].append(mine - theirs)
    out = []
    for key in sorted(diffs, key=lambda k: tuple(str(v) for v in k)):
        d = diffs[key]
        mean = statistics.fmean(d)
        se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan
        shorter = sum(x < 0 for x in d)
        low, high = wilson_interval(shorter, len(d))
        out.append({**dict(zip(BY, key, strict=True)), "pairs": len(d), "mean_diff": mean,
                    "ci95": [mean - 1.96 * se, mean + 1.96 * se], "shorter": shorter,
                    "longer": sum(x > 0 for x in d), "shorter_ci95": [low, high]})
    return out


def _print(rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> None:
    print("| committee | activation | m/r* | B | runs | with a plateau (95 % CI) "
          "| plateau steps/run | open at end "
          "| median abs(λ_min) | 1/(η · median) | median vᵀΣ_B v "
          "| median √(vᵀΣ_B v)/abs(λ_min) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        def f(x: Any, spec: str = ".3g") -> str:
            return "–" if x is None else format(x, spec)
        print(f"| {r['committee']} | {r['activation']} | {r['ratio']:g} | "
              f"{r['batch_size'] or 'full'} | {r['runs']} | {r['runs_with_plateau']} "
              f"({r['runs_with_plateau_ci95'][0]:.2f}–{r['runs_with_plateau_ci95'][1]:.2f}) | "
              f"{r['mean_plateau_steps_per_run']:.1f} | {r['open_at_end']:.0f} | "
              f"{f(r['median_abs_lambda_min'])} | {f(r['efold_steps'], '.0f')} | "
              f"{f(r['median_noise'])} | {f(r['median_noise_length'])} |")
    print("\n| committee | activation | m/r* | B | pairs | mean Δ plateau steps (95 % CI) "
          "| shorter | longer |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for p in pairs:
        lo, hi = p["ci95"]
        print(f"| {p['committee']} | {p['activation']} | {p['ratio']:g} | {p['batch_size']} | "
              f"{p['pairs']} | {p['mean_diff']:+.1f} ({lo:+.1f} to {hi:+.1f}) | "
              f"{p['shorter']} | {p['longer']} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
