"""Sphinx configuration of the saddlemap documentation.

Build from the repository root (the tutorials are executed during the build)::

    pip install -e ".[docs]"
    sphinx-build -W -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import saddlemap  # noqa: E402

project = "saddlemap"
author = "the saddlemap authors"
copyright = "the saddlemap authors"
version = release = saddlemap.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
# docs/poc/ holds the PoC study's generated tables and figures, shown from poc-study.md.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "poc/**"]
root_doc = "index"

# MyST: headings get anchors so theory sections can be linked (theory.md#8-worked-example...).
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Tutorials run at build time, each in a few seconds; a failing cell fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 120
nb_execution_raise_on_error = True
nb_merge_streams = True

# API reference from the docstrings (Google style).
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # Attributes as fields: no second description of dataclass fields

html_theme = "furo"
html_title = f"saddlemap {release}"


# ---------------------------------------------------------------- docstrings as plain text
# The docstrings are written for people reading the source: |x| is an absolute value and
# ‖·‖ a norm, not reStructuredText substitutions, and a name like ``coefs_`` is not a link.
_LITERAL = re.compile(r"(``.*?``|`[^`]*`)")


def _plain(line: str) -> str:
    parts = _LITERAL.split(line)
    for i in range(0, len(parts), 2):
        text = parts[i].replace("|", r"\|")
        parts[i] = re.sub(r"(?<=\w)_(?=\W|$)", r"\_", text)
    return "".join(parts)


def _join_wrapped_names(app, what, name, obj, options, lines):
    """Join an argument-name list wrapped over two lines ("a, b," then "    c: text")."""
    i = 0
    while i + 1 < len(lines):
        here, nxt = lines[i], lines[i + 1]
        deeper = len(nxt) - len(nxt.lstrip()) > len(here) - len(here.lstrip())
        if here.rstrip().endswith(",") and ":" not in here and deeper and ": " in nxt:
            lines[i] = here.rstrip() + " " + nxt.strip()
            del lines[i + 1]
            continue
        i += 1


def _escape(app, what, name, obj, options, lines):
    """Escape | and trailing underscores outside literals and doctest blocks."""
    in_code = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(">>>") or stripped.endswith("::"):
            in_code = True
        elif not stripped:
            in_code = False
        if not in_code:
            lines[i] = _plain(line)


def setup(app):
    """Register the docstring filters (before and after napoleon's own)."""
    app.connect("autodoc-process-docstring", _join_wrapped_names, priority=400)
    app.connect("autodoc-process-docstring", _escape, priority=600)
