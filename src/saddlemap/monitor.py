"""A training monitor that finds loss plateaus and says what the network sits near.

:class:`PlateauMonitor` watches a training run, either as a callback of
:func:`~saddlemap.train` or through :meth:`PlateauMonitor.observe` from any torch loop.  It
records the loss, the gradient norm and the effective width (the width of
:func:`~saddlemap.reduce` with a loose tolerance), detects plateaus of the loss, and at the end
of each plateau refines the network to a nearby critical point and classifies it
(docs/theory.md §9):
a Saad–Solla plateau sits near a splitting branch of a narrower network's saddle, a
channel to infinity looks like a plateau whose refinement runs off to large weights.

Cost: the loss and the gradient norm come free from the :class:`~saddlemap.TrainState`; the
effective width is computed every ``every`` steps, by a vectorised check that no two neurons
are within ``width_tol`` (and none is null), falling back to :func:`~saddlemap.reduce` (no
rank check, ~20 ms at m = 100) only when some could merge.  Measured on d = 10, m = 100,
n = 1000, erf, default gd (float64, one thread, refinement excluded): a training step takes
about 3.4 ms and the monitor about 0.03–0.05 ms per step with ``every=10``, about 1 %.

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
import math
from dataclasses import dataclass

import numpy as np
import torch

from .critical_points import CriticalPoint, find_critical_point
from .data import Dataset
from .derivatives import loss_and_gradient
from .errors import OptionError
from .network import TwoLayerNet
from .reduction import default_tolerances, reduce
from .saddles import classify
from .tolerances import Tolerances
from .training import TrainState
from .verdicts import Kind, NoteCode, PlateauVerdict

__all__ = ["Plateau", "PlateauMonitor"]

#: Evidence of a critical point at infinity in a refinement that did not converge.
_INFINITY_CODES = (
    NoteCode.PARAMETERS_GREW, NoteCode.CHANNEL_PAIR, NoteCode.LARGE_WEIGHTS, NoteCode.AT_INFINITY,
)


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


@dataclass(frozen=True, eq=False)
class Plateau:
    """One plateau of the loss.

    Attributes:
        start: first step of the plateau.
        end: the step that closes it (the loss falls again there), or the last observed
            step when training stopped on the plateau.
        loss: the loss at ``end``.
        width: effective width at ``end`` (:func:`~saddlemap.reduce` with the monitor's
            ``width_tol``).
        verdict: the :class:`~saddlemap.PlateauVerdict` (``NOT_REFINED`` when the monitor
            was built with ``refine=False``).
        kind: the :class:`~saddlemap.Kind` of the refined point, if refined and converged.
        critical_point: the refinement of the network at ``end``, if refined.
    """

    start: int
    end: int
    loss: float
    width: int
    verdict: PlateauVerdict
    kind: Kind | None
    critical_point: CriticalPoint | None

    @property
    def duration(self) -> int:
        """``end − start`` in steps."""
        return self.end - self.start


class PlateauMonitor:
    """Detect loss plateaus during training and classify where they sit.

    Detection rule.  Step t is *on a plateau* when the relative loss decrease over the last
    ``window`` steps is below ``rtol``: R(t − window) − R(t) ≤ ``rtol`` · R(t), where
    R(t − window) is the loss at the latest observed step ≤ t − window (steps earlier than
    ``window`` after the first observation are never on a plateau).  A *plateau* is a
    maximal run of on-plateau steps t₀ … t₁ with t₁ − t₀ + 1 ≥ ``min_length``; since the
    test at t₀ already says the loss was flat since t₀ − window, the plateau's ``start`` is
    t₀ − window (not before the first observation), and its ``end`` is the first step after
    t₁, where the loss falls again (or the last step, at :meth:`finish`).  For a loss that is
    exactly constant on [S, E] and falls by more than ``rtol`` per step outside, this gives
    start = S and end = E + 1.

    At the end of a plateau the network there is snapshotted; with ``refine``,
    :func:`~saddlemap.find_critical_point` (50 iterations) refines it and
    :func:`~saddlemap.classify` classifies the result.  Verdict: converged and a (strict or
    non-strict) saddle whose reduction (tolerance ``width_tol``) is narrower than the
    network → ``NARROWER_SADDLE`` (full width: ``SADDLE``); converged and a local minimum →
    ``LOCAL_MINIMUM``; not converged with evidence of infinity (parameters that grew, a
    diverging pair, weights above ``tolerances.weight_limit``) → ``CHANNEL_TO_INFINITY``;
    otherwise ``NOT_NEAR_CRITICAL``.

    Args:
        data: the training data (the loss, gradient and refinement use it).
        window: steps over which the loss decrease is measured.
        rtol: relative decrease below which a step is on a plateau.
        min_length: fewest on-plateau steps for a plateau.
        width_tol: equal-weight tolerance of the effective width (loose: neurons that are
            nearly identical count as one).
        every: compute the effective width every this many steps (forward-filled between).
        refine: refine and classify the network at each plateau's end.
        tolerances: the tolerances of the refinement and classification.

    Attributes:
        plateaus: the closed plateaus, in order.
        events: one log line per plateau start and end.

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
    ) -> None:
        if not all(isinstance(v, int) and v >= 1 for v in (window, min_length, every)):
            raise OptionError("window, min_length and every must be integers ≥ 1")
        if not all(isinstance(v, (int, float)) and 0 <= v < math.inf for v in (rtol, width_tol)):
            raise OptionError("rtol and width_tol must be finite numbers ≥ 0")
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
        self._X = data.X
        self._last_model: TwoLayerNet | torch.nn.Module | None = None

    # ------------------------------------------------------------------ observation
    def __call__(self, state: TrainState) -> bool | None:
        """Callback for :func:`~saddlemap.train`: observe the state; never stops training."""
        self._record(state.step, state.net, state.loss, state.grad_norm)
        return None

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
        X = self._X.to(device=net.device, dtype=net.dtype)
        return int(reduce(net, X, tol=self.width_tol, check_rank=False).width)

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
        if self._on_plateau(step, loss):
            if self._run_start is None:
                self._run_start, self._run_length = step, 0
            self._run_length += 1
            if self._run_length >= self.min_length and not self._announced:
                self._announced = True
                self.events.append(
                    f"step {step}: plateau since step {self._plateau_start()} at loss {loss:.4g}"
                )
        elif self._run_start is not None:
            self._close(step, model, loss)

    def _on_plateau(self, step: int, loss: float) -> bool:
        i = bisect.bisect_right(self._step, step - self.window) - 1
        if i < 0 or not math.isfinite(loss):
            return False
        return self._loss[i] - loss <= self.rtol * loss

    def _plateau_start(self) -> int:
        assert self._run_start is not None
        return max(self._run_start - self.window, self._step[0])

    def _close(self, step: int, model: TwoLayerNet | torch.nn.Module, loss: float) -> None:
        if self._run_length >= self.min_length:
            start = self._plateau_start()
            plateau = self._analyse(start, step, self._as_net(model), loss)
            self.plateaus.append(plateau)
            self.events.append(
                f"step {step}: plateau {start}–{step} ({plateau.duration} steps) ended at loss "
                f"{loss:.4g}, width {plateau.width}: {plateau.verdict.value}"
            )
        self._run_start, self._run_length, self._announced = None, 0, False

    # ------------------------------------------------------------------- analysis
    def _analyse(self, start: int, end: int, net: TwoLayerNet, loss: float) -> Plateau:
        width = self._effective_width(net)
        if not self.refine:
            return Plateau(start, end, loss, width, PlateauVerdict.NOT_REFINED, None, None)
        data = self.data.to(net.dtype, net.device)
        try:
            cp = find_critical_point(net, data, tolerances=self.tolerances, max_iter=50)
            kind = classify(cp.net, data, tolerances=self.tolerances).kind if cp.converged else None
        except Exception as exc:  # a failed refinement must not stop training
            self.events.append(f"step {end}: refinement failed: {exc}")
            return Plateau(start, end, loss, width, PlateauVerdict.NOT_NEAR_CRITICAL, None, None)
        return Plateau(start, end, loss, width, self._verdict(cp, kind), kind, cp)

    def _verdict(self, cp: CriticalPoint, kind: Kind | None) -> PlateauVerdict:
        if cp.converged and kind is not None and kind.is_saddle:
            narrower = self._effective_width(cp.net) < cp.net.width
            return PlateauVerdict.NARROWER_SADDLE if narrower else PlateauVerdict.SADDLE
        if cp.converged and kind in (Kind.LOCAL_MINIMUM, Kind.GLOBAL_MINIMUM):
            return PlateauVerdict.LOCAL_MINIMUM
        if cp.converged and kind is not Kind.NOT_CRITICAL:
            return PlateauVerdict.UNDETERMINED
        if not cp.converged and any(cp.has(code) for code in _INFINITY_CODES):
            return PlateauVerdict.CHANNEL_TO_INFINITY
        return PlateauVerdict.NOT_NEAR_CRITICAL

    def finish(self) -> list[Plateau]:
        """Close a plateau still open at the last observed step; return :attr:`plateaus`.

        Only the last observed step's loss and network are at hand, so the network for the
        analysis is the one last passed in (for a torch module: its current state).
        """
        if self._run_start is not None and self._run_length >= self.min_length:
            assert self._last_model is not None
            self._close(self._step[-1], self._last_model, self._loss[-1])
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
