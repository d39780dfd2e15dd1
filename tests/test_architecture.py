"""The package's shape: layers, imports at the top, one error hierarchy, one public list."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import saddlemap as sm

PACKAGE = Path(sm.__file__).parent
#: Imported inside functions on purpose: optional extras (mpl_toolkits ships with
#: matplotlib), and tomli on Python 3.10.
OPTIONAL = {"matplotlib", "mpl_toolkits", "ray", "pandas", "pyarrow", "sklearn",
            "safetensors", "skops", "tomllib", "tomli", "joblib"}
#: The command line imports each subcommand's modules in that subcommand (start-up time).
LAZY_BY_DESIGN = {"cli.py"}


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "_version.py")


def _function_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["." * node.level + (node.module or "")]
            else:
                continue
            found += [f"{path.name}:{node.lineno} {n}" for n in names
                      if n.split(".")[0] not in OPTIONAL]
    return found


def test_no_import_inside_a_function_except_optional_dependencies() -> None:
    offenders = [hit for p in _sources() if p.name not in LAZY_BY_DESIGN
                 for hit in _function_imports(p)]
    assert offenders == []


def test_every_raise_of_a_user_error_is_a_saddlemap_error() -> None:
    plain = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                name = getattr(node.exc.func, "id", None)
                if name in ("ValueError", "TypeError"):
                    plain.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}")
    assert plain == []


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([str(lint)], capture_output=True, text=True, env=env,
                         cwd=PACKAGE.parents[1])
    assert out.returncode == 0, out.stdout + out.stderr


def test_public_names_come_from_one_list() -> None:
    # ``__all__`` is read from the TYPE_CHECKING block, so each public name has a module
    from saddlemap._lazy import public_names

    where = public_names(sm.__file__)
    assert set(sm.__all__) == {"__version__", *where}
    for name, module in where.items():
        assert getattr(sm, name) is getattr(__import__(f"saddlemap.{module}",
                                                       fromlist=[name]), name)
