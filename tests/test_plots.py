"""The plotting functions draw real saddlemap objects headlessly."""

from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection

import saddlemap as sm
from saddlemap import plots

A_STAR, W_STAR = 0.610515537972, 1.433931221329


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data() -> sm.Dataset:
    return sm.Dataset([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [2.0]], [-1, -1, 0, 0.5, 0.5, 0])


@pytest.fixture(scope="module")
def star() -> sm.TwoLayerNet:
    return sm.TwoLayerNet([A_STAR], [[W_STAR]], activation="tanh")


@pytest.fixture(scope="module")
def saddle_split(star: sm.TwoLayerNet) -> sm.TwoLayerNet:
    """λ = 2 on the splitting line: a strict saddle (THEORY §8)."""
    return sm.split(star, 0, [2.0, -1.0]).net


@pytest.fixture(scope="module")
def escaped(saddle_split: sm.TwoLayerNet, data: sm.Dataset) -> sm.EscapeResult:
    return sm.escape(saddle_split, data, steps=50)


@pytest.fixture(scope="module")
def problem() -> sm.TeacherStudent:
    return sm.teacher_student(teacher_width=2, width=3, d=2, n=40, seed=0)


@pytest.fixture(scope="module")
def trained(problem: sm.TeacherStudent) -> sm.TrainResult:
    return sm.train(problem.student, problem.data, steps=60, record_every=2)


def _save(ax, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    ax.figure.savefig(path)
    assert path.stat().st_size > 0


def _points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


# ------------------------------------------------------------------------------ neuron map
def test_neuron_map_1d_with_null_neuron(star, tmp_path):
    net = sm.null_copy(star, 0).net  # (a*, w*), (0, w*): one cluster, one null neuron
    net = sm.TwoLayerNet(
        torch.cat([net.a, torch.tensor([[0.0]])]), torch.cat([net.W, torch.tensor([[0.3]])]),
        activation="tanh",
    )
    ax = plots.plot_neuron_map(net)
    _save(ax, tmp_path, "neuron_map_1d")
    (scatter,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    offsets = np.asarray(scatter.get_offsets())
    assert len(offsets) == net.width == 3
    np.testing.assert_allclose(offsets[:, 0], net.W[:, 0].numpy())  # x = w
    np.testing.assert_allclose(offsets[:, 1], net.a[:, 0].numpy())  # y = a
    faces = scatter.get_facecolors()
    assert faces[0, 3] == 1.0 and faces[1, 3] == 0.0 and faces[2, 3] == 0.0  # open: null
    sizes = scatter.get_sizes()
    assert sizes[0] > sizes[1] == sizes[2]  # marker size grows with |a|
    assert "null" in ax.get_title()


def test_neuron_map_2d_plane_and_given_ax(trained, tmp_path):
    _fig, ax = plt.subplots()
    out = plots.plot_neuron_map(trained.net, ax=ax)
    assert out is ax
    assert _points(ax) == trained.net.width
    np.testing.assert_allclose(ax.collections[0].get_offsets(), trained.net.W.numpy())
    assert ax.get_xlabel() == "w₁" and ax.get_ylabel() == "w₂"
    _save(ax, tmp_path, "neuron_map_2d")


def test_neuron_map_pca_for_high_dimension_and_bias(tmp_path):
    ts = sm.teacher_student(teacher_width=2, width=5, d=4, n=20, seed=1, hidden_bias=True)
    reduction = sm.reduce(ts.student)
    ax = plots.plot_neuron_map(ts.student, reduction)
    assert _points(ax) == 5
    assert "PCA" in ax.get_title() and "D = 5" in ax.get_title()
    _save(ax, tmp_path, "neuron_map_pca")
    # deterministic: the same picture twice
    again = plots.plot_neuron_map(ts.student, reduction)
    np.testing.assert_array_equal(again.collections[0].get_offsets(),
                                  ax.collections[0].get_offsets())


# -------------------------------------------------------------------------------- spectrum
def test_spectrum_of_a_strict_saddle(saddle_split, data, tmp_path):
    spec = sm.spectrum(saddle_split, data)
    assert spec.inertia is not None
    ax = plots.plot_spectrum(spec)
    _save(ax, tmp_path, "spectrum")
    assert ax.get_yscale() == "symlog"
    band = [p for p in ax.patches if str(p.get_label()).startswith("zero band")]
    assert len(band) == 1
    assert _points(ax) == spec.eigenvalues.size == 4
    red = [c for c in ax.collections if str(c.get_label()).startswith("negative")]
    assert len(red) == 1 and len(red[0].get_offsets()) == spec.inertia.negative == 1
    pos, zero, neg = spec.inertia
    assert f"({pos}, {zero}, {neg})" in ax.get_title()


def test_spectrum_on_given_ax(star, data):
    _fig, ax = plt.subplots()
    assert plots.plot_spectrum(sm.spectrum(star, data), ax=ax) is ax
    assert not [c for c in ax.collections if str(c.get_label()).startswith("negative")]


# ---------------------------------------------------------------------------------- escape
def test_escape_path(escaped, tmp_path):
    assert escaped.method != "none" and escaped.path_t.size
    ax = plots.plot_escape(escaped)
    _save(ax, tmp_path, "escape")
    (line,) = [ln for ln in ax.lines if ln.get_label() == "R along the path"]
    np.testing.assert_allclose(line.get_xdata(), np.sort(escaped.path_t))
    assert min(line.get_ydata()) < 0.0
    step = [c for c in ax.collections if str(c.get_label()).startswith("step")]
    assert len(step) == 1
    np.testing.assert_allclose(step[0].get_offsets()[0, 0], escaped.step)
    assert escaped.method in ax.get_title()
    _fig, other = plt.subplots()
    assert plots.plot_escape(escaped, ax=other) is other


def test_escape_without_path(star, data):
    result = sm.escape(star, data, steps=1)  # a strict minimum: no way down
    assert result.method == "none"
    ax = plots.plot_escape(result)
    assert not ax.lines and ax.texts


# ----------------------------------------------------------------------- residual function
def test_residual_function_1d(star, data, tmp_path):
    ax = plots.plot_residual_function(star, data)
    _save(ax, tmp_path, "phi_1d")
    (_curve,) = [ln for ln in ax.lines if ln.get_label() == "φ(u)"]
    lo, hi = ax.get_xlim()
    assert lo < -W_STAR and hi > W_STAR  # the range covers the neuron and its twin
    (zeros,) = [c for c in ax.collections if str(c.get_label()).startswith("zeros")]
    zs = np.sort(np.asarray(zeros.get_offsets())[:, 0])
    np.testing.assert_allclose(zs, [-W_STAR, 0.0, W_STAR], atol=1e-5)  # THEORY §8
    (neurons,) = [c for c in ax.collections if c.get_label() == "neurons"]
    np.testing.assert_allclose(neurons.get_offsets(), [[W_STAR, 0.0]])


def test_residual_function_1d_span_and_ax(saddle_split, data):
    _fig, ax = plt.subplots()
    out = plots.plot_residual_function(saddle_split, data, ax=ax, span=(-3.0, 3.0))
    assert out is ax and ax.get_xlim() == (-3.0, 3.0)
    (neurons,) = [c for c in ax.collections if c.get_label() == "neurons"]
    assert len(neurons.get_offsets()) == saddle_split.width


def test_residual_function_2d(problem, trained, tmp_path):
    ax = plots.plot_residual_function(trained.net, problem.data)
    _save(ax, tmp_path, "phi_2d")
    (neurons,) = [c for c in ax.collections if c.get_label() == "neurons"]
    assert len(neurons.get_offsets()) == trained.net.width
    assert len(ax.figure.axes) == 2  # the colour bar


def test_residual_function_rejects_d3():
    ts = sm.teacher_student(teacher_width=1, width=2, d=3, n=10)
    with pytest.raises(ValueError, match="D = 3"):
        plots.plot_residual_function(ts.student, ts.data)


# ------------------------------------------------------------------------ branch hierarchy
def test_branch_hierarchy(star, data, tmp_path):
    cs = sm.CriticalSet(star, data)
    m = 3
    ax = plots.plot_branch_hierarchy(cs, m)
    _save(ax, tmp_path, "hierarchy")
    num_nodes = sum(len(cs.branches(w)) for w in range(cs.r, m + 1))
    assert _points(ax) == num_nodes == 6
    num_edges = sum(len(cs.hierarchy(w)) for w in range(cs.r + 1, m + 1))
    assert len(ax.lines) == num_edges
    labels = {t.get_text().splitlines()[0] for t in ax.texts}
    assert {"(1)", "(2)", "(1)+1∅", "(3)", "(2)+1∅", "(1)+2∅"} == labels
    by_verdict = {str(c.get_label()): len(c.get_offsets()) for c in ax.collections}
    # θ* blue; every branch with a null neuron is a saddle branch; the K ≻ 0 splits are mixed
    assert by_verdict == {"θ*": 1, "saddle branch": 3, "mixed": 2}
    expected = {(s.branch.sizes, s.branch.nulls): s.verdict for s in sm.saddle_branches(cs, m)}
    assert expected[((3,), 0)] == "mixed" and expected[((1,), 2)] == "saddle branch"
    _fig, other = plt.subplots()
    assert plots.plot_branch_hierarchy(cs, 2, ax=other) is other
    with pytest.raises(ValueError):
        plots.plot_branch_hierarchy(cs, 0)


# -------------------------------------------------------------------------------- training
def test_training(trained, tmp_path):
    hist = trained.history
    ax = plots.plot_training(hist, plateaus=[(10, 30, "plateau"), (40, 50, "second")])
    _save(ax, tmp_path, "training")
    assert ax.get_yscale() == "log"
    (twin,) = [other for other in ax.figure.axes if other is not ax]
    assert twin.get_yscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_xdata(), hist.step)
    np.testing.assert_allclose(twin.lines[0].get_ydata(), hist.grad_norm)
    assert len(ax.patches) == 2
    assert {t.get_text() for t in ax.texts} == {"plateau", "second"}
    _fig, given = plt.subplots()
    assert plots.plot_training(hist, ax=given) is given


# ------------------------------------------------------------------------------- laziness
def test_import_saddlemap_does_not_import_matplotlib():
    code = (
        "import sys, saddlemap, saddlemap.plots; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
