"""A training monitor that finds loss plateaus and says what the network sits near.

:class:`PlateauMonitor` watches a training run, either as a callback of
:func:`~saddlemap.train` or through :meth:`PlateauMonitor.observe` from any torch loop.  It
records the loss, the gradient norm and the effective width (the width of
:func:`~saddlemap.reduce` with a loose tolerance), detects plateaus of the loss, and for each
plateau refines the network from the *middle* of the plateau to a nearby critical point of
the trained parameters and classifies it (docs/theory.md §9): a Saad–Solla plateau sits near
a splitting branch of a narrower network's saddle; a channel to infinity shows as a pair of
neurons with equal input weights whose opposite output weights grow while R still falls.

Every rule and threshold is in :class:`PlateauRules` (:attr:`PlateauMonitor.rules`), so a
study can record what its verdicts were decided with.

Cost: the loss and the gradient norm come free from the :class:`~saddlemap.TrainState`; the
effective width is computed every ``every`` steps, by a vectorised check that no two neurons
are within ``width_tol`` (and none is null), falling back to :func:`~saddlemap.reduce` (no
rank check, ~20 ms at m = 100) only when some could merge.  The snapshot buffer holds at
most ``snapshots`` parameter vectors.  Measured on d = 10, m = 100, n = 1000, erf, default
gd (float64, one thread, refinement excluded): a training step takes about 3.4 ms and the
monitor about 0.03–0.05 ms per step with ``every=10``, about 1 %.

>>> import saddlemap as sm
>>> prob = sm.teacher_student(1, 2, d=2, n=13, activation="tanh")
>>> mon = PlateauMonitor(prob.data, window=5, min_length=5)
>>> run = sm.train(prob.student, prob.data, steps=30, callbacks=[mon])
>>> plateaus = mon.finish()
>>> len(mon.history["step"]) == run.steps + 1
True
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .analysis import Analysis
from .critical_points import CriticalPoint, find_critical_point
from .data import Dataset
from .derivatives import gradient, hessian, loss, loss_and_gradient
from .errors import OptionError
from .network import TwoLayerNet
from .reduction import Reduction, default_tolerances, reduce
from .saddles import classify
from .spectral import Spectrum, dense_spectrum
from .tolerances import Tolerances
from .training import TrainState, freeze_mask
from .verdicts import Kind, PlateauVerdict

__all__ = ["Plateau", "PlateauMonitor", "PlateauRules"]

#: Parameter blocks a trainer can freeze (see :func:`~saddlemap.freeze_mask`).
_BLOCKS = ("a", "W", "b", "c")
#: Most trained parameters the monitor's own (dense) subspace refinement handles.
_DENSE_FREE_LIMIT = 3000
#: Channel evidence: input weights "nearly equal" within this fraction of their norm (+1).
_CHANNEL_CLOSE = 0.05
#: Channel evidence: the pair's output weights grew by at least this factor.
_CHANNEL_GROWTH = 1.5


def _log_rate(before: float, after: float, steps: int) -> float:
    """ln(before/after) / steps, at least 0 (a loss that rose did not fall); ∞ at R = 0."""
    if steps <= 0 or not before > 0:
        return 0.0
    if not after > 0:
        return math.inf
    return max(math.log(before / after), 0.0) / steps


def _plainly_minimal(net: TwoLayerNet, tol: float) -> bool:
    """True when :func:`~saddlemap.reduce` with ``tol`` could neither merge nor drop a neuron.

    A vectorised shortcut (``reduce`` loops over neurons in Python): every pair of input
    weights is more than 2·tol apart up to sign, every input weight is longer than 2·tol and
    every output weight is above twice reduce's zero tolerance.  Only for analytic
    activations (reduce rescales the neurons of ReLU-type ones).  False means "ask reduce".
    """
    m = net.width
    if m < 2 or not net.activation.analytic:
        return False
    w, a = net.W_aug, net.a
    _, a_tol = default_tolerances(net)
    if float(torch.linalg.vector_norm(a, dim=1).min()) <= 2 * a_tol:
        return False
    if float(torch.linalg.vector_norm(w, dim=1).min()) <= 2 * tol:
        return False
    dist = torch.minimum(torch.cdist(w, w), torch.cdist(w, -w))
    dist.fill_diagonal_(math.inf)
    return bool(float(dist.min()) > 2 * tol)


# ------------------------------------------------------------------------------ rules
def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_real(value: object, low: float, high: float = math.inf) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and low <= value <= high)


@dataclass(frozen=True)
class PlateauRules:
    """The rules and thresholds of plateau detection and of the plateau verdict.

    Detection.  With R₀ the first observed loss, step t is *on a plateau* when R(t) ≥ ``floor``
    · R₀ (below it the run is converged at the rounding floor, not stalled) and the loss stalls
    relative to the drop so far: R(t − window) − R(t) ≤ ``rtol`` · (R₀ − R(t)), R(t − window)
    being the loss at the latest observed step ≤ t − window, while changing by at most
    ``rel_rtol`` · R(t) over the window (a plateau may sink slowly; an exponential tail or an
    escape, falling by a fixed fraction of R per window, is no plateau however small R is, nor
    is a spike, rising). A run of ≥ ``min_length`` on-plateau steps t₀ … t₁ is a plateau
    candidate from t₀ − window to the first step after t₁; it becomes a plateau only when the
    loss then *escapes*: within ``escape_steps`` steps of its end R falls to ≤ (1 − ``drop``) ·
    the plateau loss (R at the snapshot), at a log-rate ln(R(t₁)/R(t))/max(t − t₁, window)
    (R(t₁) at most the plateau loss) at least ``speedup`` times the plateau's own,
    ln(R(t₀)/R(t₁))/(t₁ − t₀) (a tail that keeps sinking at one rate, as Adam's loss does near a
    minimum, has no escape).  A candidate that closes while an earlier one waits for its escape
    is merged with it.  A run still open when training stops is a plateau only if its last
    window also stalled relative to R itself (R(t − window) − R(t) ≤ rtol · R(t) at the last
    step): a run stuck to the end, not a slow tail.

    Verdict.  The snapshot is the stored state of least ‖∇R‖ on the plateau, where training
    passes closest to the critical point it stalls at (at most ``snapshots`` states are
    kept, spread over the plateau).  The refinement (at most ``max_iter`` Levenberg–Marquardt
    iterations, on the trained coordinates only) is accepted when it converged, moved at
    most ``max_distance`` · ‖θ_snapshot‖, and the loss at ``path_points`` evenly spaced points
    of the straight path from snapshot to refined point never exceeds the plateau loss by
    more than ``path_margin`` (relative).

    >>> PlateauRules(window=20).to_dict()["escape_steps"]
    1000
    """

    window: int = 100
    rtol: float = 1e-3
    rel_rtol: float = 0.1
    min_length: int = 50
    floor: float = 1e-10
    drop: float = 0.5
    escape_steps: int = 1000
    speedup: float = 4.0
    max_distance: float = 0.1
    path_margin: float = 0.01
    path_points: int = 11
    snapshots: int = 64
    max_iter: int = 50

    def __post_init__(self) -> None:
        """Refuse numbers that are not numbers, negative, NaN, infinite or absurd."""
        counts = {"window": 1, "min_length": 1, "escape_steps": 1, "path_points": 2,
                  "snapshots": 4, "max_iter": 1}
        for name, minimum in counts.items():
            if not _is_int(getattr(self, name), minimum):
                raise OptionError(f"{name} must be an integer ≥ {minimum}, "
                                  f"got {getattr(self, name)!r}")
        reals = {"rtol": (0.0, 1.0), "rel_rtol": (0.0, 1.0), "floor": (0.0, 0.5),
                 "drop": (1e-6, 1.0 - 1e-6), "speedup": (1.0, 1e6),
                 "max_distance": (1e-12, 1e6),
                 "path_margin": (0.0, 1e6)}
        for name, (low, high) in reals.items():
            if not _is_real(getattr(self, name), low, high):
                raise OptionError(f"{name} must be a finite number in [{low:g}, {high:g}], "
                                  f"got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """The rules as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


# -------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class Plateau:
    """One plateau of the loss.

    Attributes:
        start: first step of the plateau.
        end: the step that closes it (the loss falls again there), or the last observed
            step when training stopped on the plateau.
        loss: the plateau loss: R at the snapshot.
        width: effective width at the snapshot (:func:`~saddlemap.reduce` with the
            monitor's ``width_tol``).
        verdict: the :class:`~saddlemap.PlateauVerdict` (``NOT_REFINED`` when the monitor
            was built with ``refine=False``).
        kind: the :class:`~saddlemap.Kind` of the refined point, if refined and converged;
            with frozen parameters, its kind within the trained subspace (by the spectrum
            of the trained block of the Hessian).
        critical_point: the full-space refinement (no parameter frozen), if refined.
        snapshot_step: the step of the snapshot (the stored state of least ‖∇R‖).
        frozen: the parameter blocks held fixed; the point is critical in the subspace of
            the others.
        refined: the refined network, if refined.
        grad_norm: ‖∇R‖ over the trained coordinates at the refined point.
        spectrum: the spectrum of the trained block of the Hessian at the refined point
            (subspace refinement only).
        distance: ‖θ_refined − θ_snapshot‖ / ‖θ_snapshot‖.
        max_path_loss: the largest R on the straight path from snapshot to refined point.
        accepted: the refinement converged, near enough and without a loss barrier.
        channel: the neuron pair that grows like a channel to infinity, if any.
        snapshot: the plateau state (least ‖∇R‖) the refinement started from.
        clusters: the groups of :func:`~saddlemap.reduce` (tolerance ``width_tol``) at the
            refined point: for each neuron of the reduced network, the neurons merged into
            it (a singleton for a neuron merged with none), if refined.
        null_neurons: the neurons that reduction drops at the refined point: groups whose
            output weights sum to zero, and zero or constant neurons (one group each).
        warnings: the :class:`~saddlemap.NoteCode` values of the refinement's warnings
            (full-space refinement only).
    """

    start: int
    end: int
    loss: float
    width: int
    verdict: PlateauVerdict
    kind: Kind | None
    critical_point: CriticalPoint | None
    snapshot_step: int | None = None
    frozen: tuple[str, ...] = ()
    refined: TwoLayerNet | None = None
    grad_norm: float | None = None
    spectrum: Spectrum | None = None
    distance: float | None = None
    max_path_loss: float | None = None
    accepted: bool = False
    channel: tuple[int, int] | None = None
    snapshot: TwoLayerNet | None = None
    clusters: tuple[tuple[int, ...], ...] = ()
    null_neurons: tuple[tuple[int, ...], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def duration(self) -> int:
        """``end − start`` in steps."""
        return self.end - self.start


# ------------------------------------------------------------------------ snapshots
class _Snapshots:
    """Parameter vectors at strided steps, at most ``capacity`` of them.

    When full, every other vector is dropped (the latest kept) and the stride doubles, so a
    long plateau keeps states spread over all of it.  :meth:`trim` forgets states before a
    step and restores the base stride (used between plateaus).
    """

    def __init__(self, capacity: int, base_stride: int) -> None:
        self.capacity, self.base = capacity, base_stride
        self.stride = base_stride
        self.steps: list[int] = []
        self.thetas: list[torch.Tensor] = []

    def wants(self, step: int) -> bool:
        return not self.steps or step - self.steps[-1] >= self.stride

    def add(self, step: int, theta: torch.Tensor) -> None:
        self.steps.append(step)
        self.thetas.append(theta.detach().clone())
        if len(self.steps) > self.capacity:
            keep = list(range(len(self.steps) - 1, -1, -2))[::-1]
            self.steps = [self.steps[i] for i in keep]
            self.thetas = [self.thetas[i] for i in keep]
            self.stride *= 2

    def trim(self, before: int) -> None:
        i = bisect.bisect_left(self.steps, before)
        del self.steps[:i], self.thetas[:i]
        self.stride = self.base

    def best(self, start: int, end: int,
             score: Callable[[int], float]) -> tuple[int, torch.Tensor] | None:
        """The stored state in [start, end] of least ``score(step)`` (ties: the earliest)."""
        inside = [j for j, s in enumerate(self.steps) if start <= s <= end]
        if not inside:
            return None
        i = min(inside, key=lambda j: score(self.steps[j]))
        return self.steps[i], self.thetas[i]


@dataclass
class _Candidate:
    """A closed run of on-plateau steps waiting for the loss to escape."""

    start: int
    end: int
    snap_step: int
    snap_theta: torch.Tensor
    snap_loss: float
    template: TwoLayerNet
    rate: float  # the plateau's log-rate of decrease, ln(R(start)/R(end)) / (end − start)


# ----------------------------------------------------------------------- refinement
@dataclass(frozen=True)
class _Refinement:
    net: TwoLayerNet
    converged: bool
    grad_norm: float
    kind: Kind | None
    spectrum: Spectrum | None = None
    critical_point: CriticalPoint | None = None


def _free_gradient(net: TwoLayerNet, data: Dataset, free: torch.Tensor) -> torch.Tensor:
    return gradient(net, data)[free]


def _lm_free(
    net: TwoLayerNet, data: Dataset, free: torch.Tensor, tol: float, max_iter: int
) -> tuple[torch.Tensor, bool]:
    """Levenberg–Marquardt on ∇_free R = 0 with the frozen coordinates held fixed.

    Each iteration solves (H_ff² + μI) s = −H_ff g_f by one eigendecomposition of the
    trained block H_ff of the dense Hessian (μ = c‖g_f‖², c adapting like a trust region)
    and accepts s when ‖g_f‖ falls.  Returns the flat θ and whether ‖g_f‖ ≤ ``tol``.
    """
    theta = net.flatten().clone()
    g = _free_gradient(net, data, free)
    c = 1.0
    for _ in range(max_iter):
        gn = float(torch.linalg.vector_norm(g))
        if gn <= tol:
            return theta, True
        H = hessian(net.unflatten(theta), data)[free][:, free]
        lam, V = torch.linalg.eigh(H)
        gh = V.T @ g
        for _ in range(40):
            s = -V @ (lam / (lam * lam + c * gn * gn) * gh)
            trial = theta.clone()
            trial[free] += s
            tg = _free_gradient(net.unflatten(trial), data, free)
            if bool(torch.isfinite(tg).all()) and float(torch.linalg.vector_norm(tg)) < gn:
                theta, g, c = trial, tg, max(c / 4, 1e-12)
                break
            c *= 4
        else:
            break  # no step lowers ‖g_f‖: gradient-flat or the rounding floor
    return theta, float(torch.linalg.vector_norm(g)) <= tol


def _subspace_kind(spec: Spectrum) -> Kind:
    """Kind by the trained block's spectrum: negative → saddle, all positive → minimum."""
    n_plus, n_zero, n_minus = spec.inertia if spec.inertia is not None else (0, 1, 0)
    if n_minus > 0:
        return Kind.STRICT_SADDLE
    return Kind.LOCAL_MINIMUM if n_zero == 0 and n_plus > 0 else Kind.UNDETERMINED


def _refine_subspace(
    net: TwoLayerNet, data: Dataset, free: torch.Tensor, tolerances: Tolerances, max_iter: int
) -> _Refinement:
    """Refine ``net`` on its trained coordinates and classify it within that subspace."""
    tol = Analysis(net, data, tolerances).grad_tol
    theta, converged = _lm_free(net, data, free, tol, max_iter)
    ref = net.unflatten(theta)
    g = _free_gradient(ref, data, free)
    if not converged:
        return _Refinement(ref, False, float(torch.linalg.vector_norm(g)), None)
    H = hessian(ref, data)[free][:, free]
    zero = tolerances.resolved(net.dtype).zero_eig_value
    spec = dense_spectrum(H, zero_rtol=zero)
    return _Refinement(ref, True, float(torch.linalg.vector_norm(g)), _subspace_kind(spec), spec)


def _refine_full(
    net: TwoLayerNet, data: Dataset, tolerances: Tolerances, max_iter: int
) -> _Refinement:
    """Refine every parameter with :func:`~saddlemap.find_critical_point`; classify."""
    cp = find_critical_point(net, data, tolerances=tolerances, max_iter=max_iter)
    kind = classify(cp.net, data, tolerances=tolerances).kind if cp.converged else None
    return _Refinement(cp.net, cp.converged, cp.grad_norm, kind, critical_point=cp)


def _path_max_loss(a: torch.Tensor, b: torch.Tensor, template: TwoLayerNet, data: Dataset,
                   points: int) -> float:
    """The largest R at ``points`` evenly spaced points of the segment from a to b."""
    return max(loss(template.unflatten(a + s * (b - a)), data)
               for s in np.linspace(0.0, 1.0, points))


def _channel_pair(snap: TwoLayerNet, ref: TwoLayerNet, snap_loss: float,
                  ref_loss: float) -> tuple[int, int] | None:
    """A pair of neurons that runs along a channel to infinity, or None.

    Evidence, measured between snapshot and refined point: R still falls
    (R_refined < R_snapshot); the two neurons' input weights are nearly equal
    (‖w̃_k − w̃_j‖ ≤ 0.05 (1 + ‖w̃_k‖)); their output weights point in opposite directions
    (cosine < −0.9); and together they grew by ≥ 1.5×.
    """
    if not ref_loss < snap_loss:
        return None
    w, a, a0 = ref.W_aug, ref.a, snap.a
    norms = torch.linalg.vector_norm(a, dim=1)
    norms0 = torch.linalg.vector_norm(a0, dim=1)
    for k in range(ref.width):
        for j in range(k + 1, ref.width):
            close = float(torch.linalg.vector_norm(w[k] - w[j])) <= _CHANNEL_CLOSE * (
                1 + float(torch.linalg.vector_norm(w[k])))
            denom = float(norms[k] * norms[j])
            opposite = denom > 0 and float(a[k] @ a[j]) / denom < -0.9
            grew = float(norms[k] + norms[j]) >= _CHANNEL_GROWTH * float(norms0[k] + norms0[j])
            if close and opposite and grew:
                return k, j
    return None


# -------------------------------------------------------------------------- monitor
class PlateauMonitor:
    """Detect loss plateaus during training and classify where they sit.

    Detection and verdict follow :class:`PlateauRules` (the constructor's ``window``,
    ``rtol``, ``min_length`` and the keyword options below; :attr:`rules` holds them all).

    Verdict, from the refinement of the snapshot (least ‖∇R‖ on the plateau) on the trained
    coordinates (every coordinate but the ``freeze`` blocks): accepted (converged, within
    ``max_distance``, no loss barrier on the path) and a saddle whose reduction (tolerance
    ``width_tol``) is narrower than the network → ``NARROWER_SADDLE`` (full width:
    ``SADDLE``); accepted and a local minimum → ``LOCAL_MINIMUM``; accepted otherwise →
    ``UNDETERMINED``; not accepted, with a neuron pair of nearly equal input weights whose
    opposite output weights grew while R fell → ``CHANNEL_TO_INFINITY``; otherwise
    ``NOT_NEAR_CRITICAL``.  The numbers (distance, largest path loss, ‖∇R‖ on the trained
    coordinates) are on the :class:`Plateau`.  Decisions use codes and numbers only.

    Without frozen parameters the refinement is :func:`~saddlemap.find_critical_point` and
    the kind :func:`~saddlemap.classify`'s; with frozen ones the monitor runs
    Levenberg–Marquardt on the trained block of the dense Hessian (at most 3000 trained
    parameters, else ``NOT_REFINED``) and classifies by that block's spectrum.

    Args:
        data: the training data (the loss, gradient and refinement use it).
        window: steps over which the loss decrease is measured.
        rtol: stall threshold, relative to the loss drop so far.
        min_length: fewest on-plateau steps for a plateau.
        width_tol: equal-weight tolerance of the effective width (loose: neurons that are
            nearly identical count as one).
        every: compute the effective width every this many steps (forward-filled between).
        refine: refine and classify the network of each plateau.
        tolerances: the tolerances of the refinement and classification.
        freeze: the blocks (``"a"``, ``"W"``, ``"b"``, ``"c"``) the trainer holds fixed.
            None: inferred from the :class:`~saddlemap.TrainState` gradients (which
            :func:`~saddlemap.train` zeroes on frozen coordinates): a block whose gradient
            was exactly zero at every observed step is frozen; nothing is frozen for
            :meth:`observe`.
        rel_rtol, floor, drop, escape_steps, speedup, max_distance, path_margin, path_points,
            snapshots, max_iter: see :class:`PlateauRules` (``escape_steps`` None:
            10 · window).

    Attributes:
        plateaus: the plateaus, in order.
        events: one log line per plateau start and end (and per discarded candidate).
        rules: the :class:`PlateauRules` in force.

    >>> mon = PlateauMonitor(Dataset(np.zeros((3, 1)), np.zeros(3)), window=2, min_length=3,
    ...                      refine=False)
    >>> net = TwoLayerNet([1.0], [[0.5]])
    >>> for t, value in enumerate([8, 4, 2, 2, 2, 2, 2, 2, 1, 0.5, 0.25]):
    ...     mon.observe(t, net, loss=value, grad_norm=1.0)
    >>> [(p.start, p.end) for p in mon.plateaus]
    [(2, 8)]
    """

    def __init__(
        self,
        data: Dataset,
        *,
        window: int = 100,
        rtol: float = 1e-3,
        min_length: int = 50,
        width_tol: float = 1e-3,
        every: int = 10,
        refine: bool = True,
        tolerances: Tolerances | None = None,
        freeze: Sequence[str] | None = None,
        rel_rtol: float = 0.1,
        floor: float = 1e-10,
        drop: float = 0.5,
        escape_steps: int | None = None,
        speedup: float = 4.0,
        max_distance: float = 0.1,
        path_margin: float = 0.01,
        path_points: int = 11,
        snapshots: int = 64,
        max_iter: int = 50,
    ) -> None:
        if not _is_int(every, 1):
            raise OptionError(f"every must be an integer ≥ 1, got {every!r}")
        if not _is_real(width_tol, 0.0):
            raise OptionError(f"width_tol must be a finite number ≥ 0, got {width_tol!r}")
        if escape_steps is None and _is_int(window, 1):
            escape_steps = 10 * window
        self.rules = PlateauRules(
            window=window, rtol=rtol, rel_rtol=rel_rtol, min_length=min_length, floor=floor,
            drop=drop,
            escape_steps=escape_steps,  # type: ignore[arg-type]
            speedup=speedup,
            max_distance=max_distance, path_margin=path_margin, path_points=path_points,
            snapshots=snapshots, max_iter=max_iter,
        )
        self.freeze = None if freeze is None else self._check_freeze(freeze)
        self.tolerances = tolerances or Tolerances()
        self.data = data
        self.window, self.rtol, self.min_length = int(window), float(rtol), int(min_length)
        self.width_tol, self.every, self.refine = float(width_tol), int(every), bool(refine)
        self.plateaus: list[Plateau] = []
        self.events: list[str] = []
        self._step: list[int] = []
        self._loss: list[float] = []
        self._grad: list[float] = []
        self._width: list[int] = []
        self._width_step: int | None = None
        self._run_start: int | None = None  # t₀ of the current on-plateau run
        self._run_length = 0
        self._announced = False
        self._pending: _Candidate | None = None
        self._snaps = _Snapshots(snapshots, max(1, math.ceil(2 * window / snapshots)))
        self._zero_blocks: set[str] | None = None  # blocks with ∇ = 0 at every TrainState
        self._X = data.X
        self._last_model: TwoLayerNet | torch.nn.Module | None = None

    @staticmethod
    def _check_freeze(freeze: Sequence[str]) -> tuple[str, ...]:
        names = (freeze,) if isinstance(freeze, str) else tuple(freeze)
        if not all(isinstance(n, str) and n in _BLOCKS for n in names):
            raise OptionError(f"freeze: names among 'a', 'W', 'b', 'c', got {freeze!r}")
        return names

    # ------------------------------------------------------------------ observation
    def __call__(self, state: TrainState) -> bool | None:
        """Callback for :func:`~saddlemap.train`: observe the state; never stops training."""
        if self.freeze is None:
            self._note_zero_blocks(state.net, state.grad)
        self._record(state.step, state.net, state.loss, state.grad_norm)
        return None

    def _note_zero_blocks(self, net: TwoLayerNet, grad: torch.Tensor) -> None:
        """Keep the blocks whose gradient is exactly zero at every observed TrainState."""
        if self._zero_blocks is not None and not self._zero_blocks:
            return  # every block has been trained: nothing left to find out
        present = [n for n in _BLOCKS if (n != "b" or net.b is not None)
                   and (n != "c" or net.c is not None)]
        zero = {n for n in present
                if not bool(grad[freeze_mask(net, [n]) == 0].any())}
        self._zero_blocks = zero if self._zero_blocks is None else self._zero_blocks & zero

    @property
    def frozen(self) -> tuple[str, ...]:
        """The blocks held fixed: the ``freeze`` option, or those inferred so far."""
        if self.freeze is not None:
            return self.freeze
        return tuple(n for n in _BLOCKS if n in (self._zero_blocks or set()))

    def observe(
        self,
        step: int,
        model: TwoLayerNet | torch.nn.Module,
        loss: float | None = None,
        grad_norm: float | None = None,
    ) -> None:
        """Observe one step of any training loop.

        Args:
            step: the step number (increasing).
            model: a :class:`~saddlemap.TwoLayerNet`, or a torch module made of
                Linear → activation → Linear (read by :meth:`TwoLayerNet.from_torch` only
                when the monitor needs the network).
            loss: R at this step; computed on the monitor's data when None.
            grad_norm: ‖∇R‖ at this step; computed (closed form) when None.
        """
        net: TwoLayerNet | None = model if isinstance(model, TwoLayerNet) else None
        if loss is None or grad_norm is None:
            net = self._as_net(model)
            value, grad = loss_and_gradient(net, self.data.to(net.dtype, net.device))
            loss = value if loss is None else loss
            grad_norm = float(torch.linalg.vector_norm(grad)) if grad_norm is None else grad_norm
        self._record(int(step), net if net is not None else model, float(loss), grad_norm)

    @staticmethod
    def _as_net(model: TwoLayerNet | torch.nn.Module) -> TwoLayerNet:
        if isinstance(model, TwoLayerNet):
            return model
        return TwoLayerNet.from_torch(model)

    def _effective_width(self, net: TwoLayerNet) -> int:
        if _plainly_minimal(net, self.width_tol):
            return net.width
        return int(self._reduction(net).width)

    def _reduction(self, net: TwoLayerNet) -> Reduction:
        X = self._X.to(device=net.device, dtype=net.dtype)
        return reduce(net, X, tol=self.width_tol, check_rank=False)

    def _record(
        self, step: int, model: TwoLayerNet | torch.nn.Module, loss: float, grad_norm: float
    ) -> None:
        if self._width_step is None or step - self._width_step >= self.every:
            self._width.append(self._effective_width(self._as_net(model)))
            self._width_step = step
        else:
            self._width.append(self._width[-1])
        self._last_model = model
        self._step.append(step)
        self._loss.append(loss)
        self._grad.append(grad_norm)
        if self._snaps.wants(step):
            self._snaps.add(step, self._as_net(model).flatten())
        drop = self._window_drop(step, loss)
        if drop is not None and self._stalled(loss, drop):
            self._extend_run(step, loss)
        elif self._run_start is not None:
            self._close(step)
        if self._run_start is None:
            self._snaps.trim(step - self.window)
        self._check_escape(step, loss)

    def _window_drop(self, step: int, loss: float) -> float | None:
        """R(t − window) − R(t), or None before a full window or at a non-finite loss."""
        i = bisect.bisect_right(self._step, step - self.window) - 1
        if i < 0 or not math.isfinite(loss) or not math.isfinite(self._loss[0]):
            return None
        return self._loss[i] - loss

    def _stalled(self, loss: float, drop: float) -> bool:
        """Above the floor, stalled relative to the drop so far and at most sinking slowly."""
        r0, rules = self._loss[0], self.rules
        # |drop|: a loss that rises (Adam's spikes) is no more a stall than one that falls fast
        return (loss >= rules.floor * r0 and drop <= rules.rtol * (r0 - loss)
                and abs(drop) <= rules.rel_rtol * loss)

    def _extend_run(self, step: int, loss: float) -> None:
        if self._run_start is None:
            self._run_start, self._run_length = step, 0
        self._run_length += 1
        if self._run_length >= self.min_length and not self._announced:
            self._announced = True
            self.events.append(
                f"step {step}: plateau since step {self._plateau_start()} at loss {loss:.4g}"
            )

    def _plateau_start(self) -> int:
        assert self._run_start is not None
        return max(self._run_start - self.window, self._step[0])

    def _loss_at(self, step: int) -> float:
        return self._loss[bisect.bisect_right(self._step, step) - 1]

    def _grad_at(self, step: int) -> float:
        g = self._grad[bisect.bisect_right(self._step, step) - 1]
        return g if math.isfinite(g) else math.inf

    def _close(self, step: int) -> None:
        """End the on-plateau run at ``step``: a long enough run becomes a candidate."""
        if self._run_length >= self.min_length:
            start = self._plateau_start()
            if self._pending is not None:  # no escape since the last one: one plateau
                start = self._pending.start
            # the closest approach to the critical point the plateau passes: the least ‖∇R‖
            found = self._snaps.best(start, step, self._grad_at)
            assert found is not None  # the run's states are kept until it closes
            snap_step, theta = found
            if self._pending is not None and self._grad_at(
                    self._pending.snap_step) <= self._grad_at(snap_step):
                snap_step, theta = self._pending.snap_step, self._pending.snap_theta
            template = self._as_net(self._last_model)  # type: ignore[arg-type]
            rate = _log_rate(self._loss_at(start), self._loss_at(step), step - start)
            self._pending = _Candidate(start, step, snap_step, theta,
                                       self._loss_at(snap_step), template, rate)
        self._run_start, self._run_length, self._announced = None, 0, False

    def _check_escape(self, step: int, loss: float) -> None:
        """Confirm the candidate once R ≤ (1 − drop) R_plateau; drop it after escape_steps."""
        cand = self._pending
        if cand is None:
            return
        # the escape's rate from the plateau's end, over at least a window: one noisy step (or
        # Adam's recovery from a spike) does not make an escape
        reference = min(self._loss_at(cand.end), cand.snap_loss)
        if loss <= (1 - self.rules.drop) * cand.snap_loss and _log_rate(
                reference, loss, max(step - cand.end, self.window)
        ) >= self.rules.speedup * cand.rate:
            self._pending = None
            self._confirm(cand)
        elif step - cand.end > self.rules.escape_steps:
            self._pending = None
            self._discard(cand, step)

    def _discard(self, cand: _Candidate, step: int) -> None:
        self.events.append(
            f"step {step}: flat stretch {cand.start}–{cand.end} is no plateau: the loss did not "
            f"fall below {(1 - self.rules.drop) * cand.snap_loss:.4g} after it, "
            f"{self.rules.speedup:g}× faster than on it"
        )

    def _confirm(self, cand: _Candidate) -> None:
        plateau = self._analyse(cand)
        self.plateaus.append(plateau)
        self.events.append(
            f"step {cand.end}: plateau {cand.start}–{cand.end} ({plateau.duration} steps) at "
            f"loss {plateau.loss:.4g}, width {plateau.width}: {plateau.verdict.value}"
        )

    # ------------------------------------------------------------------- analysis
    def _analyse(self, cand: _Candidate) -> Plateau:
        snap = cand.template.unflatten(cand.snap_theta)
        width = self._effective_width(snap)
        base = Plateau(cand.start, cand.end, cand.snap_loss, width, PlateauVerdict.NOT_REFINED,
                       None, None, snapshot_step=cand.snap_step, frozen=self.frozen,
                       snapshot=snap)
        if not self.refine:
            return base
        data = self.data.to(snap.dtype, snap.device)
        try:
            ref = self._refine(snap, data)
        except Exception as exc:  # a failed refinement must not stop training
            self.events.append(f"step {cand.end}: refinement failed: {exc}")
            return dataclasses.replace(base, verdict=PlateauVerdict.NOT_NEAR_CRITICAL)
        if ref is None:
            self.events.append(f"step {cand.end}: more than {_DENSE_FREE_LIMIT} trained "
                               "parameters with frozen ones: not refined")
            return base
        return self._judge(base, snap, ref, data)

    def _refine(self, snap: TwoLayerNet, data: Dataset) -> _Refinement | None:
        if not self.frozen:
            return _refine_full(snap, data, self.tolerances, self.rules.max_iter)
        free = (freeze_mask(snap, self.frozen) != 0).nonzero().flatten()
        if free.numel() > _DENSE_FREE_LIMIT:
            return None
        return _refine_subspace(snap, data, free, self.tolerances, self.rules.max_iter)

    def _judge(self, base: Plateau, snap: TwoLayerNet, ref: _Refinement, data: Dataset) -> Plateau:
        """Acceptance numbers, channel evidence and the verdict (see the class docstring)."""
        a, b = snap.flatten(), ref.net.flatten()
        distance = float(torch.linalg.vector_norm(b - a)) / max(
            float(torch.linalg.vector_norm(a)), 1e-300)
        path = _path_max_loss(a, b, snap, data, self.rules.path_points)
        accepted = (ref.converged and distance <= self.rules.max_distance
                    and path <= base.loss * (1 + self.rules.path_margin))
        channel = None if accepted else _channel_pair(snap, ref.net, base.loss,
                                                      loss(ref.net, data))
        red = self._reduction(ref.net)
        cp = ref.critical_point
        return dataclasses.replace(
            base, verdict=self._verdict(accepted, ref, channel, red), kind=ref.kind,
            critical_point=cp, refined=ref.net, grad_norm=ref.grad_norm,
            spectrum=ref.spectrum, distance=distance, max_path_loss=path, accepted=accepted,
            channel=channel, clusters=red.groups,
            null_neurons=(*red.dropped_null, *((k,) for k in red.dropped_zero)),
            warnings=() if cp is None else tuple(w.code.value for w in cp.warnings),
        )

    def _verdict(self, accepted: bool, ref: _Refinement, channel: tuple[int, int] | None,
                 red: Reduction) -> PlateauVerdict:
        if not accepted:
            return (PlateauVerdict.NOT_NEAR_CRITICAL if channel is None
                    else PlateauVerdict.CHANNEL_TO_INFINITY)
        if ref.kind is not None and ref.kind.is_saddle:
            narrower = red.width < ref.net.width
            return PlateauVerdict.NARROWER_SADDLE if narrower else PlateauVerdict.SADDLE
        if ref.kind in (Kind.LOCAL_MINIMUM, Kind.GLOBAL_MINIMUM):
            return PlateauVerdict.LOCAL_MINIMUM
        return PlateauVerdict.UNDETERMINED

    def finish(self) -> list[Plateau]:
        """Settle the open run and the waiting candidate; return :attr:`plateaus`.

        A candidate whose escape was not seen before training stopped is no plateau; a run
        still open is one only when its last window also stalled relative to R itself (see
        :class:`PlateauRules`), and then it ends at the last observed step.
        """
        if self._pending is not None:
            self._discard(self._pending, self._step[-1])
            self._pending = None
        if self._run_start is not None and self._run_length >= self.min_length:
            drop = self._window_drop(self._step[-1], self._loss[-1])
            stuck = drop is not None and drop <= self.rtol * self._loss[-1]
            self._close(self._step[-1])
            cand, self._pending = self._pending, None
            if cand is not None and stuck:
                self._confirm(cand)
            elif cand is not None:
                self._discard(cand, self._step[-1])
        self._run_start, self._run_length, self._announced = None, 0, False
        return self.plateaus

    # ------------------------------------------------------------------- results
    @property
    def history(self) -> dict[str, np.ndarray]:
        """``"step"``, ``"loss"``, ``"grad_norm"`` and ``"width"`` at every observed step."""
        return {
            "step": np.asarray(self._step, dtype=np.int64),
            "loss": np.asarray(self._loss, dtype=np.float64),
            "grad_norm": np.asarray(self._grad, dtype=np.float64),
            "width": np.asarray(self._width, dtype=np.int64),
        }
