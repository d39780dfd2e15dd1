"""What a person sees: the demo end to end, its report in a browser, the display text."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import saddlemap as sm

CHROMIUM = "/usr/bin/chromium"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "saddlemap.cli", *args], capture_output=True,
                          text=True, timeout=300, env=ENV)


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo") / "report"
    out = cli("demo", "--out", str(folder), "--json", str(folder.parent / "demo.json"))
    assert out.returncode == 0, out.stderr
    (folder.parent / "stdout.txt").write_text(out.stdout)
    return folder


@pytest.mark.e2e
def test_demo_shows_a_narrower_saddle_escaped_by_orders_of_magnitude(demo_folder: Path) -> None:
    stdout = (demo_folder.parent / "stdout.txt").read_text()
    assert "(saddle of a narrower network)" in stdout.splitlines()[0]
    record = json.loads((demo_folder.parent / "demo.json").read_text())
    assert record["classification"]["kind"] == "strict saddle"
    assert record["critical_point"]["describes_model"]
    plateau_loss = record["loss"]
    assert plateau_loss > 1e-2  # far above the optimum R = 0 of the noiseless teacher
    end = record["escape"]["end_loss"]
    assert end < plateau_loss * 1e-6  # down by more than six orders of magnitude
    assert "saddle of a narrower network" in record["notes"][0]["text"]
    markdown = (demo_folder / "report.md").read_text()
    assert re.search(r"plateau 1: steps \d+–\d+, R = 0\.03\d*, verdict: saddle of a narrower "
                     r"network", markdown)


@pytest.mark.e2e
def test_demo_writes_a_compressed_model_of_the_minimal_width(demo_folder: Path) -> None:
    record = json.loads((demo_folder.parent / "demo.json").read_text())
    loaded = sm.load_model(demo_folder / "compressed.npz")
    r = record["reduction"]["minimal_width"]
    assert loaded.net.width == record["compression"]["width"] == r == 1
    assert record["model"]["width"] == 2
    # the written model is the one the report's numbers are about
    assert sm.loss(loaded.net, _demo_data()) == pytest.approx(
        record["compression"]["loss_after"], rel=1e-12)


def _demo_data() -> sm.Dataset:
    return sm.teacher_student(2, 2, d=8, n=400, activation="erf", seed=0,
                              orthonormal=True, init_scale=0.01).data


@pytest.mark.e2e
def test_demo_report_figures_and_answers(demo_folder: Path) -> None:
    for name in ("training", "neuron_map", "way_down", "escape", "spectrum"):
        assert (demo_folder / f"{name}.png").stat().st_size > 10_000, name
    markdown = (demo_folder / "report.md").read_text()
    sections = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert sections[0] == "Three answers" and "Evidence" in sections
    answers = re.findall(r"^(\d)\. \*\*(.+?)\*\*", markdown, flags=re.M)[:3]
    assert [n for n, _ in answers] == ["1", "2", "3"]
    assert answers[0][1].startswith("Minimal width: r = 1 of m = 2")
    assert "1 cluster(s)" in answers[1][1] and "ΔR = -" in answers[2][1]


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True,
                          timeout=120)


#: Run in the page after load: each image's decoded size, then the answers' text.
PROBE = """
<script>
window.addEventListener('load', () => {
  const out = document.createElement('pre');
  out.id = 'probe';
  const imgs = [...document.images].map(i => i.complete && i.naturalWidth > 0);
  const answers = [...document.querySelectorAll('ol.answers > li')].map(li => li.textContent);
  out.textContent = JSON.stringify({images: imgs, answers: answers});
  document.body.appendChild(out);
});
</script>
"""


@pytest.mark.e2e
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")
def test_demo_report_renders_in_a_browser(demo_folder: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text((demo_folder / "report.html").read_text().replace("</body>",
                                                                        PROBE + "</body>"))
    out = _chromium("--dump-dom", "--virtual-time-budget=5000", page.as_uri(),
                    profile=tmp_path / "profile")
    assert out.returncode == 0, out.stderr[-2000:]
    match = re.search(r'<pre id="probe">(.+?)</pre>', out.stdout, flags=re.S)
    assert match, out.stdout[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(probe["images"]) >= 5 and all(probe["images"]), probe["images"]
    answers = probe["answers"]
    assert len(answers) == 3
    assert answers[0].startswith("Minimal width: r = 1 of m = 2")
    assert answers[1].startswith("Which parameters keep the output")
    assert answers[2].startswith("The way down: ΔR =")
    shot = tmp_path / "shot.png"
    out = _chromium(f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri(),
                    profile=tmp_path / "profile2")
    assert out.returncode == 0 and shot.stat().st_size > 10_000


# ------------------------------------------------------------------------------ display
CASES = [(2, 1), (7, 3), (13, 5)]


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_spectrum_zero_tolerance_multiplies_out(n: int, seed: int) -> None:
    prob = sm.teacher_student(1, 2, d=2, n=n, activation="tanh", seed=seed)
    spec = sm.spectrum(prob.student, prob.data)
    tol, rtol, scale = map(float, re.search(
        r"zero tol (\S+) \(= (\S+) × (\S+)\)", spec.summary()).groups())  # type: ignore[union-attr]
    # four significant digits each: the product agrees to rounding of the factors
    assert math.isclose(rtol * scale, tol, rel_tol=2e-3)
    assert math.isclose(tol, spec.zero_tol, rel_tol=1e-3)


def test_cli_state_dict_error_names_the_option(tmp_path: Path) -> None:
    net = sm.TwoLayerNet([0.3, -0.2], [[1.0], [0.5]], activation="tanh")
    path = tmp_path / "state.pt"
    torch.save(net.to_torch().state_dict(), path)
    data = tmp_path / "data.npz"
    np.savez(data, X=np.linspace(-1, 1, 7)[:, None], y=np.zeros(7))
    out = cli("diagnose", str(path), str(data))
    assert out.returncode != 0
    assert "--activation" in out.stderr and "activation=" not in out.stderr

