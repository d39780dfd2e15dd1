"""Summaries and exports of a study database.

:func:`summarize` groups the finished runs by the keys asked for (activation and the
overparameterisation ratio m/r* by default) and counts the plateaus of each group per
:class:`~saddlemap.PlateauVerdict`, each count with its fraction of the group's plateaus and
a 95 % Wilson score interval (:func:`wilson_interval`); :func:`export_csv` and
:func:`export_parquet` write the ``runs`` and ``plateaus`` tables (spec fields as columns);
:func:`plot_summary` draws the counts as stacked bars, one colour per verdict
(:data:`VERDICT_COLOURS`).

>>> low, high = wilson_interval(7, 30)
>>> f"{7 / 30:.2f} ({low:.2f}–{high:.2f})"
'0.23 (0.12–0.41)'
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OptionError
from ..verdicts import PlateauVerdict
from .config import RunSpec
from .store import PLATEAU_ALL_COLUMNS, RUN_COLUMNS, StudyStore

__all__ = [
    "KEY_ALIASES",
    "NARROWER_VERDICT",
    "RUN_EXPORT_COLUMNS",
    "SUMMARY_KEYS",
    "VERDICT_COLOURS",
    "Summary",
    "SummaryRow",
    "VerdictCount",
    "export_csv",
    "export_parquet",
    "plot_summary",
    "summarize",
    "wilson_interval",
]

#: The stored verdict of a plateau at a saddle embedded from a narrower network.
NARROWER_VERDICT = PlateauVerdict.NARROWER_SADDLE.value
_SPEC_FIELDS = tuple(RunSpec.__dataclass_fields__)

#: The keys :func:`summarize` groups by: every :class:`RunSpec` field, and ``ratio`` (m/r*).
SUMMARY_KEYS: tuple[str, ...] = (*_SPEC_FIELDS, "ratio")
#: Other names of summary keys.
KEY_ALIASES: dict[str, str] = {
    "init": "init_scale",
    "optimiser": "optimizer",
    "r": "teacher_width",
    "teacher": "teacher_width",
    "m": "width",
    "seeds": "seed",
}
#: A fixed colour per plateau verdict (the Okabe–Ito palette, safe for colour blindness).
VERDICT_COLOURS: dict[PlateauVerdict, str] = {
    PlateauVerdict.NARROWER_SADDLE: "#D55E00",
    PlateauVerdict.SADDLE: "#E69F00",
    PlateauVerdict.LOCAL_MINIMUM: "#0072B2",
    PlateauVerdict.UNDETERMINED: "#CC79A7",
    PlateauVerdict.CHANNEL_TO_INFINITY: "#009E73",
    PlateauVerdict.NOT_NEAR_CRITICAL: "#56B4E9",
    PlateauVerdict.NOT_REFINED: "#999999",
}
_OTHER = "other"
_OTHER_COLOUR = "#444444"
_VERDICTS = {v.value: v for v in PlateauVerdict}
_HEADERS = {"ratio": "m/r*"}
_Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % with the default ``z``).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or
    ``trials`` successes.

    Args:
        successes: the number of successes, 0 ≤ successes ≤ trials.
        trials: the number of trials (0 gives the uninformative interval (0, 1)).
        z: the standard normal quantile of the confidence level.

    Returns:
        The lower and upper bounds.

    Raises:
        OptionError: counts that are not integers with 0 ≤ successes ≤ trials, or a ``z``
            that is not a positive finite number.

    >>> low, high = wilson_interval(5, 10)
    >>> round(low, 4), round(high, 4)
    (0.2366, 0.7634)
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    >>> wilson_interval(10, 10)[1]
    1.0
    """
    for name, value in (("successes", successes), ("trials", trials)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"wilson_interval: {name} must be an integer, got {value!r}")
    if not 0 <= successes <= trials:
        raise OptionError(
            f"wilson_interval: need 0 ≤ successes ≤ trials, got {successes} of {trials}"
        )
    if isinstance(z, bool) or not isinstance(z, int | float) or not 0 < z < math.inf:
        raise OptionError(f"wilson_interval: z must be a positive finite number, got {z!r}")
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    z2 = z * z / trials
    centre = (p + z2 / 2) / (1 + z2)
    half = z / (1 + z2) * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return (low, high)


def _resolve_keys(by: str | Iterable[str]) -> tuple[str, ...]:
    """The summary keys of ``by`` (a sequence, or one comma-separated string), aliases resolved.

    Duplicates (``("m", "width")``) are kept once, in the order first given.
    """
    names = by.split(",") if isinstance(by, str) else list(by)
    keys: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise OptionError(f"summary key: expected a name, got {name!r}")
        text = name.strip().lower()
        if not text and isinstance(by, str):
            continue  # "activation,ratio," or ""
        key = KEY_ALIASES.get(text, text)
        if key not in SUMMARY_KEYS:
            aliases = ", ".join(f"{a} → {k}" for a, k in KEY_ALIASES.items())
            raise OptionError(
                f"unknown summary key {name.strip()[:40]!r}; expected one of "
                f"{', '.join(SUMMARY_KEYS)} (aliases: {aliases})"
            )
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def _hashable(value: Any) -> Any:
    """A stored spec value as a group key (``rules``, a dict, as canonical JSON)."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _key_value(spec: Mapping[str, Any], key: str) -> Any:
    """The value of a summary key in a stored spec (a RunSpec default where it is missing)."""
    if key == "ratio":
        try:
            return spec["width"] / spec["teacher_width"]
        except (KeyError, TypeError, ZeroDivisionError):
            return None
    if key in spec:
        return _hashable(spec[key])
    default = RunSpec.__dataclass_fields__[key].default
    if default is dataclasses.MISSING:
        return None
    return _hashable({} if key == "rules" else default)


def _order(value: Any) -> tuple[Any, ...]:
    """A sort key for group values of mixed types: numbers, then text, then None."""
    if isinstance(value, bool | int | float):
        return (0, float(value), "")
    if isinstance(value, str):
        return (1, 0.0, value)
    if value is None:
        return (3, 0.0, "")
    return (2, 0.0, repr(value))


def _format_value(key: str, value: Any) -> str:
    """A group value for tables and tick labels."""
    if value is None:
        return {"lr": "auto", "batch_size": "full"}.get(key, "–")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _nan_free(value: Any) -> Any:
    """``value`` with NaN (and infinities) as None, lists for tuples: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_free(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_free(v) for v in value]
    return value


@dataclass(frozen=True)
class VerdictCount:
    """The plateaus of one group with one verdict.

    Attributes:
        count: the number of plateaus.
        fraction: ``count`` over the group's plateaus; NaN when the group has none.
        low: lower bound of the 95 % Wilson interval of the fraction.
        high: upper bound of the interval ((0, 1) when the group has no plateaus).
    """

    count: int
    fraction: float
    low: float
    high: float

    @classmethod
    def of(cls, count: int, total: int) -> VerdictCount:
        """``count`` of ``total`` plateaus, with fraction and Wilson interval.

        >>> VerdictCount.of(7, 30).cell()
        '7 (0.23, 0.12–0.41)'
        >>> VerdictCount.of(0, 0).cell()
        '0 (–)'
        """
        low, high = wilson_interval(count, total)
        return cls(count, count / total if total else math.nan, low, high)

    @property
    def interval(self) -> tuple[float, float]:
        """The Wilson interval ``(low, high)``."""
        return (self.low, self.high)

    def cell(self) -> str:
        """``count (fraction, low–high)``, the form of a table cell."""
        if math.isnan(self.fraction):
            return f"{self.count} (–)"
        return f"{self.count} ({self.fraction:.2f}, {self.low:.2f}–{self.high:.2f})"

    def to_dict(self) -> dict[str, Any]:
        """The count as a JSON-ready dict (a NaN fraction as None)."""
        return _nan_free({"count": self.count, "fraction": self.fraction,
                          "interval": [self.low, self.high]})


@dataclass(frozen=True)
class SummaryRow:
    """One group of finished runs: the runs sharing the values of the summary keys.

    Attributes:
        group: the (key, value) pairs of the group, in the order of :attr:`Summary.by`.
        runs: number of finished runs.
        plateaus: number of plateaus of these runs.
        verdicts: for every :class:`~saddlemap.PlateauVerdict` (in the enum's order), the
            plateaus with that verdict: count, fraction of :attr:`plateaus`, Wilson interval.
        other: the plateaus whose stored verdict is no :class:`~saddlemap.PlateauVerdict`
            value (written by another saddlemap version, or by hand).
        narrower_runs: number of runs with at least one plateau at a saddle of a narrower
            network.
        frac_narrower: ``narrower_runs / runs``.
        narrower_interval: the 95 % Wilson interval of :attr:`frac_narrower`.
        mean_plateau_length: mean plateau duration (steps); NaN if the group has none.
        median_plateau_length: median plateau duration (steps); NaN if the group has none.
        mean_final_loss: mean final training loss over the runs that stored one (SQLite
            stores a NaN loss as NULL); NaN if none did.
    """

    group: tuple[tuple[str, Any], ...]
    runs: int
    plateaus: int
    verdicts: dict[PlateauVerdict, VerdictCount]
    other: VerdictCount
    narrower_runs: int
    frac_narrower: float
    narrower_interval: tuple[float, float]
    mean_plateau_length: float
    median_plateau_length: float
    mean_final_loss: float

    @property
    def key(self) -> tuple[Any, ...]:
        """The group's values, in the order of :attr:`Summary.by`."""
        return tuple(value for _, value in self.group)

    @property
    def label(self) -> str:
        """The group's values as text, comma-separated (``"all runs"`` without keys)."""
        if not self.group:
            return "all runs"
        return ", ".join(_format_value(k, v) for k, v in self.group)

    def value(self, key: str) -> Any:
        """The group's value of a summary key (aliases allowed).

        Raises:
            OptionError: an unknown key.
            KeyError: a key the summary did not group by.
        """
        (name,) = _resolve_keys([key])
        for k, v in self.group:
            if k == name:
                return v
        raise KeyError(f"{name!r}: not a key of this summary")

    def count(self, verdict: PlateauVerdict | str) -> VerdictCount:
        """The plateaus of the group with one verdict (an enum member, its value, "other").

        Raises:
            KeyError: a string that is neither a verdict's value nor ``"other"``.
        """
        if isinstance(verdict, PlateauVerdict):
            return self.verdicts[verdict]
        if verdict == _OTHER:
            return self.other
        found = _verdict(verdict)
        if found is None:
            raise KeyError(f"{verdict!r}: not a plateau verdict")
        return self.verdicts[found]

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready dict (verdicts by their values, NaN as None)."""
        return _nan_free({
            "group": dict(self.group),
            "runs": self.runs,
            "plateaus": self.plateaus,
            "verdicts": {v.value: c.to_dict() for v, c in self.verdicts.items()},
            _OTHER: self.other.to_dict(),
            "narrower_runs": self.narrower_runs,
            "frac_narrower": self.frac_narrower,
            "narrower_interval": list(self.narrower_interval),
            "mean_plateau_length": self.mean_plateau_length,
            "median_plateau_length": self.median_plateau_length,
            "mean_final_loss": self.mean_final_loss,
        })


@dataclass(frozen=True)
class Summary:
    """The table of :func:`summarize`, rows sorted by the group values.

    Attributes:
        rows: the groups.
        failed: number of runs stored as failed (not in the rows).
        by: the summary keys (aliases resolved), in the order asked for.
        unknown_verdicts: the distinct stored verdicts that are no
            :class:`~saddlemap.PlateauVerdict` value (counted as "other"), sorted.
    """

    rows: tuple[SummaryRow, ...]
    failed: int = 0
    by: tuple[str, ...] = ("activation", "ratio")
    unknown_verdicts: tuple[str, ...] = ()

    @property
    def runs(self) -> int:
        """The number of finished runs."""
        return sum(r.runs for r in self.rows)

    @property
    def plateaus(self) -> int:
        """The number of plateaus of the finished runs."""
        return sum(r.plateaus for r in self.rows)

    def verdicts_present(self) -> list[PlateauVerdict | str]:
        """The verdicts of at least one plateau, in the enum's order, ``"other"`` last."""
        present: list[PlateauVerdict | str] = [
            v for v in PlateauVerdict if any(r.verdicts[v].count for r in self.rows)
        ]
        if any(r.other.count for r in self.rows):
            present.append(_OTHER)
        return present

    def to_markdown(self) -> str:
        """The table as GitHub Markdown: one row per group.

        Columns: the keys, runs, plateaus, one column per verdict found (count, fraction of
        the group's plateaus, 95 % Wilson interval), the fraction of runs with a plateau at
        a narrower network's saddle (with its interval), the mean plateau length (steps)
        and the mean final loss.
        """
        present = self.verdicts_present()
        keys = [_HEADERS.get(k, k) for k in self.by] or ["group"]
        head = [*keys, "runs", "plateaus", *(_label(v) for v in present),
                "runs with narrower saddle", "mean plateau length", "mean final loss"]
        align = [*("---" for _ in keys), *("---:" for _ in head[len(keys):])]
        lines = [_md_line(head), _md_line(align)]
        for r in self.rows:
            values = [_format_value(k, v) for k, v in r.group] or ["all runs"]
            counts = [r.count(v).cell() for v in present]
            low, high = r.narrower_interval
            lines.append(_md_line([
                *values, str(r.runs), str(r.plateaus), *counts,
                f"{r.frac_narrower:.2f} ({low:.2f}–{high:.2f})",
                _number(r.mean_plateau_length, ".1f"), _number(r.mean_final_loss, ".3e"),
            ]))
        notes = []
        if not self.rows:
            notes.append("No finished runs.")
        elif present:
            notes.append("Verdict cells: count (fraction of the group's plateaus, 95 % Wilson "
                         "interval).")
        else:
            notes.append(f"No plateaus in {self.runs} run(s).")
        if self.unknown_verdicts:
            shown = ", ".join(repr(v[:40]) for v in self.unknown_verdicts[:5])
            more = ", ..." if len(self.unknown_verdicts) > 5 else ""
            notes.append(f"Verdicts counted as other: {shown}{more}.")
        if self.failed:
            notes.append(f"{self.failed} failed run(s) not included.")
        return "\n".join([*lines, "", *notes])

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict (NaN as None)."""
        return {
            "by": list(self.by),
            "runs": self.runs,
            "plateaus": self.plateaus,
            "failed": self.failed,
            "unknown_verdicts": list(self.unknown_verdicts),
            "rows": [r.to_dict() for r in self.rows],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as strict JSON text."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)


def _label(verdict: PlateauVerdict | str) -> str:
    return verdict.value if isinstance(verdict, PlateauVerdict) else verdict


def _number(value: float, spec: str) -> str:
    return "–" if math.isnan(value) else format(value, spec)


def _md_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _verdict(stored: Any) -> PlateauVerdict | None:
    """The verdict of a stored string, or None for anything else."""
    return _VERDICTS.get(stored.strip().lower()) if isinstance(stored, str) else None


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def _row(group: tuple[tuple[str, Any], ...], members: Sequence[Mapping[str, Any]],
         plateaus: Mapping[str, Sequence[Mapping[str, Any]]]) -> SummaryRow:
    counts: dict[PlateauVerdict | None, int] = defaultdict(int)
    lengths: list[int] = []
    narrower = 0
    for run in members:
        found = [_verdict(p.get("verdict")) for p in plateaus.get(run["run_id"], ())]
        for verdict in found:
            counts[verdict] += 1
        lengths.extend(int(p["duration"]) for p in plateaus.get(run["run_id"], ()))
        narrower += PlateauVerdict.NARROWER_SADDLE in found
    total = len(lengths)
    losses = [float(m["final_loss"]) for m in members if m.get("final_loss") is not None]
    return SummaryRow(
        group=group,
        runs=len(members),
        plateaus=total,
        verdicts={v: VerdictCount.of(counts[v], total) for v in PlateauVerdict},
        other=VerdictCount.of(counts[None], total),
        narrower_runs=narrower,
        frac_narrower=narrower / len(members),
        narrower_interval=wilson_interval(narrower, len(members)),
        mean_plateau_length=_mean(lengths),
        median_plateau_length=float(statistics.median(lengths)) if lengths else math.nan,
        mean_final_loss=_mean(losses),
    )


def summarize(db_path: str | Path,
              by: str | Sequence[str] = ("activation", "ratio")) -> Summary:
    """Group the finished runs of the database and count their plateaus per verdict.

    Args:
        db_path: the study database (it must exist; it is checked like any store).
        by: the keys to group by, in order: any :class:`RunSpec` field (activation,
            teacher_width, width, d, n, noise, optimizer, lr, init_scale, seed, steps,
            window, rtol, min_length, committee, rules, batch_size, eval_every), ``ratio``
            (width / teacher_width) and the aliases of :data:`KEY_ALIASES` (``init``,
            ``optimiser``, ``r``, ``teacher``, ``m``, ``seeds``); a sequence or one
            comma-separated string.  No keys: one group of all runs.

    Returns:
        The :class:`Summary`.

    Raises:
        OptionError: an unknown key (checked before the database is opened).
        StoreError: a missing file, or one that fails the store's checks.
    """
    keys = _resolve_keys(by)
    with StudyStore(db_path, create=False) as store:
        runs = store.runs()
        stored_plateaus = store.plateaus()
    by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unknown: set[str] = set()
    for p in stored_plateaus:
        by_run[p["run_id"]].append(p)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    failed = 0
    for run in runs:
        if run["status"] != "ok":
            failed += 1
            continue
        groups[tuple(_key_value(run["spec"], k) for k in keys)].append(run)
        unknown.update(str(p.get("verdict")) for p in by_run[run["run_id"]]
                       if _verdict(p.get("verdict")) is None)
    rows = tuple(
        _row(tuple(zip(keys, values, strict=True)), groups[values], by_run)
        for values in sorted(groups, key=lambda vs: tuple(_order(v) for v in vs))
    )
    return Summary(rows, failed, keys, tuple(sorted(unknown)))


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


#: The columns of ``plateaus.csv`` and ``plateaus.parquet``: the plateau, its refinement's
#: details (lists and pairs as JSON text) and the minibatch noise measure.
PLATEAU_EXPORT_COLUMNS = PLATEAU_ALL_COLUMNS


def _flat_plateau(plateau: dict[str, Any]) -> dict[str, Any]:
    row = {k: plateau.get(k) for k in PLATEAU_EXPORT_COLUMNS}
    for k in ("channel", "clusters", "null_neurons", "warnings", "frozen"):
        if row[k] is not None:
            row[k] = json.dumps(row[k])
    return row


def _tables(db_path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    with StudyStore(db_path, create=False) as store:
        runs = store.runs()
        plateaus = store.plateaus()
    return [_flat_run(run) for run in runs], [_flat_plateau(p) for p in plateaus]


def export_csv(db_path: str | Path, path: str | Path) -> tuple[Path, Path]:
    """Write ``runs.csv`` (spec fields as columns) and ``plateaus.csv`` into a folder.

    The column names of each file are unique: see :data:`RUN_EXPORT_COLUMNS` and
    :data:`PLATEAU_EXPORT_COLUMNS` (rows stored before schema version 3 leave the details
    empty).

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
                                ("plateaus.csv", list(PLATEAU_EXPORT_COLUMNS), plateaus)):
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
    pd.DataFrame(plateaus, columns=list(PLATEAU_EXPORT_COLUMNS)).to_parquet(targets[1], index=False)
    return targets


def plot_summary(summary: Summary, ax: Any = None, *, fractions: bool = False) -> Any:
    """Stacked bars of the plateaus of each group, one colour per verdict.

    One bar per group (labelled with its values on the x axis, turned when there are many
    or long labels), stacked by verdict in the colours of :data:`VERDICT_COLOURS` (plateaus
    of other stored verdicts in dark grey), a legend naming the verdicts found.  Without any
    plateau the Axes says so ("no plateaus in N runs") instead of staying blank.

    Args:
        summary: a :func:`summarize` result.
        ax: a matplotlib Axes (default: a new figure's, wider for many groups).
        fractions: stack the fractions of each group's plateaus instead of the counts.

    Returns:
        The Axes.

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a test dependency
        raise ImportError("plots need matplotlib: pip install matplotlib") from None
    rows = summary.rows
    if ax is None:
        _, ax = plt.subplots(figsize=(min(max(6.4, 3.0 + 0.3 * len(rows)), 24.0), 4.8))
    xs = list(range(len(rows)))
    bottoms = [0.0] * len(rows)
    for verdict in summary.verdicts_present():
        counts = [r.count(verdict) for r in rows]
        heights = [(c.fraction if c.count else 0.0) if fractions else float(c.count)
                   for c in counts]
        colour = (VERDICT_COLOURS[verdict] if isinstance(verdict, PlateauVerdict)
                  else _OTHER_COLOUR)
        ax.bar(xs, heights, bottom=bottoms, width=0.8, color=colour, label=_label(verdict),
               edgecolor="white", linewidth=0.5)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    labels = [r.label for r in rows]
    ax.set_xticks(xs)
    longest = max((len(t) for t in labels), default=0)
    if len(rows) > 25:
        ax.set_xticklabels(labels, rotation=90, fontsize="x-small")
    elif len(rows) > 6 or longest > 12:
        ax.set_xticklabels(labels, rotation=45, ha="right", rotation_mode="anchor",
                           fontsize="small")
    else:
        ax.set_xticklabels(labels)
    ax.set_xlabel(", ".join(_HEADERS.get(k, k) for k in summary.by) or "all runs")
    ax.set_ylabel("fraction of the group's plateaus" if fractions else "plateaus")
    if len(rows):
        ax.set_xlim(-0.6, len(rows) - 0.4)
    if summary.plateaus:
        handles, names = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], names[::-1], title="verdict", fontsize="small",
                  loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        if fractions:
            ax.set_ylim(0, 1)
        else:
            from matplotlib.ticker import MaxNLocator

            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        runs = summary.runs
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, f"no plateaus in {runs} run{'' if runs == 1 else 's'}",
                transform=ax.transAxes, ha="center", va="center", fontsize="large",
                color="0.3")
    return ax
