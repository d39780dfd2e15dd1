"""The documentation site: its sources cover the API and its figures; it builds with -W."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import saddlemap as sm

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_api_reference_lists_every_public_name_once() -> None:
    listed = re.findall(r"^   (\w+)$", (DOCS / "api.md").read_text(), flags=re.M)
    assert sorted(listed) == sorted(set(listed))
    assert set(listed) == set(sm.__all__) - {"__version__"}


@pytest.mark.parametrize("page", ["gallery.md", "demo.md", "index.md"])
def test_every_figure_a_page_shows_is_in_the_repository(page: str) -> None:
    shown = re.findall(r"!\[[^]]*\]\(([^)]+)\)", (DOCS / page).read_text())
    assert shown or page == "index.md"
    for path in shown:
        assert (DOCS / path).stat().st_size > 10_000, path


def _missing_docs_tools() -> str | None:
    for module in ("sphinx", "myst_nb", "furo", "ipykernel"):
        if importlib.util.find_spec(module) is None:
            return module
    return None


@pytest.mark.e2e
@pytest.mark.skipif(_missing_docs_tools() is not None,
                    reason="needs the docs extra: pip install -e '.[docs]'")
def test_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=900, env=env, cwd=DOCS.parent)
    assert out.returncode == 0, out.stderr[-4000:]
    html = tmp_path / "html"
    # the tutorials ran: their printed answers are in the pages
    assert "Smaller model:" in (html / "tutorials" / "torch-model.html").read_text()
    assert "saddle branch" in (html / "tutorials" / "worked-example.html").read_text()
    assert "saddle of a narrower network" in (html / "tutorials" / "study.html").read_text()
    # the API reference has a page per public name, with its docstring
    page = (html / "generated" / "saddlemap.diagnose.html").read_text()
    assert "max_loss_increase" in page
    assert len(list((html / "generated").glob("saddlemap.*.html"))) == len(sm.__all__) - 1
    assert (html / "theory.html").exists() and (html / "gallery.html").exists()
