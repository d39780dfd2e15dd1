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
    seeds = 5            # a count (seeds 0..4) or a list of seeds

Every grid key and scalar is optional (defaults below); a scalar in place of a grid list
stands for a one-element list.  :meth:`StudyConfig.runs` expands the grid into
:class:`RunSpec` objects, each with a stable :attr:`RunSpec.run_id`.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..activations import available_activations
from ..errors import SaddlemapError

__all__ = ["ConfigError", "RunSpec", "StudyConfig", "load_config"]

OPTIMIZERS = ("gd", "adam", "lbfgs")


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
        optimizer: ``"gd"``, ``"adam"`` or ``"lbfgs"``.
        lr: step size, or None for the optimizer's default.
        init_scale: student initialisation scale.
        seed: seed of the problem (teacher, data, student).
        steps: training steps.
        window: PlateauMonitor window.
        rtol: PlateauMonitor relative tolerance.
        min_length: PlateauMonitor minimum plateau length.
        committee: the soft committee machine of Saad & Solla: an orthonormal teacher with
            unit output weights, and a student whose output weights are fixed at 1.
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

    @property
    def ratio(self) -> float:
        """The overparameterisation ratio m / r*."""
        return self.width / self.teacher_width

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def canonical_json(self) -> str:
        """The spec as canonical JSON (sorted keys, no spaces, floats as floats)."""
        d = self.to_dict()
        for key in ("noise", "init_scale", "rtol"):
            d[key] = float(d[key])
        if d["lr"] is not None:
            d["lr"] = float(d["lr"])
        if not d["committee"]:
            del d["committee"]  # ids of ordinary runs do not depend on the option
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        """A stable id: the first 16 hex digits of the SHA-256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        """Rebuild a spec from :meth:`to_dict` output."""
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


# ---------------------------------------------------------------------------- validation


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int(minimum: int) -> Callable[[str, Any], int]:
    def check(key: str, v: Any) -> int:
        if not _is_int(v):
            raise ConfigError(f"{key}: expected an integer, got {v!r}")
        if v < minimum:
            raise ConfigError(f"{key}: must be ≥ {minimum}, got {v}")
        return int(v)

    return check


def _real(*, positive: bool) -> Callable[[str, Any], float]:
    def check(key: str, v: Any) -> float:
        if not _is_real(v):
            raise ConfigError(f"{key}: expected a finite number, got {v!r}")
        if v < 0 or (positive and v == 0):
            raise ConfigError(f"{key}: must be {'> 0' if positive else '≥ 0'}, got {v}")
        return float(v)

    return check


def _choice(choices: Callable[[], list[str]] | tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(key: str, v: Any) -> str:
        options = choices() if callable(choices) else list(choices)
        if not isinstance(v, str):
            raise ConfigError(f"{key}: expected a string, got {v!r}")
        if v.lower() not in options:
            raise ConfigError(f"{key}: unknown value {v!r}; choose from {', '.join(options)}")
        return v.lower()

    return check


def _lr(key: str, v: Any) -> float | None:
    if v is None or (isinstance(v, str) and v.lower() == "auto"):
        return None
    return _real(positive=True)(key, v)


_GRID: dict[str, tuple[Callable[[str, Any], Any], tuple[Any, ...]]] = {
    "activation": (_choice(available_activations), ("erf",)),
    "teacher_width": (_int(1), (2,)),
    "width": (_int(1), (4,)),
    "d": (_int(1), (10,)),
    "n": (_int(1), (500,)),
    "noise": (_real(positive=False), (0.0,)),
    "optimizer": (_choice(OPTIMIZERS), ("gd",)),
    "lr": (_lr, (None,)),
    "init_scale": (_real(positive=True), (0.5,)),
}
def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: expected true or false, got {v!r}")
    return v


_SCALARS: dict[str, tuple[Callable[[str, Any], Any], Any]] = {
    "steps": (_int(1), 1000),
    "window": (_int(1), 100),
    "rtol": (_real(positive=True), 1e-3),
    "min_length": (_int(1), 50),
    "committee": (_bool, False),
}


def _grid_list(key: str, value: Any, check: Callable[[str, Any], Any]) -> tuple[Any, ...]:
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values:
        raise ConfigError(f"grid.{key}: empty list")
    out = tuple(check(f"grid.{key}", v) for v in values)
    if len(set(out)) != len(out):
        raise ConfigError(f"grid.{key}: duplicate values in {list(values)!r}")
    return out


def _seeds(value: Any) -> tuple[int, ...]:
    if _is_int(value):
        if value < 1:
            raise ConfigError(f"grid.seeds: a seed count must be ≥ 1, got {value}")
        return tuple(range(value))
    if not isinstance(value, list | tuple):
        raise ConfigError(f"grid.seeds: expected a count or a list of integers, got {value!r}")
    return _grid_list("seeds", value, _int(0))


@dataclass(frozen=True)
class StudyConfig:
    """A validated study: the grid values (tuples) and the shared scalars.

    Build one with :func:`load_config` or :meth:`from_dict`; :meth:`runs` expands it.
    """

    activation: tuple[str, ...] = ("erf",)
    teacher_width: tuple[int, ...] = (2,)
    width: tuple[int, ...] = (4,)
    d: tuple[int, ...] = (10,)
    n: tuple[int, ...] = (500,)
    noise: tuple[float, ...] = (0.0,)
    optimizer: tuple[str, ...] = ("gd",)
    lr: tuple[float | None, ...] = (None,)
    init_scale: tuple[float, ...] = (0.5,)
    seeds: tuple[int, ...] = (0,)
    steps: int = 1000
    window: int = 100
    rtol: float = 1e-3
    min_length: int = 50
    committee: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StudyConfig:
        """Validate a parsed TOML/JSON document and build the config.

        Raises:
            ConfigError: unknown keys, wrong types, empty lists, width < teacher_width,
                unknown activation or optimizer; the message names the key.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError(f"config: expected a table/object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - {"grid", *_SCALARS})
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r}; expected grid, {', '.join(_SCALARS)}")
        grid = raw.get("grid", {})
        if not isinstance(grid, Mapping):
            raise ConfigError(f"grid: expected a table, got {grid!r}")
        unknown = sorted(set(grid) - {*_GRID, "seeds"})
        if unknown:
            raise ConfigError(f"grid.{unknown[0]}: unknown key; expected {', '.join(_GRID)}, seeds")
        kwargs: dict[str, Any] = {}
        for key, (check, default) in _GRID.items():
            kwargs[key] = _grid_list(key, grid[key], check) if key in grid else default
        kwargs["seeds"] = _seeds(grid["seeds"]) if "seeds" in grid else (0,)
        for key, (scheck, sdefault) in _SCALARS.items():
            kwargs[key] = scheck(key, raw[key]) if key in raw else sdefault
        if min(kwargs["width"]) < max(kwargs["teacher_width"]):
            raise ConfigError(
                f"grid.width: every width must be ≥ every teacher_width, got width "
                f"{min(kwargs['width'])} < teacher_width {max(kwargs['teacher_width'])}"
            )
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The config in the file layout (``grid`` table plus scalars), JSON-serialisable."""
        grid = {key: list(getattr(self, key)) for key in (*_GRID, "seeds")}
        return {"grid": grid, **{key: getattr(self, key) for key in _SCALARS}}

    def runs(self) -> list[RunSpec]:
        """Expand the grid into run specs, in a fixed order (product of the grid lists)."""
        keys = (*_GRID, "seeds")
        specs = []
        for combo in itertools.product(*(getattr(self, key) for key in keys)):
            values = dict(zip(keys, combo, strict=True))
            values["seed"] = values.pop("seeds")
            specs.append(RunSpec(**values, **{key: getattr(self, key) for key in _SCALARS}))
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
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_config(path: str | Path) -> StudyConfig:
    """Read a study configuration from a ``.toml`` or ``.json`` file.

    Args:
        path: the file; its suffix picks the format (anything but ``.json`` is read as TOML).

    Returns:
        The validated :class:`StudyConfig`.

    Raises:
        ConfigError: a missing or unreadable file, invalid TOML or JSON, or a malformed
            configuration (see :meth:`StudyConfig.from_dict`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    else:
        raw = _parse_toml(text, path)
    return StudyConfig.from_dict(raw)
