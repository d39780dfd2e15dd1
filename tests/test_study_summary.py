"""Tests of the study summary: grouping keys, counts per verdict, Wilson intervals, the table,
the JSON form and the figure, on databases written by hand so every count is known."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from saddlemap.errors import OptionError, StoreError
from saddlemap.study import (
    VERDICT_COLOURS,
    Outcome,
    RunSpec,
    StudyStore,
    Summary,
    VerdictCount,
    export_csv,
    plot_summary,
    summarize,
    wilson_interval,
)
from saddlemap.study.summary import KEY_ALIASES, PLATEAU_EXPORT_COLUMNS, SUMMARY_KEYS
from saddlemap.verdicts import PlateauVerdict

NARROWER = PlateauVerdict.NARROWER_SADDLE
SADDLE = PlateauVerdict.SADDLE
MINIMUM = PlateauVerdict.LOCAL_MINIMUM
Z95 = 1.959963984540054


def _spec(**changes: Any) -> RunSpec:
    values: dict[str, Any] = {
        "activation": "tanh", "teacher_width": 1, "width": 2, "d": 3, "n": 10, "noise": 0.0,
        "optimizer": "gd", "lr": None, "init_scale": 0.5, "seed": 0, "steps": 100,
        "window": 10, "rtol": 1e-3, "min_length": 5,
    }
    values.update(changes)
    return RunSpec(**values)


def _plateau(verdict: PlateauVerdict | str, duration: int = 20) -> dict[str, Any]:
    text = verdict.value if isinstance(verdict, PlateauVerdict) else verdict
    return {"start": 5, "end": 5 + duration, "duration": duration, "loss": 0.25, "width": 1,
            "verdict": text, "kind": None}


Run = tuple[RunSpec, Sequence[dict[str, Any]] | None, float]


def _db(path: Path, runs: Sequence[Run]) -> Path:
    """A database of the runs (spec, plateaus, final loss); plateaus None: a failed run."""
    with StudyStore(path) as store:
        for spec, plateaus, loss in runs:
            if plateaus is None:
                store.write_outcome(Outcome(spec, None, 0.1, "RuntimeError: boom"))
                continue
            record = {"run_id": spec.run_id, "spec": spec.to_dict(), "final_loss": loss,
                      "steps": spec.steps, "plateaus": list(plateaus)}
            store.write_outcome(Outcome(spec, record, 0.5))
    return path


def _grid_db(path: Path) -> Path:
    """16 runs: activation × width × init_scale × optimizer, 2 seeds for tanh/width 2.

    Every run has one plateau; its verdict is narrower-network saddle for width 4, a saddle
    for width 2; the final loss is the seed + 1 over 10.
    """
    runs: list[Run] = []
    for activation in ("tanh", "erf"):
        for width in (2, 4):
            for init in (0.5, 0.05):
                for optimizer in ("gd", "adam"):
                    seeds = (0, 1) if (activation, width) == ("tanh", 2) else (0,)
                    for seed in seeds:
                        spec = _spec(activation=activation, width=width, init_scale=init,
                                     optimizer=optimizer, seed=seed)
                        verdict = NARROWER if width == 4 else SADDLE
                        runs.append((spec, [_plateau(verdict)], (seed + 1) / 10))
    return _db(path, runs)


# ---------------------------------------------------------------------------- Wilson


def test_wilson_known_values() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775328), abs=1e-7)
    assert wilson_interval(5, 10) == pytest.approx((0.2365931, 0.7634069), abs=1e-7)
    assert wilson_interval(10, 10) == pytest.approx((0.7224672, 1.0), abs=1e-7)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(1, 1) == pytest.approx((0.2065493, 1.0), abs=1e-7)


def test_wilson_by_hand() -> None:
    # 7 of 30: p = 0.2333..., z²/n = 0.128049..., centre (p + z²/2n)/(1 + z²/n) = 0.263604,
    # half-width z/(1 + z²/n)·√(p(1−p)/n + z²/4n²) = 0.145680
    low, high = wilson_interval(7, 30)
    assert low == pytest.approx(0.263604 - 0.145680, abs=2e-6)
    assert high == pytest.approx(0.263604 + 0.145680, abs=2e-6)
    # the bounds solve (p̂ − p)² = z² p (1 − p) / n, the definition of the score interval
    p_hat = 7 / 30
    for bound in (low, high):
        assert (p_hat - bound) ** 2 == pytest.approx(Z95**2 * bound * (1 - bound) / 30,
                                                     rel=1e-9)
    # another z: the 90 % interval is narrower
    low90, high90 = wilson_interval(7, 30, z=1.6448536269514722)
    assert low < low90 < p_hat < high90 < high


def test_wilson_contains_the_fraction_and_stays_in_the_unit_interval() -> None:
    for trials in (*range(1, 41), 97, 1000):
        previous = (-1.0, -1.0)
        for successes in range(trials + 1):
            low, high = wilson_interval(successes, trials)
            assert 0.0 <= low <= successes / trials <= high <= 1.0
            assert low < high
            assert low >= previous[0] and high >= previous[1]  # monotone in the successes
            previous = (low, high)
    # more trials, same fraction: a narrower interval
    widths = [wilson_interval(k, 4 * k)[1] - wilson_interval(k, 4 * k)[0] for k in (1, 3, 7)]
    assert widths == sorted(widths, reverse=True)


@pytest.mark.parametrize(("successes", "trials", "z"), [
    (-1, 10, Z95), (11, 10, Z95), (1.5, 10, Z95), (1, 10.0, Z95), (True, 3, Z95),
    (1, 10, 0.0), (1, 10, -1.0), (1, 10, math.nan), (1, 10, math.inf),
])
def test_wilson_refuses_bad_input(successes: Any, trials: Any, z: Any) -> None:
    with pytest.raises(OptionError, match="wilson_interval"):
        wilson_interval(successes, trials, z)


# ---------------------------------------------------------------------------- grouping


def test_default_grouping_is_activation_and_ratio(tmp_path: Path) -> None:
    s = summarize(_grid_db(tmp_path / "g.db"))
    assert s.by == ("activation", "ratio")
    assert [(r.key, r.runs) for r in s.rows] == [
        (("erf", 2.0), 4), (("erf", 4.0), 4), (("tanh", 2.0), 8), (("tanh", 4.0), 4),
    ]
    assert s.runs == 20 and s.plateaus == 20 and s.failed == 0


@pytest.mark.parametrize(("by", "expected"), [
    (("optimizer",), [(("adam",), 10), (("gd",), 10)]),
    (("init_scale", "width"), [((0.05, 2), 6), ((0.05, 4), 4), ((0.5, 2), 6), ((0.5, 4), 4)]),
    (("width", "activation", "optimizer"),
     [((2, "erf", "adam"), 2), ((2, "erf", "gd"), 2), ((2, "tanh", "adam"), 4),
      ((2, "tanh", "gd"), 4), ((4, "erf", "adam"), 2), ((4, "erf", "gd"), 2),
      ((4, "tanh", "adam"), 2), ((4, "tanh", "gd"), 2)]),
    (("seed",), [((0,), 16), ((1,), 4)]),
    (("teacher_width", "d", "n", "lr"), [((1, 3, 10, None), 20)]),
    ((), [((), 20)]),
])
def test_grouping_by_key_sets(tmp_path: Path, by: tuple[str, ...],
                              expected: list[tuple[tuple[Any, ...], int]]) -> None:
    s = summarize(_grid_db(tmp_path / "g.db"), by=by)
    assert s.by == by
    assert [(r.key, r.runs) for r in s.rows] == expected
    assert sum(r.runs for r in s.rows) == 20


def test_every_spec_field_is_a_key(tmp_path: Path) -> None:
    db = _grid_db(tmp_path / "g.db")
    for key in SUMMARY_KEYS:
        s = summarize(db, by=[key])
        assert s.by == (key,) and sum(r.runs for r in s.rows) == 20
    committee, rules = summarize(db, by=["committee", "rules"]).rows[0].key
    assert committee is False and rules == "{}"  # defaults of specs that do not store them


def test_aliases(tmp_path: Path) -> None:
    db = _grid_db(tmp_path / "g.db")
    plain = summarize(db, by=("init_scale", "optimizer", "teacher_width", "width"))
    for by in (("init", "optimiser", "r", "m"), ("init", "optimizer", "teacher", "width"),
               "init, optimiser ,R,M", ["INIT_SCALE", "Optimizer", "teacher", "m"]):
        s = summarize(db, by=by)
        assert s.by == plain.by and s.rows == plain.rows
    assert summarize(db, by=("m", "width", "m")).by == ("width",)  # kept once
    assert summarize(db, by="seeds").by == ("seed",)
    assert summarize(db, by="activation,ratio,").by == ("activation", "ratio")
    assert set(KEY_ALIASES.values()) <= set(SUMMARY_KEYS)
    row = plain.rows[0]
    assert row.value("init") == row.value("init_scale") == 0.05
    assert row.value("m") == 2
    with pytest.raises(KeyError, match="activation"):
        row.value("activation")


def test_unknown_key_is_a_clear_error_before_the_database_is_read(tmp_path: Path) -> None:
    for by in (("activation", "colour"), "ratio,colour", ["colour"]):
        with pytest.raises(OptionError) as info:
            summarize(tmp_path / "missing.db", by=by)  # no StoreError: checked first
        message = str(info.value)
        assert "'colour'" in message and "\n" not in message
        for valid in ("activation", "ratio", "init_scale", "optimizer", "init → init_scale"):
            assert valid in message
    with pytest.raises(OptionError, match="expected a name"):
        summarize(tmp_path / "missing.db", by=[3])  # type: ignore[list-item]
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(StoreError, match="no such study database"):
        summarize(tmp_path / "missing.db", by="activation")


# ---------------------------------------------------------------------------- counts


def _verdict_db(path: Path) -> Path:
    """tanh: 3 runs, 7 plateaus; erf: 1 run without plateaus; sigmoid: 1 run, 1 failed."""
    runs: list[Run] = [
        (_spec(seed=0), [_plateau(NARROWER, 10), _plateau(SADDLE, 30),
                         _plateau("minimum", 50)], 0.1),
        (_spec(seed=1), [_plateau(NARROWER, 20), _plateau(NARROWER, 40)], 0.2),
        (_spec(seed=2), [_plateau(MINIMUM, 60), _plateau("  Saddle  ", 80)], 0.6),
        (_spec(activation="erf"), [], 0.5),
        (_spec(activation="sigmoid"), [_plateau("a verdict | of the future", 7)],
         math.nan),
        (_spec(activation="sigmoid", seed=1), None, math.nan),
    ]
    return _db(path, runs)


def test_counts_per_verdict(tmp_path: Path) -> None:
    s = summarize(_verdict_db(tmp_path / "v.db"), by="activation")
    assert s.failed == 1
    assert s.unknown_verdicts == ("a verdict | of the future", "minimum")
    erf, sigmoid, tanh = s.rows
    assert [r.key for r in s.rows] == [("erf",), ("sigmoid",), ("tanh",)]

    assert (tanh.runs, tanh.plateaus) == (3, 7)
    counts = {v: tanh.verdicts[v].count for v in PlateauVerdict}
    assert counts == {NARROWER: 3, SADDLE: 2, MINIMUM: 1, PlateauVerdict.UNDETERMINED: 0,
                      PlateauVerdict.CHANNEL_TO_INFINITY: 0,
                      PlateauVerdict.NOT_NEAR_CRITICAL: 0, PlateauVerdict.NOT_REFINED: 0}
    assert list(tanh.verdicts) == list(PlateauVerdict)  # every verdict, in the enum's order
    assert tanh.other.count == 1
    assert sum(counts.values()) + tanh.other.count == tanh.plateaus
    narrower = tanh.verdicts[NARROWER]
    assert narrower.fraction == pytest.approx(3 / 7)
    assert narrower.interval == wilson_interval(3, 7)
    assert tanh.verdicts[PlateauVerdict.NOT_REFINED] == VerdictCount(0, 0.0,
                                                                     *wilson_interval(0, 7))
    assert tanh.count("saddle") is tanh.verdicts[SADDLE]
    assert tanh.count("other") is tanh.other
    with pytest.raises(KeyError):
        tanh.count("no such verdict")
    # runs with a narrower-network saddle: seeds 0 and 1 of 3
    assert (tanh.narrower_runs, tanh.frac_narrower) == (2, pytest.approx(2 / 3))
    assert tanh.narrower_interval == wilson_interval(2, 3)
    assert tanh.mean_plateau_length == pytest.approx(290 / 7)
    assert tanh.median_plateau_length == 40.0
    assert tanh.mean_final_loss == pytest.approx(0.3)

    assert (erf.runs, erf.plateaus, erf.narrower_runs) == (1, 0, 0)
    assert math.isnan(erf.mean_plateau_length) and math.isnan(erf.median_plateau_length)
    assert all(math.isnan(c.fraction) and c.interval == (0.0, 1.0)
               for c in erf.verdicts.values())
    assert erf.narrower_interval == wilson_interval(0, 1)

    assert (sigmoid.runs, sigmoid.plateaus, sigmoid.other.count) == (1, 1, 1)
    assert sigmoid.other.fraction == 1.0
    assert math.isnan(sigmoid.mean_final_loss)  # a NaN loss is stored as NULL


def test_extra_plateau_columns_are_tolerated(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    db = _verdict_db(tmp_path / "v.db")
    before = summarize(db, by="activation")
    plateaus = StudyStore.plateaus

    def wider(self: StudyStore) -> list[dict[str, Any]]:
        return [{**p, "escape": "negative curvature", "lambda_min": -0.1}
                for p in plateaus(self)]

    monkeypatch.setattr(StudyStore, "plateaus", wider)
    assert summarize(db, by="activation") == before
    runs_csv, plats_csv = export_csv(db, tmp_path / "csv")
    header = plats_csv.read_text().splitlines()[0]
    assert header == ",".join(PLATEAU_EXPORT_COLUMNS)  # no column the store merely returns
    assert "escape" not in header.split(",")
    assert runs_csv.exists()


@pytest.mark.parametrize("runs", [1, 3, 7, 13])
def test_sample_sizes(tmp_path: Path, runs: int) -> None:
    # run k has k % 3 narrower-network plateaus and one saddle when k is even
    recorded: list[Run] = []
    for k in range(runs):
        plats = [_plateau(NARROWER, 10 + k) for _ in range(k % 3)]
        if k % 2 == 0:
            plats.append(_plateau(SADDLE, 100))
        recorded.append((_spec(seed=k), plats, float(k)))
    s = summarize(_db(tmp_path / f"n{runs}.db", recorded))
    (row,) = s.rows
    n_narrower = sum(k % 3 for k in range(runs))
    n_saddle = sum(1 for k in range(runs) if k % 2 == 0)
    with_narrower = sum(1 for k in range(runs) if k % 3)
    assert (row.runs, row.plateaus) == (runs, n_narrower + n_saddle)
    assert row.verdicts[NARROWER].count == n_narrower
    assert row.verdicts[SADDLE].count == n_saddle
    assert row.verdicts[SADDLE].interval == wilson_interval(n_saddle, row.plateaus)
    assert row.narrower_runs == with_narrower
    assert row.narrower_interval == wilson_interval(with_narrower, runs)
    low, high = row.narrower_interval
    assert 0.0 <= low <= row.frac_narrower <= high <= 1.0
    assert row.mean_final_loss == pytest.approx((runs - 1) / 2)


# ---------------------------------------------------------------------------- table, JSON


def test_markdown_table(tmp_path: Path) -> None:
    md = summarize(_verdict_db(tmp_path / "v.db"), by="activation").to_markdown()
    lines = md.splitlines()
    assert lines[0] == (
        "| activation | runs | plateaus | saddle of a narrower network | saddle | "
        "local minimum | other | runs with narrower saddle | mean plateau length | "
        "mean final loss |"
    )
    assert lines[1] == "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    assert lines[2] == ("| erf | 1 | 0 | 0 (–) | 0 (–) | 0 (–) | 0 (–) | 0.00 (0.00–0.79) "
                        "| – | 5.000e-01 |")
    assert lines[3] == ("| sigmoid | 1 | 1 | 0 (0.00, 0.00–0.79) | 0 (0.00, 0.00–0.79) "
                        "| 0 (0.00, 0.00–0.79) | 1 (1.00, 0.21–1.00) | 0.00 (0.00–0.79) "
                        "| 7.0 | – |")
    assert lines[4] == ("| tanh | 3 | 7 | 3 (0.43, 0.16–0.75) | 2 (0.29, 0.08–0.64) "
                        "| 1 (0.14, 0.03–0.51) | 1 (0.14, 0.03–0.51) | 0.67 (0.21–0.94) "
                        "| 41.4 | 3.000e-01 |")
    # verdicts found nowhere get no column
    assert "not refined" not in md and "channel to infinity" not in md
    assert "'a verdict \\| of the future'" not in md  # notes are not table cells
    assert "Verdicts counted as other: 'a verdict | of the future', 'minimum'." in md
    assert "1 failed run(s) not included." in md
    assert "95 % Wilson interval" in md


def test_markdown_of_several_keys_and_none(tmp_path: Path) -> None:
    db = _grid_db(tmp_path / "g.db")
    md = summarize(db, by=("activation", "ratio", "init", "optimiser")).to_markdown()
    assert md.splitlines()[0].startswith("| activation | m/r* | init_scale | optimizer | runs |")
    assert "| erf | 2 | 0.05 | adam | 1 | 1 | 0 (0.00, 0.00–0.79) | 1 (1.00, 0.21–1.00) |" in md
    assert len(md.split("\n\n")[0].splitlines()) == 2 + 16
    all_runs = summarize(db, by=()).to_markdown().splitlines()
    assert all_runs[0].startswith("| group | runs |") and all_runs[2].startswith("| all runs |")
    empty = _db(tmp_path / "none.db", [(_spec(), [], 0.5), (_spec(seed=1), [], 0.25)])
    md = summarize(empty).to_markdown()
    assert "| tanh | 2 | 2 | 0 | 0.00 (0.00–0.66) | – | 3.750e-01 |" in md
    assert "No plateaus in 2 run(s)." in md
    nothing = _db(tmp_path / "failed.db", [(_spec(), None, 0.0)])
    s = summarize(nothing)
    assert s.rows == () and s.failed == 1 and "No finished runs." in s.to_markdown()


def test_to_dict_and_json(tmp_path: Path) -> None:
    s = summarize(_verdict_db(tmp_path / "v.db"), by=["activation"])
    data = json.loads(s.to_json())
    assert data == s.to_dict()
    assert data["by"] == ["activation"] and data["failed"] == 1
    assert (data["runs"], data["plateaus"]) == (5, 8)
    erf, sigmoid, tanh = data["rows"]
    assert tanh["group"] == {"activation": "tanh"}
    assert tanh["verdicts"][NARROWER.value] == {
        "count": 3, "fraction": pytest.approx(3 / 7), "interval": list(wilson_interval(3, 7)),
    }
    assert set(tanh["verdicts"]) == {v.value for v in PlateauVerdict}
    assert tanh["other"]["count"] == 1 and tanh["narrower_runs"] == 2
    assert erf["mean_plateau_length"] is None and erf["verdicts"]["saddle"]["fraction"] is None
    assert sigmoid["mean_final_loss"] is None
    assert data["unknown_verdicts"] == ["a verdict | of the future", "minimum"]
    assert isinstance(s, Summary) and json.loads(s.to_json(indent=None)) == data


# ---------------------------------------------------------------------------- figure


@pytest.fixture
def agg() -> Any:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_verdict_colours() -> None:
    from matplotlib.colors import is_color_like

    assert set(VERDICT_COLOURS) == set(PlateauVerdict)
    assert len(set(VERDICT_COLOURS.values())) == len(PlateauVerdict)
    assert all(is_color_like(c) for c in VERDICT_COLOURS.values())


def test_plot_stacks_counts_per_verdict(tmp_path: Path, agg: Any) -> None:
    from matplotlib.colors import to_hex

    s = summarize(_verdict_db(tmp_path / "v.db"), by="activation")
    ax = plot_summary(s)
    # 3 groups × 4 verdicts found (narrower, saddle, minimum, other)
    assert len(ax.patches) == 12
    assert [t.get_text() for t in ax.get_xticklabels()] == ["erf", "sigmoid", "tanh"]
    assert ax.get_xlabel() == "activation" and ax.get_ylabel() == "plateaus"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["other", "local minimum", "saddle", "saddle of a narrower network"]
    by_colour: dict[str, float] = {}
    for patch in ax.patches:
        colour = to_hex(patch.get_facecolor())
        by_colour[colour] = by_colour.get(colour, 0.0) + patch.get_height()
    assert by_colour[VERDICT_COLOURS[NARROWER].lower()] == 3
    assert by_colour[VERDICT_COLOURS[SADDLE].lower()] == 2
    assert by_colour[VERDICT_COLOURS[MINIMUM].lower()] == 1
    tops = {}
    for patch in ax.patches:
        x = round(patch.get_x() + patch.get_width() / 2)
        tops[x] = max(tops.get(x, 0.0), patch.get_y() + patch.get_height())
    assert tops == {0: 0.0, 1: 1.0, 2: 7.0}  # stacked up to the group's plateau count
    assert not [t for t in ax.texts if "no plateaus" in t.get_text()]
    ax.figure.savefig(tmp_path / "summary.png")


def test_plot_fractions(tmp_path: Path, agg: Any) -> None:
    s = summarize(_verdict_db(tmp_path / "v.db"), by="activation")
    ax = plot_summary(s, fractions=True)
    heights: dict[int, float] = {}
    for patch in ax.patches:
        x = round(patch.get_x() + patch.get_width() / 2)
        heights[x] = heights.get(x, 0.0) + patch.get_height()
    assert heights == {0: 0.0, 1: pytest.approx(1.0), 2: pytest.approx(1.0)}
    assert ax.get_ylim() == (0.0, 1.0)


def test_plot_without_plateaus_is_not_blank(tmp_path: Path, agg: Any) -> None:
    db = _db(tmp_path / "none.db", [(_spec(seed=k, width=2 + k % 2), [], 0.1) for k in range(3)])
    fig, ax = agg.subplots()
    assert plot_summary(summarize(db), ax=ax) is ax
    notes = [t.get_text() for t in ax.texts]
    assert notes == ["no plateaus in 3 runs"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tanh, 2", "tanh, 3"]
    one = _db(tmp_path / "one.db", [(_spec(), [], 0.1)])
    assert [t.get_text() for t in plot_summary(summarize(one)).texts] == ["no plateaus in 1 run"]
    failed = _db(tmp_path / "failed.db", [(_spec(), None, 0.0)])
    ax = plot_summary(summarize(failed))
    assert [t.get_text() for t in ax.texts] == ["no plateaus in 0 runs"]
    fig.savefig(tmp_path / "none.png")


def test_plot_many_groups_turns_the_labels(tmp_path: Path, agg: Any) -> None:
    runs: list[Run] = [(_spec(seed=k), [_plateau(NARROWER if k % 2 else SADDLE)], 0.1)
                       for k in range(50)]
    ax = plot_summary(summarize(_db(tmp_path / "many.db", runs), by=("activation", "seed")))
    labels = ax.get_xticklabels()
    assert len(labels) == 50 and labels[7].get_text() == "tanh, 7"
    assert all(t.get_rotation() == 90 for t in labels)
    assert ax.figure.get_figwidth() > 10
    few = plot_summary(summarize(_grid_db(tmp_path / "g.db"), by=("activation", "ratio",
                                                                  "init", "optimizer")))
    assert all(t.get_rotation() == 45 for t in few.get_xticklabels())
