"""The README's set-up commands and CI stay in step, and the examples run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()
    assert "pytest" in commands[1]
    assert commands[0].endswith("saddlemap demo")


#: The guide pages the README points to, in reading order: their examples continue the
#: README's (one script, run in this order).
GUIDE = [ROOT / "docs" / f"{name}.md" for name in (
    "trace-and-density", "critical-points", "critical-set", "saddles", "deep-mlps", "analysis",
    "security", "testing", "monitor-and-studies", "performance")]


def test_the_readme_points_to_every_guide_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in GUIDE:
        assert f"](docs/{page.name})" in readme, page.name


def test_subprocesses_run_on_one_thread() -> None:
    code = "import torch; print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_every_cited_theory_section_exists() -> None:
    sections = set(re.findall(r"^##+ (\d+(?:\.\d+)?)", (ROOT / "docs" / "theory.md").read_text(),
                              re.M))
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").glob("*.py"), ROOT / "README.md",
             *GUIDE]
    cited = {s for f in files for s in re.findall(r"docs/theory\.md §(\d+(?:\.\d+)?)",
                                                   f.read_text())}
    assert len(cited) >= 10 and cited <= sections


@pytest.mark.e2e
def test_quickstart_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True, text=True, check=True, timeout=300,
    )
    assert re.search(r"inertia \(n\+, n0, n-\): \(\d+, \d+, \d+\)", out.stdout)


@pytest.mark.e2e
def test_readme_python_examples_run_in_order() -> None:
    blocks = [block for page in (ROOT / "README.md", *GUIDE)
              for block in re.findall(r"```python\n(.+?)\n```", page.read_text(), re.S)]
    assert len(blocks) >= 8
    script = "\n".join(blocks)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "strict saddle" in out.stdout and "local minimum" in out.stdout
