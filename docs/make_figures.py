"""Draw the gallery's figures into docs/figures/ (run from the repository root).

    OMP_NUM_THREADS=1 python docs/make_figures.py

The demo's report figures come from ``saddlemap.run_demo`` and ``save_report``; the neuron
maps of 2 to 200 neurons from clustered networks built here; the worked example's from
docs/theory.md §8.  About 20 s on one core.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch

import saddlemap as sm

OUT = Path(__file__).resolve().parent / "figures"
A_STAR, W_STAR = 0.610515537972, 1.433931221329


def _save(ax: object, name: str) -> None:
    fig = ax.figure  # type: ignore[attr-defined]
    fig.savefig(OUT / f"{name}.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def demo_figures() -> None:
    """The report figures of ``saddlemap demo``."""
    demo = sm.run_demo()
    with tempfile.TemporaryDirectory() as tmp:
        paths = sm.save_report(demo.report, tmp, monitor=demo.monitor)
        for name in ("training", "neuron_map", "way_down", "escape", "spectrum"):
            shutil.copy(paths[name], OUT / f"demo-{name.replace('_', '-')}.png")


def neuron_maps() -> None:
    """Neuron maps of 2, 12, 60 and 200 neurons in 1, 4, 8 and 40 clusters."""
    for m, r in ((2, 1), (12, 4), (60, 8), (200, 40)):
        gen = torch.Generator().manual_seed(m)
        W = torch.randn(r, 6, generator=gen, dtype=torch.float64)[torch.arange(m) % r]
        a = torch.randn(m, 1, generator=gen, dtype=torch.float64)
        if m > 2:  # one null neuron somewhere else
            a[-1], W[-1] = 0.0, torch.randn(6, generator=gen, dtype=torch.float64)
        net = sm.TwoLayerNet(a, W, activation="tanh")
        red = sm.reduce(net, torch.randn(40, 6, generator=gen, dtype=torch.float64))
        _, ax = plt.subplots(figsize=(6.0, 4.5) if m <= 50 else (7.5, 6.0))
        _save(sm.plot_neuron_map(net, red, ax=ax), f"neuron-map-{m}")


def worked_example() -> None:
    """Branches, φ, descent, escape and spectrum of the worked example (theory §8)."""
    data = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
    star = sm.TwoLayerNet([A_STAR], [[W_STAR]], activation="tanh")
    saddle = sm.TwoLayerNet([2 * A_STAR, -A_STAR], [[W_STAR], [W_STAR]], activation="tanh")
    cs = sm.CriticalSet(star, data)
    verdicts = {s.branch: s.verdict for m in (2, 3) for s in sm.saddle_branches(cs, m)}
    _save(sm.plot_branch_hierarchy(cs, 3, verdicts, star_minimum=True), "worked-branches")
    zero_set = sm.ZeroSet(sm.residual_function(saddle, data))
    _save(sm.plot_residual_function(saddle, zero_set, zeros=zero_set.zeros_1d()),
          "worked-residual-function")
    _save(sm.plot_descent(sm.negative_curvature_step(saddle, data)), "worked-way-down")
    _save(sm.plot_escape(sm.escape(saddle, data, steps=200)), "worked-escape")
    _save(sm.plot_spectrum(sm.spectrum(saddle, data)), "worked-spectrum")


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    demo_figures()
    neuron_maps()
    worked_example()
    print("\n".join(sorted(p.name for p in OUT.glob("*.png"))))
