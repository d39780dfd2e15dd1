"""Study configurations: a grid of teacher–student runs read from TOML or JSON.

A configuration file holds a ``[grid]`` table of lists, one per varied setting, and a few
scalars shared by every run::

    steps = 300          # training steps per run
    window = 100         # PlateauMonitor settings
    rtol = 1e-3
    min_length = 50

    [grid]
    activation = ["erf", "tanh"]
    teacher_width = [1, 2]
    width = [2, 3, 4]
    d = [4]
    n = [60]
    noise = [0.0]
    optimizer = ["gd"]
    lr = ["auto"]        # "auto" (or JSON null): gd's safe step size, the optimizer default
    init_scale = [0.5]
    batch_size = ["full"]  # minibatch sizes; "full" (or JSON null): full-batch training
    seeds = 5            # a count (seeds 0..4) or a list of seeds

Every grid key and scalar is optional (defaults below); a scalar in place of a grid list
stands for a one-element list.  :meth:`StudyConfig.runs` expands the grid into
:class:`RunSpec` objects, each with a stable :attr:`RunSpec.run_id`.

**Widths relative to the teacher.**  A ``width`` may be written in terms of the teacher width
r*: ``"r"``, ``"r+1"``, ``"2r"``, ``"4r"``, ``"2r-1"`` (an integer is an absolute width).  The
grid is checked per cell: a cell whose width is below its teacher width is left out (the file
is refused only when no cell remains), and a cell whose widths coincide (``"r+1"`` and
``"2r"`` at r* = 1) is run once, and so is a batch size ≥ n (full batch).

**Arms.**  ``[[arm]]`` tables run several grids from one file: each arm takes the top-level
grid and scalars and replaces the keys it names (grid keys, ``committee`` and ``steps``), e.g.
a Saad–Solla committee arm beside the main grid::

    [[arm]]
    name = "main"

    [[arm]]
    name = "committee"
    committee = true
    activation = ["erf"]
    teacher_width = [2, 3]

**Minibatches.**  ``batch_size`` runs minibatch training (:func:`~saddlemap.train` with
``batch_size``); a minibatch run's monitor sees the full-batch loss every ``eval_every``
steps (a top-level scalar, default 10).  Neither enters the id of a full-batch run, so run
ids of studies without the axis do not change.

**Plateau rules.**  A ``[rules]`` table sets any :class:`~saddlemap.PlateauRules` field
(``rel_rtol``, ``floor``, ``drop``, ``escape_steps``, ``max_distance``, ``path_margin``, …);
``window``, ``rtol`` and ``min_length`` may sit there or at the top level, not both.  Values
equal to the defaults are dropped, so they do not change run ids.

Every number is checked before any work: integers must be integers, reals finite, and each
lies in a range (:data:`LIMITS`; e.g. ``steps`` ≤ 10⁶, ``width`` ≤ 10⁴, ``lr`` ≤ 10⁶); a run
may hold at most :data:`MAX_RUN_VALUES` data and hidden values (n · (d + width)).  The grid
is counted, as the product of its axis lengths, before it is expanded: a study of more than
``max_runs`` runs (default :data:`MAX_RUNS`) is refused.  Raise the limit with a top-level
``max_runs = N`` in the file or the ``max_runs`` argument of :func:`load_config`,
:meth:`StudyConfig.from_dict` or :func:`~saddlemap.study.runner.run_study`.

>>> cfg = StudyConfig.from_dict({"grid": {"width": [2, 3], "teacher_width": [1], "seeds": 2}})
>>> len(cfg.runs())
4
>>> cfg.runs()[0].run_id == cfg.runs()[0].run_id
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..activations import available_activations
from ..errors import SaddlemapError
from ..monitor import PlateauRules

__all__ = [
    "LIMITS",
    "MAX_RUNS",
    "MAX_RUN_VALUES",
    "ConfigError",
    "RunSpec",
    "StudyConfig",
    "load_config",
]

OPTIMIZERS = ("gd", "momentum", "adam", "lbfgs")


class ConfigError(SaddlemapError, ValueError):
    """A study configuration that cannot be used; the message names the offending key."""


@dataclass(frozen=True)
class RunSpec:
    """One teacher–student run of a study: problem, optimizer and monitor settings.

    Attributes:
        activation: activation name of teacher and student.
        teacher_width: teacher width r*.
        width: student width m ≥ r*.
        d: input dimension.
        n: number of samples.
        noise: label-noise standard deviation.
        optimizer: ``"gd"``, ``"momentum"``, ``"adam"`` or ``"lbfgs"``.
        lr: step size, or None for the optimizer's default.
        init_scale: student initialisation scale.
        seed: seed of the problem (teacher, data, student).
        steps: training steps.
        window: PlateauMonitor window.
        rtol: PlateauMonitor relative tolerance.
        min_length: PlateauMonitor minimum plateau length.
        committee: the soft committee machine of Saad & Solla: an orthonormal teacher with
            unit output weights, and a student whose output weights are fixed at 1.
        rules: further :class:`~saddlemap.PlateauRules` settings as sorted (name, value)
            pairs (the config's ``[rules]`` table); empty: the defaults.
        batch_size: the minibatch size B, or None for full-batch training.
        eval_every: minibatch runs: steps between full-batch evaluations (the monitor's
            observations).
    """

    activation: str
    teacher_width: int
    width: int
    d: int
    n: int
    noise: float
    optimizer: str
    lr: float | None
    init_scale: float
    seed: int
    steps: int
    window: int
    rtol: float
    min_length: int
    committee: bool = False
    rules: tuple[tuple[str, Any], ...] = ()
    batch_size: int | None = None
    eval_every: int = 10

    @property
    def ratio(self) -> float:
        """The overparameterisation ratio m / r*."""
        return self.width / self.teacher_width

    def plateau_rules(self) -> PlateauRules:
        """The :class:`~saddlemap.PlateauRules` of the run's monitor.

        ``escape_steps`` defaults to 10 · window, as in :class:`~saddlemap.PlateauMonitor`.
        """
        rules = {"escape_steps": 10 * self.window, **dict(self.rules)}
        return PlateauRules(window=self.window, rtol=self.rtol, min_length=self.min_length,
                            **rules)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable dict (``rules`` as a dict)."""
        d = dataclasses.asdict(self)
        d["rules"] = dict(self.rules)
        return d

    def canonical_json(self) -> str:
        """The spec as canonical JSON (sorted keys, no spaces, floats as floats)."""
        d = self.to_dict()
        for key in ("noise", "init_scale", "rtol"):
            d[key] = float(d[key])
        if d["lr"] is not None:
            d["lr"] = float(d["lr"])
        if not d["committee"]:
            del d["committee"]  # ids of ordinary runs do not depend on the option
        if not d["rules"]:
            del d["rules"]  # nor on default rules
        if d["batch_size"] is None or d["eval_every"] == _DEFAULT_EVAL_EVERY:
            del d["eval_every"]  # a full-batch run's monitor sees every step
        if d["batch_size"] is None:
            del d["batch_size"]  # nor on full-batch training
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        """A stable id: the first 16 hex digits of the SHA-256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        """Rebuild a spec from :meth:`to_dict` output."""
        values = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        if "rules" in values:
            values["rules"] = tuple(sorted(dict(values["rules"]).items()))
        return cls(**values)


# ---------------------------------------------------------------------------- limits

#: Most runs a study may hold unless ``max_runs`` (config key or argument) allows more.
MAX_RUNS = 100_000
#: Most data and hidden values one run may hold: n · (d + width).
MAX_RUN_VALUES = 100_000_000
#: Largest config file read (bytes).
MAX_CONFIG_BYTES = 10 * 2**20

#: The range of every number of a config, by key: (least, largest); a least of 0.0 for a
#: real that must be positive means "> 0".
LIMITS: dict[str, tuple[float, float]] = {
    "teacher_width": (1, 10_000),
    "width": (1, 10_000),
    "d": (1, 100_000),
    "n": (1, 10_000_000),
    "noise": (0.0, 1e6),
    "lr": (0.0, 1e6),
    "init_scale": (0.0, 1e6),
    "seeds": (0, 2**63 - 1),
    "steps": (1, 1_000_000),
    "window": (1, 1_000_000),
    "min_length": (1, 1_000_000),
    "rtol": (0.0, 1.0),
    "batch_size": (1, 10_000_000),
    "eval_every": (1, 1_000_000),
}
_DEFAULT_EVAL_EVERY = 10


# ---------------------------------------------------------------------------- validation


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _show(v: Any) -> str:
    """A short, one-line rendering of a config value for an error message."""
    if _is_int(v) and abs(v) >= 10**30:
        return f"an integer of about {int(v.bit_length() * math.log10(2)) + 1} digits"
    try:
        text = repr(v)
    except ValueError:  # an integer too long to print, deep inside a list
        return f"a {type(v).__name__}"
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def _name(key: Any) -> str:
    """A key as text for an error message: one line, at most 40 characters."""
    text = " ".join(str(key).split())
    return text if len(text) <= 40 else text[:37] + "..."


def _int(least: int, largest: float = math.inf) -> Callable[[str, Any], int]:
    def check(key: str, v: Any) -> int:
        if not _is_int(v):
            raise ConfigError(f"{key}: expected an integer, got {_show(v)}")
        if v < least:
            raise ConfigError(f"{key}: must be ≥ {least}, got {_show(v)}")
        if v > largest:
            raise ConfigError(f"{key}: must be ≤ {largest:.12g}, got {_show(v)}")
        return int(v)

    return check


def _real(*, positive: bool, largest: float) -> Callable[[str, Any], float]:
    def check(key: str, v: Any) -> float:
        if not _is_real(v):
            raise ConfigError(f"{key}: expected a finite number, got {_show(v)}")
        if v < 0 or (positive and v == 0):
            raise ConfigError(f"{key}: must be {'> 0' if positive else '≥ 0'}, got {_show(v)}")
        if v > largest:
            raise ConfigError(f"{key}: must be ≤ {largest:g}, got {_show(v)}")
        return float(v)

    return check


def _limited_int(key: str) -> Callable[[str, Any], int]:
    least, largest = LIMITS[key]
    return _int(int(least), largest)


def _limited_real(key: str, *, positive: bool) -> Callable[[str, Any], float]:
    return _real(positive=positive, largest=LIMITS[key][1])


def _choice(choices: Callable[[], list[str]] | tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(key: str, v: Any) -> str:
        options = choices() if callable(choices) else list(choices)
        if not isinstance(v, str):
            raise ConfigError(f"{key}: expected a string, got {_show(v)}")
        if v.lower() not in options:
            raise ConfigError(f"{key}: unknown value {_show(v)}; choose from {', '.join(options)}")
        return v.lower()

    return check


_RELATIVE = re.compile(r"^\s*(\d{1,6})?\s*\*?\s*r\s*(?:([+-])\s*(\d{1,6}))?\s*$")


def _width(key: str, v: Any) -> int | str:
    """An absolute width, or a width relative to r* (``"r"``, ``"r+1"``, ``"2r"``, …)."""
    if isinstance(v, str):
        match = _RELATIVE.match(v.lower())
        if match is None:
            raise ConfigError(f"{key}: expected an integer or a width in terms of r* such as "
                              f"'r', 'r+1', '2r', '4r', got {_show(v)}")
        return "".join(v.lower().split()).replace("*", "")
    return _limited_int("width")(key, v)


def resolve_width(width: int | str, teacher_width: int) -> int:
    """The absolute width of a grid width at teacher width r*.

    >>> [resolve_width(w, 3) for w in (5, "r", "r+1", "2r", "4r-2")]
    [5, 3, 4, 6, 10]
    """
    if not isinstance(width, str):
        return int(width)
    match = _RELATIVE.match(width)
    if match is None:
        raise ConfigError(f"grid.width: not a width in terms of r*: {_show(width)}")
    factor, sign, offset = match.groups()
    shift = int(offset or 0) * (-1 if sign == "-" else 1)
    return int(factor or 1) * teacher_width + shift


def _cell_widths(widths: tuple[int | str, ...], teacher_width: int) -> list[int]:
    """The distinct widths of a cell at teacher width r*, those below r* left out."""
    out: list[int] = []
    for w in widths:
        m = resolve_width(w, teacher_width)
        if m >= teacher_width and m not in out:
            out.append(m)
    return out


def _lr(key: str, v: Any) -> float | None:
    if v is None or (isinstance(v, str) and v.lower() == "auto"):
        return None
    return _limited_real("lr", positive=True)(key, v)


def _batch_size(key: str, v: Any) -> int | None:
    """A minibatch size, or None for ``"full"`` (or JSON null): full-batch training."""
    if v is None or (isinstance(v, str) and v.strip().lower() == "full"):
        return None
    if isinstance(v, str):
        raise ConfigError(f"{key}: expected an integer or \"full\", got {_show(v)}")
    return _limited_int("batch_size")(key, v)


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: expected true or false, got {_show(v)}")
    return v


_GRID: dict[str, tuple[Callable[[str, Any], Any], tuple[Any, ...]]] = {
    "activation": (_choice(available_activations), ("erf",)),
    "teacher_width": (_limited_int("teacher_width"), (2,)),
    "width": (_width, (4,)),
    "d": (_limited_int("d"), (10,)),
    "n": (_limited_int("n"), (500,)),
    "noise": (_limited_real("noise", positive=False), (0.0,)),
    "optimizer": (_choice(OPTIMIZERS), ("gd",)),
    "lr": (_lr, (None,)),
    "init_scale": (_limited_real("init_scale", positive=True), (0.5,)),
    "batch_size": (_batch_size, (None,)),
}

_SCALARS: dict[str, tuple[Callable[[str, Any], Any], Any]] = {
    "steps": (_limited_int("steps"), 1000),
    "window": (_limited_int("window"), 100),
    "rtol": (_limited_real("rtol", positive=True), 1e-3),
    "min_length": (_limited_int("min_length"), 50),
    "committee": (_bool, False),
    "eval_every": (_limited_int("eval_every"), _DEFAULT_EVAL_EVERY),
}

_check_max_runs = _int(1)


def _grid_list(key: str, value: Any, check: Callable[[str, Any], Any]) -> tuple[Any, ...]:
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values:
        raise ConfigError(f"grid.{key}: empty list")
    out = tuple(check(f"grid.{key}", v) for v in values)
    if len(set(out)) != len(out):
        raise ConfigError(f"grid.{key}: duplicate values in {_show(list(values))}")
    return out


def _seeds(value: Any) -> tuple[int, ...]:
    if _is_int(value):
        if value < 1:
            raise ConfigError(f"grid.seeds: a seed count must be ≥ 1, got {value}")
        return tuple(range(value))
    if not isinstance(value, list | tuple):
        raise ConfigError(
            f"grid.seeds: expected a count or a list of integers, got {_show(value)}"
        )
    return _grid_list("seeds", value, _limited_int("seeds"))


def _axis_length(key: str, value: Any) -> int:
    """The number of values of one grid axis, read from the raw value (nothing expanded)."""
    if key == "seeds" and _is_int(value):
        return max(value, 1)
    return len(value) if isinstance(value, list | tuple) else 1


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        shown = _show(count) if count >= 10**30 else f"{count:,}"
        raise ConfigError(
            f"grid: {shown} runs (the product of the grid's list lengths) exceed the "
            f"limit of {limit:,} runs; to allow more, set max_runs = N at the top of the "
            "config or pass max_runs=N"
        )


def _max_runs(raw: Mapping[str, Any], override: int | None) -> int:
    """The run limit: the argument, else the config's ``max_runs``, else :data:`MAX_RUNS`."""
    if override is not None:
        return _check_max_runs("max_runs", override)
    if "max_runs" in raw:
        return _check_max_runs("max_runs", raw["max_runs"])
    return MAX_RUNS


def _check_run_size(kwargs: Mapping[str, Any]) -> None:
    n, d = max(kwargs["n"]), max(kwargs["d"])
    width = max(resolve_width(w, r) for w in kwargs["width"] for r in kwargs["teacher_width"])
    if n * (d + width) > MAX_RUN_VALUES:
        raise ConfigError(
            f"grid.n: a run with n = {n}, d = {d}, width = {width} holds n·(d + width) = "
            f"{n * (d + width):,} values, above the limit of {MAX_RUN_VALUES:,}"
        )


def _check_widths(kwargs: Mapping[str, Any]) -> None:
    for r in kwargs["teacher_width"]:
        for w in kwargs["width"]:
            m = resolve_width(w, r)
            if m > LIMITS["width"][1]:
                raise ConfigError(f"grid.width: {_show(w)} at teacher_width {r} is {m}, "
                                  f"above the limit of {LIMITS['width'][1]:.0f}")
    if not any(_cell_widths(kwargs["width"], r) for r in kwargs["teacher_width"]):
        raise ConfigError(
            f"grid.width: no cell has width ≥ teacher_width (widths "
            f"{_show(list(kwargs['width']))}, teacher widths "
            f"{_show(list(kwargs['teacher_width']))})"
        )


def _check_keys(raw: Any) -> Mapping[str, Any]:
    """The raw document's grid table, once the document's and the grid's keys are known."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a table/object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"grid", "max_runs", "rules", "arm", *_SCALARS}, key=str)
    if unknown:
        raise ConfigError(
            f"unknown key {_name(unknown[0])!r}; expected grid, rules, arm, max_runs, "
            f"{', '.join(_SCALARS)}"
        )
    grid = raw.get("grid", {})
    if not isinstance(grid, Mapping):
        raise ConfigError(f"grid: expected a table, got {_show(grid)}")
    unknown = sorted(set(grid) - {*_GRID, "seeds"}, key=str)
    if unknown:
        raise ConfigError(
            f"grid.{_name(unknown[0])}: unknown key; expected {', '.join(_GRID)}, seeds"
        )
    return grid


_RULE_SCALARS = ("window", "rtol", "min_length")
_ARM_KEYS = ("name", "committee", "steps", *_GRID, "seeds")


def _rules(raw: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """The ``[rules]`` table: (window/rtol/min_length found there, the other non-defaults)."""
    table = raw.get("rules", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"rules: expected a table, got {_show(table)}")
    fields = {f.name: f.default for f in dataclasses.fields(PlateauRules)}
    unknown = sorted(set(table) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"rules.{_name(unknown[0])}: unknown rule; expected "
                          f"{', '.join(fields)}")
    for key in _RULE_SCALARS:
        if key in table and key in raw:
            raise ConfigError(f"rules.{key}: also given at the top level; give it once")
    for key, value in table.items():  # PlateauRules checks ranges; the type is checked here
        if isinstance(value, bool) or not _is_real(value):
            raise ConfigError(f"rules.{key}: expected a finite number, got {_show(value)}")
    try:
        PlateauRules(**table)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"rules: {_first_line(exc)}") from None
    scalars = {k: v for k, v in table.items() if k in _RULE_SCALARS}
    others = tuple(sorted((k, v) for k, v in table.items()
                          if k not in _RULE_SCALARS and v != fields[k]))
    return scalars, others


def _arms(raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``[[arm]]`` tables (keys checked, names unique), or [] when there are none."""
    arms = raw.get("arm", [])
    if isinstance(arms, Mapping):
        arms = [arms]
    if not isinstance(arms, list) or not all(isinstance(a, Mapping) for a in arms):
        raise ConfigError(f"arm: expected [[arm]] tables, got {_show(arms)}")
    names = []
    for i, arm in enumerate(arms):
        unknown = sorted(set(arm) - set(_ARM_KEYS), key=str)
        if unknown:
            raise ConfigError(f"arm[{i}].{_name(unknown[0])}: unknown key; expected "
                              f"{', '.join(_ARM_KEYS)}")
        name = arm.get("name", f"arm{i}")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise ConfigError(f"arm[{i}].name: expected a short name, got {_show(name)}")
        names.append(name)
    if len(set(names)) != len(names):
        raise ConfigError(f"arm: duplicate names in {_show(names)}")
    return list(arms)


def _arm_document(raw: Mapping[str, Any], arm: Mapping[str, Any]) -> dict[str, Any]:
    """The document of one arm: the top level with the arm's keys replaced."""
    doc = {k: v for k, v in raw.items() if k not in ("arm", "max_runs")}
    grid = dict(raw.get("grid", {}))
    for key, value in arm.items():
        if key in _GRID or key == "seeds":
            grid[key] = value
        elif key != "name":
            doc[key] = value
    doc["grid"] = grid
    return doc


def _grid_count(raw: Mapping[str, Any]) -> int:
    grid = raw.get("grid", {})
    return math.prod(_axis_length(key, grid[key]) if key in grid else 1
                     for key in (*_GRID, "seeds"))


@dataclass(frozen=True)
class StudyConfig:
    """A validated study: the grid values (tuples), the shared scalars, rules and arms.

    Build one with :func:`load_config` or :meth:`from_dict`; :meth:`runs` expands it.
    ``max_runs`` is the most runs :meth:`runs` expands (a safety limit, not part of the
    study: it does not enter run ids or the stored config).  With ``arms`` (name, config),
    the study is the union of the arms' runs and the top-level grid is only their base.
    """

    activation: tuple[str, ...] = ("erf",)
    teacher_width: tuple[int, ...] = (2,)
    width: tuple[int | str, ...] = (4,)
    d: tuple[int, ...] = (10,)
    n: tuple[int, ...] = (500,)
    noise: tuple[float, ...] = (0.0,)
    optimizer: tuple[str, ...] = ("gd",)
    lr: tuple[float | None, ...] = (None,)
    init_scale: tuple[float, ...] = (0.5,)
    batch_size: tuple[int | None, ...] = (None,)
    seeds: tuple[int, ...] = (0,)
    steps: int = 1000
    window: int = 100
    rtol: float = 1e-3
    min_length: int = 50
    committee: bool = False
    eval_every: int = _DEFAULT_EVAL_EVERY
    rules: tuple[tuple[str, Any], ...] = ()
    arms: tuple[tuple[str, StudyConfig], ...] = ()
    max_runs: int = MAX_RUNS

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, max_runs: int | None = None) -> StudyConfig:
        """Validate a parsed TOML/JSON document and build the config.

        The grid is counted (the product of its list lengths, summed over the arms) before
        anything is expanded.

        Args:
            raw: the document: a ``grid`` table, the scalars, optionally ``rules``, ``arm``
                and ``max_runs``.
            max_runs: the most runs allowed; overrides the document's ``max_runs`` (default
                :data:`MAX_RUNS`, 100,000).

        Raises:
            ConfigError: unknown keys, wrong types, empty lists, a number out of its range
                (:data:`LIMITS`), NaN or infinity, no cell with width ≥ teacher_width, a run
                too large (:data:`MAX_RUN_VALUES`), more runs than ``max_runs``, an unknown
                activation, optimizer or rule; the message names the key and the value.
        """
        _check_keys(raw)
        limit = _max_runs(raw, max_runs)
        arms = _arms(raw)
        documents = [_arm_document(raw, arm) for arm in arms]
        _check_count(sum(_grid_count(doc) for doc in documents) or _grid_count(raw), limit)
        base = cls._single(raw, limit)
        built = []
        for i, (arm, doc) in enumerate(zip(arms, documents, strict=True)):
            try:
                built.append((str(arm.get("name", f"arm{i}")), cls._single(doc, limit)))
            except ConfigError as exc:
                raise ConfigError(f"arm {arm.get('name', i)!s}: {exc}") from None
        return dataclasses.replace(base, arms=tuple(built))

    @classmethod
    def _single(cls, raw: Mapping[str, Any], limit: int) -> StudyConfig:
        """The config of one grid (no arms)."""
        grid = _check_keys(raw)
        rule_scalars, rules = _rules(raw)
        kwargs: dict[str, Any] = {}
        for key, (check, default) in _GRID.items():
            kwargs[key] = _grid_list(key, grid[key], check) if key in grid else default
        kwargs["seeds"] = _seeds(grid["seeds"]) if "seeds" in grid else (0,)
        scalars = {**raw, **rule_scalars}
        for key, (scheck, sdefault) in _SCALARS.items():
            kwargs[key] = scheck(key, scalars[key]) if key in scalars else sdefault
        _check_widths(kwargs)
        _check_run_size(kwargs)
        return cls(**kwargs, rules=rules, max_runs=limit)

    @property
    def n_runs(self) -> int:
        """The number of runs: per cell of (teacher width, width ≥ it) the other axes' product.

        With arms, the sum over the arms (a run two arms share counts twice here and runs
        once).
        """
        if self.arms:
            return sum(arm.n_runs for _, arm in self.arms)
        others = math.prod(len(getattr(self, key)) for key in (*_GRID, "seeds")
                           if key not in ("teacher_width", "width"))
        cells = sum(len(_cell_widths(self.width, r)) for r in self.teacher_width)
        return others * cells

    def to_dict(self) -> dict[str, Any]:
        """The config in the file layout (``grid`` table plus scalars), JSON-serialisable.

        ``rules`` and ``arm`` appear when set, ``max_runs`` only where it differs from
        :data:`MAX_RUNS`; each arm is written in full.
        """
        grid = {key: list(getattr(self, key)) for key in (*_GRID, "seeds")}
        out: dict[str, Any] = {"grid": grid, **{key: getattr(self, key) for key in _SCALARS}}
        # the minibatch settings only where used: the stored config of a full-batch study
        # stays what it was before they existed
        if self.batch_size == (None,):
            del grid["batch_size"]
        if self.eval_every == _DEFAULT_EVAL_EVERY:
            del out["eval_every"]
        if self.rules:
            out["rules"] = dict(self.rules)
        if self.arms:
            out["arm"] = []
            for name, arm in self.arms:
                doc = arm.to_dict()
                arm_grid = doc.pop("grid")
                if self.batch_size != (None,):  # an arm's full batch, written out
                    arm_grid.setdefault("batch_size", [None])
                out["arm"].append({"name": name, **arm_grid, "committee":
                                   doc["committee"], "steps": doc["steps"]})
        if self.max_runs != MAX_RUNS:
            out["max_runs"] = self.max_runs
        return out

    def runs(self) -> list[RunSpec]:
        """Expand the grid into run specs, in a fixed order (product of the grid lists).

        Cells with a width below the teacher width are left out, and a run that two arms
        (or two relative widths) share appears once.

        Raises:
            ConfigError: more runs than :attr:`max_runs` (counted before expanding).
        """
        _check_count(self.n_runs, self.max_runs)
        if self.arms:
            unique: dict[str, RunSpec] = {}
            for _, arm in self.arms:
                for spec in arm.runs():
                    unique.setdefault(spec.run_id, spec)
            return list(unique.values())
        keys = (*_GRID, "seeds")
        shared = {key: getattr(self, key) for key in _SCALARS}
        specs, seen = [], set()
        for combo in itertools.product(*(getattr(self, key) for key in keys)):
            values = dict(zip(keys, combo, strict=True))
            values["seed"] = values.pop("seeds")
            values["width"] = resolve_width(values["width"], values["teacher_width"])
            if values["batch_size"] is not None and values["batch_size"] >= values["n"]:
                values["batch_size"] = None  # a batch of all samples is full-batch training
            cell = tuple(values.values())
            if values["width"] < values["teacher_width"] or cell in seen:
                continue  # a cell below r*, or a width two expressions share
            seen.add(cell)
            specs.append(RunSpec(**values, **shared, rules=self.rules))
        return specs


def _parse_toml(text: str, path: Path) -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef, unused-ignore]
        except ModuleNotFoundError:
            raise ConfigError(
                f"{path}: reading TOML on Python 3.10 needs tomli (pip install tomli)"
            ) from None
    return _parsed(tomllib.loads, text, path, "TOML")


def _parse_json(text: str, path: Path) -> Any:
    return _parsed(json.loads, text, path, "JSON")


def _parsed(loads: Callable[[str], Any], text: str, path: Path, kind: str) -> Any:
    """``loads(text)``, its failures as one-line ConfigErrors naming the file."""
    try:
        return loads(text)
    except ValueError as exc:  # a decode error, or an integer too long to convert
        raise ConfigError(f"{path}: invalid {kind}: {_first_line(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid {kind}: nested too deeply") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def _read_text(path: Path) -> str:
    """The file's text, read at most :data:`MAX_CONFIG_BYTES` bytes far."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {_first_line(exc)}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: a config file is at most {MAX_CONFIG_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None


def load_config(path: str | Path, *, max_runs: int | None = None) -> StudyConfig:
    """Read a study configuration from a ``.toml`` or ``.json`` file.

    Args:
        path: the file; its suffix picks the format (anything but ``.json`` is read as TOML).
        max_runs: the most runs allowed (overrides the file's ``max_runs``; default
            :data:`MAX_RUNS`, 100,000).

    Returns:
        The validated :class:`StudyConfig`.

    Raises:
        ConfigError: a missing, unreadable or oversized file, invalid TOML or JSON, or a
            malformed configuration (see :meth:`StudyConfig.from_dict`).
    """
    path = Path(path)
    text = _read_text(path)
    raw = _parse_json(text, path) if path.suffix.lower() == ".json" else _parse_toml(text, path)
    return StudyConfig.from_dict(raw, max_runs=max_runs)
