"""Pictures of the landscape: neurons, spectra, escapes, φ_f, branch hierarchies, training.

The rule: plots take finished results.  Each function draws the objects handed to it (a
:class:`~saddlemap.Reduction`, a :class:`~saddlemap.Spectrum`, a :class:`~saddlemap.ZeroSet`
and its zeros, branch verdicts, an escape, a history) and never reduces, certifies,
classifies or searches for zeros itself; the caller computes, the plot draws.  Evaluating
φ_f on a plotting grid is drawing.

Every function draws onto ``ax`` (a new figure when it is None), returns the Axes and never
calls ``plt.show()``; nothing random is drawn, so the same objects give the same picture.
matplotlib is imported inside the functions, so ``import saddlemap`` does not need it; install
it with ``pip install 'saddlemap[plots]'``.

>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from saddlemap import Dataset, TwoLayerNet, spectrum
>>> net = TwoLayerNet([0.610515537972], [[1.433931221329]], activation="tanh")
>>> data = Dataset([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [2.0]], [-1, -1, 0, 0.5, 0.5, 0])
>>> ax = plot_spectrum(spectrum(net, data))
>>> ax.get_title().splitlines()[0]
'dense spectrum, P = 2: inertia (n₊, n₀, n₋) = (2, 0, 0)'
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .critical_set import Branch, CriticalSet
from .density import SpectralDensity
from .descent import Descent
from .errors import OptionError
from .escapes import EscapeResult
from .monitor import PlateauMonitor
from .network import TwoLayerNet
from .reduction import Reduction
from .spectral import Spectrum
from .training import History
from .verdicts import BranchVerdict, EdgeKind, EscapeMethod
from .zero_set import ZeroSet, ZeroSetPoint

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "STAR_NODE",
    "VERDICT_COLORS",
    "plot_branch_hierarchy",
    "plot_descent",
    "plot_escape",
    "plot_neuron_map",
    "plot_plateaus",
    "plot_residual_function",
    "plot_spectral_density",
    "plot_spectrum",
    "plot_training",
]

#: The node of θ* itself in :func:`plot_branch_hierarchy` (it has no branch verdict).
STAR_NODE = "θ*"

#: Node colours of :func:`plot_branch_hierarchy`: θ* itself, and each branch verdict.
VERDICT_COLORS: dict[BranchVerdict | str, str] = {
    STAR_NODE: "tab:blue",
    BranchVerdict.SADDLE_BRANCH: "tab:red",
    BranchVerdict.MIXED: "tab:orange",
    BranchVerdict.UNDETERMINED: "tab:grey",
}

_INSTALL = "plotting needs matplotlib: pip install 'saddlemap[plots]'"


def _pyplot() -> Any:
    """matplotlib.pyplot, or an ImportError saying how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a test dependency
        raise ImportError(_INSTALL) from exc
    return plt


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> Axes:
    """``ax``, or the Axes of a new figure."""
    plt = _pyplot()
    if ax is not None:
        return ax
    _, new = plt.subplots(figsize=figsize)
    return new


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


# ----------------------------------------------------------------------------- neuron map
def _pca_2d(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Projection of the rows onto their two leading principal axes, and the variance kept.

    Axis signs are fixed (largest loading positive) so the picture is deterministic.  When
    the rows (nearly) coincide — neurons of one cluster — their centred spread is rounding
    noise, so the axes are those of the uncentred rows and coinciding neurons stay together.
    """
    centred = points - points.mean(axis=0)
    size = float(np.abs(points).max(initial=0.0))
    if float(np.abs(centred).max(initial=0.0)) <= 1e-8 * max(size, 1e-300):
        centred = points
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = np.zeros((2, points.shape[1]))
    k = min(2, vt.shape[0])
    axes[:k] = vt[:k]
    for i in range(k):
        if axes[i, np.argmax(np.abs(axes[i]))] < 0:
            axes[i] = -axes[i]
    total = float((s**2).sum())
    kept = float((s[:k] ** 2).sum()) / total if total > 0 else 1.0
    return centred @ axes.T, kept


def _min_extent(ax: Axes, xy: np.ndarray) -> None:
    """Axis limits at least a fifth of the largest coordinate wide.

    Rounding-level differences between coinciding neurons are then not blown up to fill
    the picture.
    """
    if not len(xy):
        return
    ref = max(float(np.abs(xy).max()), 1e-12)
    for i, setter in ((0, ax.set_xlim), (1, ax.set_ylim)):
        lo, hi = float(xy[:, i].min()), float(xy[:, i].max())
        if hi - lo < 0.1 * ref:
            mid = 0.5 * (lo + hi)
            setter(mid - 0.1 * ref, mid + 0.1 * ref)


def plot_neuron_map(net: TwoLayerNet, reduction: Reduction, *, ax: Axes | None = None) -> Axes:
    """Input weights of the neurons, coloured by cluster, null neurons as open circles.

    Coordinates: for D = 1 (d = 1, no hidden bias) x = w and y = a (first output); for D = 2
    the plane of w̃ = (w₁, w₂), or (w, b) with a hidden bias; for D ≥ 3 a 2-D PCA projection
    of the augmented weights W̃ (said in the title).  Marker area grows with ‖a_k‖ (with a
    floor, so null neurons stay visible).  Neurons the reduction dropped (null groups, zero
    or constant neurons) are grey.

    Args:
        net: the network.
        reduction: its reduction, ``saddlemap.reduce(net)``: the clusters and null groups
            drawn (the plot does not reduce).
        ax: draw here; a new figure when None.

    Returns:
        The Axes drawn on; its first collection holds one point per neuron.

    Raises:
        OptionError: the reduction is of a network of another width.
    """
    _pyplot()
    red = reduction
    if len(red.assignment) != net.width:
        raise OptionError(
            f"the reduction is of a width-{len(red.assignment)} network, the network has "
            f"width {net.width}"
        )
    ax = _axes(ax)
    m = net.width
    W = _numpy(net.W_aug)
    a = _numpy(net.a)
    a_norm = np.linalg.norm(a, axis=1) if m else np.zeros(0)
    D = W.shape[1]
    hidden_bias = net.b is not None
    null = a_norm <= red.a_tol
    for group in red.dropped_null:
        null[list(group)] = True
    colors = np.array([
        (0.5, 0.5, 0.5, 1.0) if red.assignment[k] < 0 else _cluster_color(red.assignment[k])
        for k in range(m)
    ]).reshape(m, 4)
    faces = colors.copy()
    faces[null] = (1.0, 1.0, 1.0, 0.0)
    scale = float(a_norm.max()) if m and float(a_norm.max()) > 0 else 1.0
    sizes = (30.0 if m <= 50 else 12.0) + (170.0 if m <= 50 else 40.0) * a_norm / scale
    if D == 1:
        xy = np.column_stack([W[:, 0], a[:, 0]]) if m else np.zeros((0, 2))
        xlabel, ylabel = "w", "a" if net.output_dim == 1 else "a (first output)"
        title = "neurons: input weight w against output weight a"
    elif D == 2:
        xy = W
        xlabel, ylabel = ("w", "b") if hidden_bias else ("w₁", "w₂")
        title = "neurons in the plane of " + ("(w, b)" if hidden_bias else "(w₁, w₂)")
    else:
        xy, kept = _pca_2d(W) if m else (np.zeros((0, 2)), 1.0)
        xlabel, ylabel = "PC 1", "PC 2"
        what = "W̃ = (W, b)" if hidden_bias else "W"
        title = f"neurons: PCA projection of {what} (D = {D}, {100 * kept:.0f}% of variance)"
    edges = [tuple(c) for c in colors]
    ax.scatter(xy[:, 0], xy[:, 1], s=sizes, c=faces, edgecolors=edges, linewidths=1.5, zorder=3,
               label="neurons")
    if D == 1:
        ax.axhline(0.0, color="0.7", lw=0.8, zorder=1)
    ax.margins(x=0.14, y=0.1)  # room for the cluster labels inside the frame
    _min_extent(ax, xy)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    merged = sum(1 for g in red.groups if len(g) > 1)
    ax.set_title(f"{title}\n{m} neurons → {red.width} cluster(s) ({merged} of several "
                 f"neurons), {int(null.sum())} null", fontsize="medium")
    _label_clusters(ax, xy, red)
    _neuron_legend(ax, red, bool(null.any()))
    return ax


#: Clusters listed one by one in the neuron map's legend; the rest are summarised.
_LEGEND_CLUSTERS = 6
#: Singleton clusters get a text label on the map up to this many clusters.
_LABEL_SINGLETONS = 24


def _cluster_color(j: int) -> tuple[float, float, float, float]:
    """A colour per cluster: tab10, then tab20's lighter shades (the text label decides)."""
    import matplotlib as mpl

    if j < 10:
        return tuple(mpl.colormaps["tab10"](j))  # type: ignore[return-value]
    return tuple(mpl.colormaps["tab20"](2 * (j % 10) + 1))  # type: ignore[return-value]


def _members(group: Sequence[int]) -> str:
    """'neurons 0, 3, 5' or 'neurons 0–7 (8)' for long groups."""
    g = sorted(group)
    if len(g) == 1:
        return f"neuron {g[0]}"
    if len(g) <= 4:
        return "neurons " + ", ".join(str(k) for k in g)
    return f"{len(g)} neurons ({g[0]}, {g[1]}, …, {g[-1]})"


def _label_clusters(ax: Axes, xy: np.ndarray, red: Reduction) -> None:
    """Text labels 'Cj ×size' beside the clusters, so clusters read without colour.

    Clusters of several neurons are labelled, largest first, and singletons while there
    are few clusters; a label that would overlap one already placed is left out (the
    legend says so), so labels never collide.
    """
    label_all = red.width <= _LABEL_SINGLETONS
    spread = np.ptp(xy, axis=0) if len(xy) else np.ones(2)
    spread = np.where(spread > 0, spread, 1.0)
    placed: list[np.ndarray] = []
    order = sorted(range(red.width), key=lambda j: -len(red.groups[j]))
    for j in order:
        group = red.groups[j]
        if len(group) == 1 and not label_all:
            continue
        centre = xy[list(group)].mean(axis=0)
        at = centre / spread
        if any(abs(at[0] - p[0]) < 0.12 and abs(at[1] - p[1]) < 0.06 for p in placed):
            continue
        placed.append(at)
        text = f"C{j}" + (f" ×{len(group)}" if len(group) > 1 else "")
        ax.annotate(text, centre, xytext=(6, 6), textcoords="offset points",
                    fontsize="x-small" if red.width > 10 else "small", zorder=5,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "0.7",
                          "alpha": 0.8})


def _neuron_legend(ax: Axes, red: Reduction, has_null: bool) -> None:
    """The first clusters by name and members, then a count of the others (never cut)."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker="o", color=_cluster_color(j),
               label=f"C{j}: {_members(g)}")
        for j, g in enumerate(red.groups[:_LEGEND_CLUSTERS])
    ]
    rest = red.width - len(handles)
    if rest > 0:
        handles.append(Line2D([], [], ls="", label=f"… and {rest} more cluster(s), "
                              "labelled on the map where there is room"))
    if has_null:
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", color="k",
                              label="null neuron (dropped)"))
    if handles:
        ax.legend(handles=handles, fontsize="x-small", loc="upper left",
                  bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


# ------------------------------------------------------------------------------- spectrum
def plot_spectrum(spectrum: Spectrum, *, ax: Axes | None = None) -> Axes:
    """Hessian eigenvalues by index on a symlog scale, the zero band shaded, negatives red.

    The linear part of the symlog scale is the zero band ±``zero_tol``, so eigenvalues that
    count as zero sit inside the shaded strip; the title gives the inertia.

    Args:
        spectrum: a :class:`~saddlemap.Spectrum`.
        ax: draw here; a new figure when None.

    Returns:
        The Axes drawn on.
    """
    _pyplot()
    ax = _axes(ax)
    lam = np.asarray(spectrum.eigenvalues, dtype=float)
    tol = float(spectrum.zero_tol)
    linthresh = tol if tol > 0 else max(1e-12, 1e-12 * float(np.abs(lam).max(initial=0.0)))
    idx = np.arange(lam.size)
    ax.axhspan(-tol, tol, color="0.85", zorder=0, label=f"zero band ±{tol:.1e}")
    groups = (
        (lam < -tol, "tab:red", "negative"),
        (np.abs(lam) <= tol, "0.35", "zero"),
        (lam > tol, "tab:blue", "positive"),
    )
    for mask, color, name in groups:
        if mask.any():
            ax.scatter(idx[mask], lam[mask], color=color, s=18, zorder=3,
                       label=f"{name} ({int(mask.sum())})")
    _symlog_r(ax, lam, linthresh)
    ax.axhline(0.0, color="0.5", lw=0.8, zorder=1)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("index (ascending)")
    ax.set_ylabel("eigenvalue λ")
    inertia = spectrum.inertia
    inert = (
        f"inertia (n₊, n₀, n₋) = ({inertia.positive}, {inertia.zero}, {inertia.negative})"
        if inertia is not None else "inertia unknown (partial spectrum)"
    )
    ax.set_title(f"{spectrum.method} spectrum, P = {spectrum.num_params}: {inert}\n"
                 f"λ_min = {spectrum.min:.3g}, λ_max = {spectrum.max:.3g}")
    ax.legend(fontsize="small", loc="best")
    return ax


def plot_spectral_density(density: SpectralDensity, *, ax: Axes | None = None) -> Axes:
    """The SLQ eigenvalue density P·ρ(λ) on a log scale, the negative side shaded.

    P·ρ is in eigenvalues per unit λ, so its integral below −zero_tol is the negative
    count the title gives (with its standard error over the probes), as PyHessian draws
    its density.

    Args:
        density: a :class:`~saddlemap.SpectralDensity`.
        ax: draw here; a new figure when None.

    Returns:
        The Axes drawn on.
    """
    _pyplot()
    ax = _axes(ax)
    grid = np.asarray(density.grid, dtype=float)
    counts = density.num_params * np.asarray(density.density, dtype=float)
    floor = max(float(counts.max(initial=0.0)) * 1e-12, 1e-300)
    ax.semilogy(grid, np.maximum(counts, floor), color="tab:blue", lw=1.2)
    ax.axvspan(float(grid[0]), min(-density.zero_tol, float(grid[-1])), color="tab:red",
               alpha=0.08, label=f"λ < −{density.zero_tol:.1e}")
    ax.axvline(0.0, color="0.5", lw=0.8)
    ax.set_ylim(bottom=max(floor, float(counts.max(initial=1.0)) * 1e-8))
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("P·ρ(λ) (eigenvalues per unit λ)")
    ax.set_title(
        f"SLQ density, P = {density.num_params}, {density.n_probes} probes × "
        f"{density.nodes.shape[1]} steps, σ = {density.sigma:.2g}\n"
        f"≈ {density.negative_count:.1f} ± {density.negative_count_stderr:.1f} negative eigenvalues"
    )
    ax.legend(fontsize="small", loc="best")
    return ax


# --------------------------------------------------------------------------------- escape
def _shape_words(t: np.ndarray, dr: np.ndarray) -> str:
    """How the loss changes on the two sides of t = 0, in words."""
    left, right = dr[t < 0], dr[t > 0]
    down_l, down_r = bool((left < 0).any()), bool((right < 0).any())
    if down_l and down_r:
        return "down on both sides"
    if down_l or down_r:
        other = right if down_l else left
        return "down on one side, up on the other" if (other > 0).any() else "down on one side"
    return "up on both sides" if (dr > 0).any() else "no change along the path"


def _linthresh(values: np.ndarray) -> float:
    """The linear range of a symlog axis: the smallest nonzero |value| (a floor of 1e-300)."""
    nonzero = np.abs(values[np.isfinite(values) & (values != 0)])
    return max(float(nonzero.min()), 1e-300) if nonzero.size else 1.0


def _symlog_t(ax: Axes, t: np.ndarray) -> None:
    """A symlog t axis with three ticks, 0 and ±max|t|, which never collide."""
    nonzero = np.abs(t[t != 0])
    if not nonzero.size:
        return
    low, high = float(nonzero.min()), float(nonzero.max())
    ax.set_xscale("symlog", linthresh=low)
    ticks = [-high, 0.0, high]
    ax.set_xticks(ticks, [f"{v:.2g}" for v in ticks])
    ax.minorticks_off()


def _symlog_r(ax: Axes, values: np.ndarray, linthresh: float | None = None) -> None:
    """A symlog ΔR axis, linear up to the smallest |ΔR|, ticks never colliding.

    At most about four decades are labelled on each side of zero.
    """
    lin = _linthresh(values) if linthresh is None else linthresh
    ax.set_yscale("symlog", linthresh=lin, linscale=0.5)
    top = float(np.abs(values[np.isfinite(values)]).max(initial=lin))
    k0, k1 = int(np.ceil(np.log10(lin))) + 1, int(np.floor(np.log10(max(top, lin))))
    stride = max(1, int(np.ceil((k1 - k0 + 1) / 4)))
    decades = list(range(k1, k0 - 1, -stride))
    ticks = sorted([-(10.0**k) for k in decades] + [0.0] + [10.0**k for k in decades])
    finite = values[np.isfinite(values)]
    low = -1.5 * top if (finite < 0).any() else -lin
    high = 1.5 * top if (finite > 0).any() else lin
    ticks = [v for v in ticks if low <= v <= high]
    ax.set_yticks(ticks, [_power(v) for v in ticks])
    ax.set_ylim(low, high)
    ax.minorticks_off()


def _power(v: float) -> str:
    if v == 0:
        return "0"
    k = round(float(np.log10(abs(v))))
    return f"${'-' if v < 0 else ''}10^{{{k}}}$"


def _zoom_axes(ax: Axes) -> Axes:
    """A panel to the right of ``ax`` (same figure), for the zoom near t = 0."""
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    zoom: Axes = make_axes_locatable(ax).append_axes("right", size="70%", pad=1.0)
    return zoom


def _zoom(ax: Axes, curves: Sequence[tuple[np.ndarray, np.ndarray, str, str]],
          points: int = 4) -> Axes:
    """The inner ``points`` steps on each side, linear axes; each curve on its own y axis.

    The first curve uses the left axis, a second one a twin axis on the right, so a small
    decrease beside a large increase stays visible.
    """
    zoom = _zoom_axes(ax)
    axes = [zoom]
    for i, (t, dr, color, label) in enumerate(curves):
        target = zoom if i == 0 else zoom.twinx()
        if i:
            axes.append(target)
        mags = np.unique(np.abs(t[t != 0]))
        reach = mags[min(points, mags.size) - 1] if mags.size else 1.0
        inner = np.abs(t) <= reach * (1 + 1e-12)
        target.plot(t[inner], dr[inner], marker=".", color=color, label=label)
        target.set_ylabel(f"ΔR {label.removeprefix('R ')}", color=color)
        target.tick_params(axis="y", colors=color)
        target.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3), useMathText=True)
    zoom.axhline(0.0, color="0.6", lw=0.8, zorder=1)
    zoom.axvline(0.0, color="0.8", lw=0.8, zorder=1)
    zoom.set_xlabel("t (zoom near 0, linear)")
    return zoom


def _way_down(ax: Axes, curves: Sequence[tuple[np.ndarray, np.ndarray, str, str]],
              step: tuple[float, float] | None, xlabel: str) -> None:
    """ΔR(t) curves on symlog axes (both scales visible), the step starred, a zoom panel."""
    every = np.concatenate([dr for _, dr, _, _ in curves])
    ax.axhline(0.0, color="0.6", lw=0.8, zorder=1)
    ax.axvline(0.0, color="0.8", lw=0.8, zorder=1)
    for t, dr, color, label in curves:
        ax.plot(t, dr, marker=".", color=color, zorder=2, label=label)
    if step is not None:
        ax.scatter([step[0]], [step[1]], marker="*", s=160, color="k", zorder=4,
                   label=f"step t = {step[0]:.3g}, ΔR = {step[1]:.3g}")
    _symlog_t(ax, np.concatenate([t for t, _, _, _ in curves]))
    _symlog_r(ax, every)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ΔR = R(t) − R(0)  (symlog)")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(0.0, -0.18),
              ncol=1, frameon=False)
    _zoom(ax, curves)


def plot_escape(result: EscapeResult, *, ax: Axes | None = None) -> Axes:
    """The loss change R(t) − R(0) along the escape direction or curve, the step marked.

    Both axes are symlog (the scanned steps halve towards 0; a decrease of 1e-8 beside a
    rise of 1e-2 stays visible), a second panel zooms on the innermost steps on linear
    axes, and the title says in words how the loss changes on the two sides.

    Args:
        result: an :class:`~saddlemap.EscapeResult` from :func:`~saddlemap.escape`.
        ax: draw here; a new figure when None (the zoom panel is appended beside it).

    Returns:
        The Axes drawn on (with a note and no curve when the escape had no path).
    """
    _pyplot()
    ax = _axes(ax, figsize=(9.0, 4.0))
    t = np.asarray(result.path_t, dtype=float)
    dr = np.asarray(result.path_loss, dtype=float) - result.loss_before
    along = "curve" if result.method is EscapeMethod.ESCAPE_CURVE else "direction"
    ax.set_xlabel(f"t along the {along}")
    ax.set_ylabel("R(t) − R(0)")
    if t.size == 0:
        note = result.notes[0] if result.notes else "no escape path"
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, wrap=True)
        ax.set_title(f"escape: {result.method.value} ({result.start.kind.value})")
        return ax
    order = np.argsort(t, kind="stable")
    t, dr = t[order], dr[order]
    step = None if result.step == 0.0 else (result.step,
                                            result.loss_after_step - result.loss_before)
    _way_down(ax, [(t, dr, "tab:red", "R along the path")], step, f"t along the {along}")
    ax.set_title(f"escape by {result.method.value}\nfrom a {result.start.kind.value}: "
                 f"{_shape_words(t, dr)}", fontsize="medium")
    return ax


def plot_descent(descent: Descent, *, ax: Axes | None = None) -> Axes:
    """Down one way, up another: R along the lowest and the highest curvature directions.

    ΔR(t) = R(θ + t v) − R(θ) along the eigenvector v of λ_min (red, oriented downhill)
    and along that of λ_max (blue), on symlog axes so both the fall and the rise are
    visible, the step taken starred; a second panel zooms on the innermost steps on
    linear axes, each curve on its own y axis.

    Args:
        descent: a :class:`~saddlemap.Descent` from
            :func:`~saddlemap.negative_curvature_step`.
        ax: draw here; a new figure when None (the zoom panel is appended beside it).

    Returns:
        The Axes drawn on.

    Raises:
        OptionError: a descent without any scan (no eigenvector was computed).
    """
    if not descent.path_t.size and not descent.up_t.size:
        raise OptionError("the descent has no scan to draw (no eigenvector was computed)")
    _pyplot()
    ax = _axes(ax, figsize=(9.0, 4.0))
    before = descent.loss_before
    curves = []
    if descent.path_t.size:
        curves.append((np.asarray(descent.path_t, dtype=float),
                       np.asarray(descent.path_loss, dtype=float) - before, "tab:red",
                       f"along v_min (λ = {descent.lambda_min:.3g})"))
    if descent.up_t.size:
        curves.append((np.asarray(descent.up_t, dtype=float),
                       np.asarray(descent.up_loss, dtype=float) - before, "tab:blue",
                       f"along v_max (λ = {descent.lambda_max:.3g})"))
    step = None if descent.step == 0.0 else (descent.step,
                                             descent.loss_after_step - before)
    _way_down(ax, curves, step, "t (step along the eigenvector)")
    words = "down one way, up another" if descent.direction is not None and descent.improved \
        else "no way down at second order: up along both"
    ax.set_title(f"{words}\nR(θ) = {before:.4g}, {descent.negative} negative eigenvalue(s)",
                 fontsize="medium")
    return ax


# ---------------------------------------------------------------------- residual function
def _span(values: np.ndarray, span: tuple[float, float] | None) -> tuple[float, float]:
    """``span``, or [−s, s] covering ``values`` and their sign twins −values with a margin."""
    if span is not None:
        lo, hi = float(span[0]), float(span[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise OptionError(f"span must be an interval (lo, hi) with lo < hi, got {span!r}")
        return lo, hi
    s = 1.25 * float(np.abs(values).max(initial=0.0)) + 1.0
    return -s, s


def _zero_marks(zeros: Sequence[ZeroSetPoint], D: int, lo: float, hi: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """The zeros inside the square [lo, hi]^D as a (n, D) array, and which are regular."""
    for z in zeros:
        if len(z.u) != D:
            raise OptionError(
                f"the zeros are points of a {len(z.u)}-dimensional u, φ is drawn for D = {D}"
            )
    inside = [z for z in zeros if all(lo <= c <= hi for c in z.u)]
    points = np.array([z.u for z in inside], dtype=float).reshape(len(inside), D)
    return points, np.array([z.regular for z in inside], dtype=bool)


def _draw_zeros(ax: Axes, points: np.ndarray, regular: np.ndarray) -> None:
    """The zeros of φ: open where regular, filled where singular (on Z'_f)."""
    if not len(points):
        return
    xy = points if points.shape[1] == 2 else np.column_stack([points[:, 0],
                                                              np.zeros(len(points))])
    faces = np.where(regular[:, None], [[1.0, 1.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 1.0]])
    ax.scatter(xy[:, 0], xy[:, 1], s=60, facecolors=faces, edgecolors="k", zorder=5,
               label="zeros of φ (filled: singular)")


def plot_residual_function(net: TwoLayerNet, zero_set: ZeroSet, *,
                           zeros: Sequence[ZeroSetPoint] | None = None,
                           ax: Axes | None = None,
                           span: tuple[float, float] | None = None) -> Axes:
    """φ_f over the space of augmented input weights, the zeros handed in and the neurons.

    D = 1 (d = 1, no hidden bias): the curve φ(u) (each output), the given zeros (filled
    where ∇φ = 0, open where regular) and the neurons' positions on the u axis.  D = 2: a
    contour plot of the first output of φ with the zero level set drawn in black, the given
    zeros and the neurons as points.  φ is evaluated on the plotting grid; zeros are never
    searched for here: pass them, e.g. ``zero_set.zeros_1d(interval)`` for D = 1 or
    ``zero_set.sample()`` for D = 2.

    Args:
        net: the network whose neurons are drawn (its output function defines φ).
        zero_set: the :class:`~saddlemap.ZeroSet` of that network's residual function on
            the data; ``zero_set.residual`` is the φ drawn.
        zeros: points of Z_f to mark; those outside ``span`` are not drawn.  None: none.
        ax: draw here; a new figure when None.
        span: the u range (both axes for D = 2); by default a symmetric one covering the
            neurons and their sign twins.

    Returns:
        The Axes drawn on.

    Raises:
        OptionError: D ≥ 3, a zero set of another input dimension than the network, zeros
            of another dimension, or an empty ``span``.
    """
    D = int(net.W_aug.shape[1])
    if D not in (1, 2):
        raise OptionError(
            f"plot_residual_function draws φ for D = 1 or 2 (augmented input dimension), "
            f"got D = {D}"
        )
    rf = zero_set.residual
    X = rf.X
    if int(X.shape[1]) != D:
        raise OptionError(
            f"the zero set is of φ on D = {int(X.shape[1])} augmented inputs, the network "
            f"has D = {D}"
        )
    _pyplot()
    W = _numpy(net.W_aug)
    lo, hi = _span(W, span)
    marks, regular = _zero_marks(zeros or (), D, lo, hi)
    ax = _axes(ax)
    if D == 1:
        grid = np.linspace(lo, hi, 801)
        with torch.no_grad():
            phi = _numpy(rf.phi(torch.as_tensor(grid[:, None], dtype=X.dtype, device=X.device)))
        for c in range(phi.shape[1]):
            ax.plot(grid, phi[:, c], color=f"C{c}", lw=1.5,
                    label="φ(u)" if phi.shape[1] == 1 else f"φ(u), output {c}")
        ax.axhline(0.0, color="0.5", lw=0.8, zorder=1)
        _draw_zeros(ax, marks, regular)
        ax.scatter(W[:, 0], np.zeros(net.width), marker="|", s=400, color="tab:red",
                   linewidths=2, zorder=3, label="neurons")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("u")
        ax.set_ylabel("φ(u)")
        shown = "" if zeros is None else f": {len(marks)} zero(s)"
        ax.set_title(f"residual function φ_f{shown} on [{lo:.3g}, {hi:.3g}]")
        ax.legend(fontsize="small", loc="best")
        return ax
    num = 161
    axis = np.linspace(lo, hi, num)
    uu, vv = np.meshgrid(axis, axis)
    points = torch.as_tensor(np.column_stack([uu.ravel(), vv.ravel()]), dtype=X.dtype,
                             device=X.device)
    chunk = max(1, 2_000_000 // max(1, int(X.shape[0])))
    with torch.no_grad():
        phi = np.concatenate([
            _numpy(rf.phi(points[i : i + chunk])[:, 0]) for i in range(0, len(points), chunk)
        ]).reshape(num, num)
    bound = float(np.abs(phi).max()) or 1.0
    levels = np.linspace(-bound, bound, 21)
    filled = ax.contourf(uu, vv, phi, levels=levels, cmap="RdBu_r")
    ax.figure.colorbar(filled, ax=ax, label="φ(u)" + (" (first output)"
                                                      if net.output_dim > 1 else ""))
    if phi.min() < 0.0 < phi.max():
        ax.contour(uu, vv, phi, levels=[0.0], colors="k", linewidths=2.0)
    _draw_zeros(ax, marks, regular)
    ax.scatter(W[:, 0], W[:, 1], s=50, color="gold", edgecolors="k", zorder=4,
               label="neurons")
    hidden_bias = net.b is not None
    ax.set_xlabel("w" if hidden_bias else "w₁")
    ax.set_ylabel("b" if hidden_bias else "w₂")
    ax.set_aspect("equal")
    shown = "" if zeros is None else f", {len(marks)} zero(s) marked"
    ax.set_title(f"residual function φ_f: zero set Z_f in black, neurons in gold{shown}")
    return ax


# ---------------------------------------------------------------------- branch hierarchy
def _branch_label(b: Branch) -> str:
    """'(2,1)+1∅': cluster sizes and null neurons."""
    label = "(" + ",".join(str(s) for s in b.sizes) + ")"
    return label + (f"+{b.nulls}∅" if b.nulls else "")


def _is_star(b: Branch) -> bool:
    """Whether ``b`` is θ* itself: r singleton clusters and no null neuron."""
    return b.nulls == 0 and all(s == 1 for s in b.sizes)


def plot_branch_hierarchy(cs: CriticalSet, m: int, verdicts: Mapping[Branch, BranchVerdict],
                          *, star_minimum: bool | None = None,
                          ax: Axes | None = None) -> Axes:
    """The branch types of Q_w(f) for widths w = r..m, their embeddings and saddle verdicts.

    One column per width, one node per branch type (cluster sizes, null neurons), ordered
    by dimension; solid edges are splits, dotted edges add a null neuron, dashed arcs join
    branches of one width that meet (docs/theory.md §6).  Node colours are the verdicts handed in
    (:data:`VERDICT_COLORS`); θ* itself has none and is drawn in its own colour.  The plot
    decides no verdict: compute them with :func:`~saddlemap.saddle_branches` (verdicts with a
    checked witness) or :func:`saddlemap.saddles.branch_verdict` (the Fukumizu–Amari rule
    alone), e.g. ``{s.branch: s.verdict for w in range(cs.r + 1, m + 1) for s in
    saddle_branches(cs, w)}``.

    Args:
        cs: the critical set.
        m: the largest width, ≥ r.
        verdicts: the verdict of every branch of widths r..m other than θ* itself, keyed
            by the :class:`~saddlemap.Branch` (as ``cs.branches(w)`` and
            ``SaddleBranch.branch`` give it); other keys are ignored.
        star_minimum: whether θ* is a strict local minimum (its certificate), which the
            ``MIXED`` verdicts' minima depend on; False adds a note to the title.
        ax: draw here; a new figure when None.

    Returns:
        The Axes drawn on; ``ax.lines`` holds one line per edge.

    Raises:
        OptionError: m < r, or a branch without a verdict.
    """
    r = cs.r
    if m < r:
        raise OptionError(f"m = {m} is below the minimal width r = {r}")
    columns = {w: cs.branches(w) for w in range(r, m + 1)}
    missing = [b for bs in columns.values() for b in bs if not _is_star(b) and b not in verdicts]
    if missing:
        raise OptionError(
            "no verdict for the branch(es) "
            + ", ".join(f"{_branch_label(b)} (width {b.width})" for b in missing)
        )
    _pyplot()
    from matplotlib.lines import Line2D

    ax = _axes(ax, figsize=(2.2 * (m - r + 1) + 2.0, 4.5))
    pos: dict[tuple[tuple[int, ...], int, int], tuple[float, float]] = {}
    nodes: dict[BranchVerdict | str, list[tuple[float, float]]] = {
        key: [] for key in VERDICT_COLORS
    }
    for w, branches in columns.items():
        for i, b in enumerate(branches):
            y = (len(branches) - 1) / 2.0 - i
            pos[(b.sizes, b.nulls, w)] = (float(w), y)
            nodes[STAR_NODE if _is_star(b) else verdicts[b]].append((float(w), y))
            ax.text(w + 0.08, y, f"{_branch_label(b)}\ndim {b.dimension}", fontsize="x-small",
                    va="center", ha="left", zorder=5)
    styles = {EdgeKind.SPLIT: "-", EdgeKind.NULL: ":", EdgeKind.MEET: "--"}
    for w in range(r + 1, m + 1):
        for edge in cs.hierarchy(w):
            low, up, kind = edge.lower, edge.upper, edge.kind
            lw_ = w if kind is EdgeKind.MEET else w - 1
            x0, y0 = pos[(low.sizes, low.nulls, lw_)]
            x1, y1 = pos[(up.sizes, up.nulls, w)]
            if kind is EdgeKind.MEET:  # an arc to the left of column w
                s = np.linspace(0.0, 1.0, 25)
                xs = x0 - 0.25 * np.sin(np.pi * s)
                ys = y0 + (y1 - y0) * s
            else:
                xs, ys = np.array([x0, x1]), np.array([y0, y1])
            ax.plot(xs, ys, ls=styles[kind], color="0.55", lw=1.0, zorder=1)
    for verdict, pts in nodes.items():
        if pts:
            xy = np.array(pts)
            ax.scatter(xy[:, 0], xy[:, 1], s=90, color=VERDICT_COLORS[verdict],
                       edgecolors="k", zorder=4, label=_verdict_label(verdict))
    ax.set_xticks(range(r, m + 1))
    ax.set_xlim(r - 0.5, m + 0.9)
    ax.set_yticks([])
    ax.set_xlabel("width w")
    ax.set_title(f"branches of Q_w(f), r = {r} ≤ w ≤ {m}"
                 + (" (θ* not a strict minimum)" if star_minimum is False else ""))
    handles = [
        Line2D([], [], ls="", marker="o", color=VERDICT_COLORS[v], mec="k",
               label=_verdict_label(v))
        for v, pts in nodes.items() if pts
    ]
    handles += [Line2D([], [], ls=ls, color="0.55", label=k.value) for k, ls in styles.items()]
    ax.legend(handles=handles, fontsize="x-small", loc="upper left")
    return ax


def _verdict_label(verdict: BranchVerdict | str) -> str:
    """The legend text of a node colour: the verdict's phrase, or θ*."""
    return verdict.value if isinstance(verdict, BranchVerdict) else verdict


# ------------------------------------------------------------------------------- training
def plot_training(history: History, *, ax: Axes | None = None,
                  plateaus: Sequence[tuple[float, float, str]] | None = None) -> Axes:
    """Loss (log scale, left axis) and gradient norm (log scale, right axis) against step.

    Each plateau is shaded and labelled at the top of its band, the label wrapped to fit
    and alternating in height when bands are close; the legend sits below the axes so it
    covers no curve.

    Args:
        history: a :class:`~saddlemap.History` from :func:`~saddlemap.train`.
        ax: draw here; a new figure when None.  The gradient norm goes on ``ax.twinx()``.
        plateaus: (start, end, label) step ranges to shade and label.

    Returns:
        The Axes of the loss (the twin axis is reachable through the figure).
    """
    _pyplot()
    ax = _axes(ax, figsize=(7.0, 4.0))
    step = np.asarray(history.step, dtype=float)
    loss = np.asarray(history.loss, dtype=float)
    grad = np.asarray(history.grad_norm, dtype=float)
    (loss_line,) = ax.plot(step, np.where(loss > 0, loss, np.nan), color="tab:blue",
                           label="loss R")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss R", color="tab:blue")
    twin = ax.twinx()
    (grad_line,) = twin.plot(step, np.where(grad > 0, grad, np.nan), color="tab:orange",
                             lw=0.9, label="‖∇R‖")
    twin.set_yscale("log")
    twin.set_ylabel("‖∇R‖", color="tab:orange")
    span = float(step.max() - step.min()) if step.size else 1.0
    last = -np.inf
    level = 0
    for i, (start, end, label) in enumerate(plateaus or ()):
        ax.axvspan(start, end, color="tab:green", alpha=0.15, zorder=0)
        level = level + 1 if (start - last) < 0.3 * span and i else 0
        ax.annotate(_wrap(label, 48), ((start + end) / 2.0, 1.0),
                    xycoords=ax.get_xaxis_transform(), xytext=(0, 4 + 24 * level),
                    textcoords="offset points", ha="center", va="bottom", fontsize="small",
                    color="darkgreen", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "tab:green"} if level else None)
        last = end
    handles: list[Any] = [loss_line, grad_line]
    if plateaus:
        from matplotlib.patches import Patch

        handles.append(Patch(color="tab:green", alpha=0.15, label="plateau"))
    ax.legend(handles=handles, fontsize="small", loc="upper left",
              bbox_to_anchor=(0.0, -0.15), ncol=len(handles), frameon=False)
    ax.set_title(f"training: {len(history)} recorded steps",
                 pad=30 + 24 * level if plateaus else 6)
    return ax


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def plot_plateaus(monitor: PlateauMonitor, *, ax: Axes | None = None) -> Axes:
    """A :class:`~saddlemap.PlateauMonitor`'s loss and ‖∇R‖ with its plateaus shaded.

    Each plateau is labelled by its verdict and its loss; the effective width is drawn as a
    step line on a third axis, offset to the right, with its own label and integer ticks,
    and listed in the legend.

    Args:
        monitor: the monitor after training (its ``history`` and ``plateaus``).
        ax: draw here; a new figure when None.

    Returns:
        The Axes of the loss.
    """
    h = monitor.history
    ax = plot_training(
        History(h["step"], h["loss"], h["grad_norm"]), ax=ax,
        plateaus=[(p.start, p.end, f"{p.verdict.value} (R = {p.loss:.3g})")
                  for p in monitor.plateaus],
    )
    third: Any = ax.twinx()
    third.spines["right"].set_position(("axes", 1.15))
    third.spines["right"].set_color("tab:green")
    (width_line,) = third.step(h["step"], h["width"], where="post", color="tab:green",
                               lw=1.2, ls="--", label="effective width")
    third.set_ylabel("effective width (neurons)", color="tab:green")
    third.tick_params(axis="y", colors="tab:green")
    top = int(h["width"].max()) if h["width"].size else 1
    third.set_ylim(-0.2, top + 0.5)
    third.set_yticks(range(0, top + 1, max(1, (top + 1) // 6)))
    legend = ax.get_legend()
    handles = [*legend.legend_handles, width_line] if legend is not None else [width_line]
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(0.0, -0.15),
              ncol=len(handles), frameon=False)
    return ax
