"""The public names of the package, read from its ``if TYPE_CHECKING:`` import block.

The block in ``saddlemap/__init__.py`` is what type checkers and readers see; parsing it
once at import time gives the lazy loader its name → submodule map, so the public API is
written down in one place.
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["public_names"]


def public_names(init_file: str) -> dict[str, str]:
    """Map each name imported under ``if TYPE_CHECKING:`` in ``init_file`` to its submodule."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    where: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and stmt.module:
                for alias in stmt.names:
                    where[alias.asname or alias.name] = stmt.module
    return where
