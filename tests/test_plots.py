"""The plotting functions draw real saddlemap objects headlessly."""

from __future__ import annotations

import re
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
from saddlemap.saddles import branch_verdict

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
    """λ = 2 on the splitting line: a strict saddle (docs/theory.md §8)."""
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
    ax = plots.plot_neuron_map(net, sm.reduce(net))
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
    out = plots.plot_neuron_map(trained.net, sm.reduce(trained.net), ax=ax)
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


def test_neuron_map_rejects_a_reduction_of_another_width(star, trained):
    with pytest.raises(sm.OptionError, match="width"):
        plots.plot_neuron_map(star, sm.reduce(trained.net))


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
    assert escaped.method is not sm.EscapeMethod.NONE and escaped.path_t.size
    ax = plots.plot_escape(escaped)
    _save(ax, tmp_path, "escape")
    (line,) = [ln for ln in ax.lines if ln.get_label() == "R along the path"]
    np.testing.assert_allclose(line.get_xdata(), np.sort(escaped.path_t))
    assert min(line.get_ydata()) < 0.0
    step = [c for c in ax.collections if str(c.get_label()).startswith("step")]
    assert len(step) == 1
    np.testing.assert_allclose(step[0].get_offsets()[0, 0], escaped.step)
    assert escaped.method.value in ax.get_title()
    _fig, other = plt.subplots()
    assert plots.plot_escape(escaped, ax=other) is other


def test_escape_without_path(star, data):
    result = sm.escape(star, data, steps=1)  # a strict minimum: no way down
    assert result.method is sm.EscapeMethod.NONE
    ax = plots.plot_escape(result)
    assert not ax.lines and ax.texts


# ----------------------------------------------------------------------- residual function
def _zero_set(net: sm.TwoLayerNet, data: sm.Dataset) -> sm.ZeroSet:
    return sm.ZeroSet(sm.residual_function(net, data))


def test_residual_function_1d(star, data, tmp_path):
    zero_set = _zero_set(star, data)
    ax = plots.plot_residual_function(star, zero_set, zeros=zero_set.zeros_1d())
    _save(ax, tmp_path, "phi_1d")
    (_curve,) = [ln for ln in ax.lines if ln.get_label() == "φ(u)"]
    lo, hi = ax.get_xlim()
    assert lo < -W_STAR and hi > W_STAR  # the range covers the neuron and its twin
    (zeros,) = [c for c in ax.collections if str(c.get_label()).startswith("zeros")]
    zs = np.sort(np.asarray(zeros.get_offsets())[:, 0])
    np.testing.assert_allclose(zs, [-W_STAR, 0.0, W_STAR], atol=1e-5)  # docs/theory.md §8
    faces = zeros.get_facecolors()[np.argsort(np.asarray(zeros.get_offsets())[:, 0])]
    assert list(faces[:, 3]) == [1.0, 0.0, 1.0]  # ±w* singular (filled), 0 regular (open)
    assert "3 zero(s)" in ax.get_title()
    (neurons,) = [c for c in ax.collections if c.get_label() == "neurons"]
    np.testing.assert_allclose(neurons.get_offsets(), [[W_STAR, 0.0]])
    (curve,) = [ln for ln in ax.lines if ln.get_label() == "φ(u)"]
    u = torch.as_tensor(np.asarray(curve.get_xdata())[:, None])
    np.testing.assert_allclose(curve.get_ydata(), zero_set.residual.phi(u)[:, 0].numpy())


def test_residual_function_1d_span_and_ax(saddle_split, data):
    zero_set = _zero_set(saddle_split, data)
    _fig, ax = plt.subplots()
    out = plots.plot_residual_function(saddle_split, zero_set, ax=ax, span=(-3.0, 3.0))
    assert out is ax and ax.get_xlim() == (-3.0, 3.0)
    (neurons,) = [c for c in ax.collections if c.get_label() == "neurons"]
    assert len(neurons.get_offsets()) == saddle_split.width
    assert not [c for c in ax.collections if str(c.get_label()).startswith("zeros")]
    # zeros outside the span are not drawn, and the title counts those drawn
    _fig, narrow = plt.subplots()
    plots.plot_residual_function(saddle_split, zero_set, zeros=zero_set.zeros_1d(),
                                 ax=narrow, span=(-0.5, 0.5))
    (zeros,) = [c for c in narrow.collections if str(c.get_label()).startswith("zeros")]
    np.testing.assert_allclose(zeros.get_offsets(), [[0.0, 0.0]], atol=1e-8)
    assert "1 zero(s)" in narrow.get_title()
    with pytest.raises(sm.OptionError, match="span"):
        plots.plot_residual_function(saddle_split, zero_set, span=(1.0, -1.0))


def test_residual_function_2d(problem, trained, tmp_path):
    zero_set = _zero_set(trained.net, problem.data)
    ax = plots.plot_residual_function(trained.net, zero_set)
    _save(ax, tmp_path, "phi_2d")
    (neurons,) = [c for c in ax.collections if c.get_label() == "neurons"]
    assert len(neurons.get_offsets()) == trained.net.width
    assert len(ax.figure.axes) == 2  # the colour bar
    # zeros handed in are marked; the plot does not search for them
    points = zero_set.sample(num_starts=8, radius=1.0)
    lo, hi = ax.get_xlim()
    inside = [p for p in points if all(lo <= c <= hi for c in p.u)]
    marked = plots.plot_residual_function(trained.net, zero_set, zeros=points)
    (zeros,) = [c for c in marked.collections if str(c.get_label()).startswith("zeros")]
    assert len(zeros.get_offsets()) == len(inside) > 0


def test_residual_function_rejects_d3_and_a_mismatched_zero_set(star, data, problem, trained):
    ts = sm.teacher_student(teacher_width=1, width=2, d=3, n=10)
    with pytest.raises(sm.OptionError, match="D = 3"):
        plots.plot_residual_function(ts.student, _zero_set(ts.student, ts.data))
    with pytest.raises(sm.OptionError, match="D = 2"):  # φ of 2-D u, a network of D = 1
        plots.plot_residual_function(star, _zero_set(trained.net, problem.data))
    one_d = _zero_set(star, data).zeros_1d()
    with pytest.raises(sm.OptionError, match="1-dimensional"):
        plots.plot_residual_function(trained.net, _zero_set(trained.net, problem.data),
                                     zeros=one_d)


# ------------------------------------------------------------------------ branch hierarchy
def _verdicts(cs: sm.CriticalSet, m: int) -> dict:
    """Every branch's verdict with a checked witness, widths r..m (θ* has none)."""
    return {s.branch: s.verdict for w in range(cs.r, m + 1) for s in sm.saddle_branches(cs, w)}


def test_branch_hierarchy(star, data, tmp_path):
    cs = sm.CriticalSet(star, data)
    m = 3
    verdicts = _verdicts(cs, m)
    ax = plots.plot_branch_hierarchy(cs, m, verdicts, star_minimum=True)
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
    expected = {(b.sizes, b.nulls): v.value for b, v in verdicts.items()}
    assert expected[((3,), 0)] == "mixed" and expected[((1,), 2)] == "saddle branch"
    colors = {str(c.get_label()): tuple(c.get_facecolors()[0]) for c in ax.collections}
    for key in (plots.STAR_NODE, sm.BranchVerdict.SADDLE_BRANCH, sm.BranchVerdict.MIXED):
        label = key if isinstance(key, str) else key.value
        assert colors[label] == matplotlib.colors.to_rgba(plots.VERDICT_COLORS[key])
    assert "not a strict minimum" not in ax.get_title()
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {"split", "null", "meet"} <= legend
    _fig, other = plt.subplots()
    assert plots.plot_branch_hierarchy(cs, 2, verdicts, ax=other) is other
    with pytest.raises(sm.OptionError):
        plots.plot_branch_hierarchy(cs, 0, verdicts)


def test_branch_hierarchy_draws_the_verdicts_given(star, data):
    cs = sm.CriticalSet(star, data)
    # the Fukumizu–Amari rule alone, computed by the caller
    rules = sm.splitting_rule(star, data)
    verdicts = {b: branch_verdict(b, rules, False)[0]
                for w in range(cs.r, 3) for b in cs.branches(w)}
    undetermined = {b: sm.BranchVerdict.UNDETERMINED for b in verdicts}
    ax = plots.plot_branch_hierarchy(cs, 2, undetermined, star_minimum=False)
    by_verdict = {str(c.get_label()): len(c.get_offsets()) for c in ax.collections}
    assert by_verdict == {"θ*": 1, "undetermined": 2}
    assert "(θ* not a strict minimum)" in ax.get_title()
    missing = {b: v for b, v in verdicts.items() if b.nulls == 0}
    with pytest.raises(sm.OptionError, match=r"\(1\)\+1∅"):
        plots.plot_branch_hierarchy(cs, 2, missing)


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


# ------------------------------------------------------------------ finished results only
#: What the plots must never run: analysis belongs to the caller (module, function).
ANALYSIS = [
    ("saddlemap.reduction", "reduce"),
    ("saddlemap.critical_points", "certify"),
    ("saddlemap.saddles", "certify"),
    ("saddlemap.saddles", "classify"),
    ("saddlemap.saddles", "splitting_rule"),
    ("saddlemap.saddles", "saddle_branches"),
    ("saddlemap.saddles", "branch_verdict"),
    ("saddlemap.derivatives", "residual_function"),
    ("saddlemap.spectral", "spectrum"),
    ("saddlemap.escapes", "escape"),
    ("saddlemap.zero_set.ZeroSet", "zeros_1d"),
    ("saddlemap.zero_set.ZeroSet", "sample"),
    ("saddlemap.zero_set.ZeroSet", "project"),
    ("saddlemap.zero_set.ZeroSet", "contains"),
    ("saddlemap.zero_set.ZeroSet", "nearest_to_origin"),
]


def test_plots_draw_given_results_without_recomputing(star, saddle_split, data, escaped,
                                                      trained, problem, monkeypatch):
    net2 = trained.net
    reduction, reduction2 = sm.reduce(saddle_split), sm.reduce(net2)
    spec = sm.spectrum(saddle_split, data)
    zero_set, zero_set2 = _zero_set(saddle_split, data), _zero_set(net2, problem.data)
    zeros = zero_set.zeros_1d()
    cs = sm.CriticalSet(star, data)
    verdicts = _verdicts(cs, 3)

    def refuse(*args, **kwargs):
        raise AssertionError("a plot computed analysis instead of drawing the given result")

    for where, name in ANALYSIS:
        monkeypatch.setattr(f"{where}.{name}", refuse)
        if "." not in where.removeprefix("saddlemap."):  # a function plots might import
            monkeypatch.setattr(plots, name, refuse, raising=False)

    assert _points(plots.plot_neuron_map(saddle_split, reduction)) == saddle_split.width
    assert _points(plots.plot_neuron_map(net2, reduction2)) == net2.width
    assert _points(plots.plot_spectrum(spec)) == spec.eigenvalues.size
    assert plots.plot_escape(escaped).lines
    ax = plots.plot_residual_function(saddle_split, zero_set, zeros=zeros)
    assert f"{len(zeros)} zero(s)" in ax.get_title()
    assert plots.plot_residual_function(net2, zero_set2).collections
    assert _points(plots.plot_branch_hierarchy(cs, 3, verdicts, star_minimum=True)) == 6
    assert plots.plot_training(trained.history).lines


# ------------------------------------------------------------------------------- laziness
def test_import_saddlemap_does_not_import_matplotlib():
    code = (
        "import sys, saddlemap, saddlemap.plots; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------- figures carry their claim
def test_descent_down_one_way_up_another(saddle_split, data, tmp_path):
    descent = sm.negative_curvature_step(saddle_split, data)
    ax = plots.plot_descent(descent)
    _save(ax, tmp_path, "descent")
    down, up = [ln for ln in ax.lines if str(ln.get_label()).startswith("along")]
    assert min(down.get_ydata()) < 0.0 < min(abs(y) for y in up.get_ydata() if y != 0)
    assert all(y >= 0 for y in up.get_ydata())  # up on both sides
    assert ax.get_yscale() == "symlog" and ax.get_xscale() == "symlog"
    # the linear part of the y axis reaches down to the smallest change drawn
    changes = np.abs(np.concatenate([down.get_ydata(), up.get_ydata()]))
    assert ax.yaxis.get_transform().linthresh <= changes[changes > 0].min()
    assert ax.get_title().startswith("down one way, up another")
    zoom = [other for other in ax.figure.axes if other is not ax]
    assert len(zoom) == 2 and zoom[0].get_xscale() == "linear"  # zoom and its twin axis
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) == 3  # 0 and ±max|t|: no colliding tick labels


def test_escape_figure_shows_a_tiny_decrease(escaped):
    ax = plots.plot_escape(escaped)
    (line,) = [ln for ln in ax.lines if ln.get_label() == "R along the path"]
    tiny = np.abs(line.get_ydata())
    assert ax.yaxis.get_transform().linthresh <= tiny[tiny > 0].min()
    assert "down" in ax.get_title()


WIDTHS = [(2, 1), (12, 4), (60, 8), (200, 40)]


@pytest.mark.parametrize(("m", "r"), WIDTHS)
def test_neuron_map_labels_clusters_and_summarises_the_legend(m, r, tmp_path):
    gen = torch.Generator().manual_seed(m)
    W = torch.randn(r, 6, generator=gen, dtype=torch.float64)[torch.arange(m) % r]
    a = torch.randn(m, 1, generator=gen, dtype=torch.float64)
    net = sm.TwoLayerNet(a, W, activation="tanh")
    red = sm.reduce(net, torch.randn(40, 6, generator=gen, dtype=torch.float64))
    assert red.width == r
    ax = plots.plot_neuron_map(net, red)
    _save(ax, tmp_path, f"neuron_map_{m}")
    texts = [t.get_text() for t in ax.texts]
    assert texts and all(re.fullmatch(r"C\d+( ×\d+)?", t) for t in texts)
    if r <= 8:
        assert len(texts) == r  # every cluster named on the map
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    listed = [t for t in legend if t.startswith("C")]
    assert len(listed) == min(r, 6)
    if r > 6:
        assert f"and {r - 6} more cluster(s)" in legend[-1]
    assert f"{m} neurons → {r} cluster(s)" in ax.get_title()


def test_plateaus_figure_labels_the_width_axis_and_the_verdict(tmp_path):
    mon = sm.PlateauMonitor(sm.Dataset(np.zeros((3, 1)), np.zeros(3)), window=2,
                            min_length=3, refine=False)
    net = sm.TwoLayerNet([1.0], [[0.5]])
    for t, value in enumerate([8, 4, 2, 2, 2, 2, 2, 2, 1, 0.5, 0.25]):
        mon.observe(t, net, loss=value, grad_norm=1.0)
    ax = plots.plot_plateaus(mon)
    _save(ax, tmp_path, "plateaus")
    third = ax.figure.axes[-1]
    assert third.get_ylabel() == "effective width (neurons)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["loss R", "‖∇R‖", "plateau", "effective width"]
    assert [t.get_text() for t in ax.texts] == ["not refined (R = 2)"]
