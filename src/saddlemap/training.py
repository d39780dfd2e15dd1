"""Training to near-stationarity on the closed-form gradient, full-batch or by minibatches.

Four optimizers, all on the flat parameter vector θ (layout of
:class:`~saddlemap.network.ParamLayout`) and the exact gradient ∇R(θ) of
:func:`~saddlemap.derivatives.gradient`:

* ``"gd"``: θ ← θ − η ∇R(θ) with η below 1/λ_max(∇²R) (docs/theory.md §10.1: a larger step can
  diverge, and a diverging run looks like an escape from a saddle).  Without an explicit
  ``lr`` the step starts at :func:`safe_step_size`; a step that would raise the loss is
  rejected, η is halved (and capped by 0.9/λ_max re-estimated at the current point) and the
  step retried, so the recorded loss never rises by more than rounding (16 ulps of R).
* ``"momentum"``: heavy ball, u ← 0.9 u + ∇R(θ) (u₀ = 0), θ ← θ − η u (the rule of
  ``torch.optim.SGD`` with momentum 0.9).
* ``"adam"``: ``torch.optim.Adam`` with ``.grad`` set from the closed form.
* ``"lbfgs"``: ``torch.optim.LBFGS`` with a strong-Wolfe line search; one training step is
  one L-BFGS iteration.

Step t means "after t updates": the state at step 0 is the initial network.  At every step
the loss and gradient are evaluated, every callback sees the :class:`TrainState`, and
training stops at the first step where ‖∇R‖ ≤ ``grad_tol``, R ≤ ``loss_tol``, a callback
returns True, or t = ``steps``.  Frozen parameters get a zero gradient, so they never move,
and ‖∇R‖ is the norm over the free coordinates.

**Minibatches.**  With ``batch_size=B < n`` the step at θ_t uses the gradient of the
minibatch risk R_{B_t}(θ) = (1/B) Σ_{i∈B_t} ℓ(g(θ, x_i), y_i) (plus the penalty): each
epoch is a random permutation of the samples (``shuffle=True``; else their order) cut into
⌊n/B⌋ batches of exactly B, the last n mod B samples of the permutation left out, so every
batch is a uniform random B-subset.  The permutations come from a generator seeded with
``seed``: the same arguments give the same run.  gd is then plain SGD with a fixed step
(``lr``, or :func:`safe_step_size` at the initial point when None): the adaptive rule above
compares full-batch losses and does not apply to minibatches.  L-BFGS is full-batch only.
The history records the minibatch loss and gradient norm at every step and, every
``eval_every`` steps and at the last one, the full-batch R and ‖∇R‖ on ``eval_data`` (the
training data by default); ``grad_tol`` and ``loss_tol`` are checked on those evaluations.

>>> from saddlemap.problems import teacher_student
>>> prob = teacher_student(teacher_width=1, width=2, d=2, n=13, activation="tanh")
>>> run = train(prob.student, prob.data, steps=50)
>>> run.steps, run.stop_reason, bool(run.loss < run.history.loss[0])
(50, 'steps', True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import Dataset
from .derivatives import hessian, loss, loss_and_gradient
from .errors import OptionError
from .network import TwoLayerNet
from .spectral import dense_spectrum, spectrum

__all__ = [
    "Callback",
    "History",
    "TrainResult",
    "TrainState",
    "freeze_mask",
    "safe_step_size",
    "train",
]

Optimizer = Literal["gd", "momentum", "adam", "lbfgs"]

#: Up to this many parameters the step size uses the dense Hessian spectrum.
DENSE_STEP_LIMIT = 64
_SAFETY = 0.9
_DEFAULT_LR = {"momentum": 1e-2, "adam": 1e-2, "lbfgs": 1.0}
#: Heavy-ball coefficient of the ``"momentum"`` optimizer.
MOMENTUM = 0.9
_FREEZABLE = ("a", "W", "b", "c")
# gd: a rise of the loss up to this many ulps of |R| is rounding, not a rise.
_ROUNDING_ULPS = 16
# gd: a rejected step is halved at most this often before training stops ("stalled").
_MAX_HALVINGS = 60


@dataclass(frozen=True, eq=False)
class TrainState:
    """The state a callback sees at one step.

    Attributes:
        step: number of updates made so far (0 is the initial network).
        net: the network at this step.
        loss: R(θ) at this step.
        grad: ∇R(θ) in the flat layout, zero on frozen coordinates.
        grad_norm: ‖grad‖.
        batch_size: B when the step is a minibatch step (then ``loss``, ``grad`` and
            ``grad_norm`` are the minibatch's R_B, ∇R_B and ‖∇R_B‖), None for full batch.
        eval_loss: at an evaluation step, the full-batch R on the evaluation set, else None.
        eval_grad_norm: at an evaluation step, the full-batch ‖∇R‖ (trained coordinates)
            on the evaluation set, else None.
    """

    step: int
    net: TwoLayerNet
    loss: float
    grad: torch.Tensor
    grad_norm: float
    batch_size: int | None = None
    eval_loss: float | None = None
    eval_grad_norm: float | None = None

    @property
    def full_loss(self) -> float | None:
        """The full-batch R at this step (minibatches: ``eval_loss``, None in between)."""
        return self.loss if self.batch_size is None else self.eval_loss

    @property
    def full_grad_norm(self) -> float | None:
        """The full-batch ‖∇R‖ at this step, as :attr:`full_loss`."""
        return self.grad_norm if self.batch_size is None else self.eval_grad_norm


#: A training callback: gets each :class:`TrainState`; returning True stops training.
Callback = Callable[[TrainState], bool | None]


@dataclass(frozen=True, eq=False)
class History:
    """Loss and gradient norm, recorded every ``record_every`` steps and at the last step.

    Attributes:
        step: the recorded steps, ascending (int64).
        loss: R at those steps (minibatch training: the loss of the step's minibatch).
        grad_norm: ‖∇R‖ over the free coordinates at those steps (minibatch: ‖∇R_B‖).
        eval_step: the evaluation steps (every ``eval_every`` and the last), or None when
            nothing was evaluated (full batch without ``eval_data``).
        eval_loss: the full-batch R on the evaluation set at ``eval_step``.
        eval_grad_norm: the full-batch ‖∇R‖ on the evaluation set at ``eval_step``.
    """

    step: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    eval_step: np.ndarray | None = None
    eval_loss: np.ndarray | None = None
    eval_grad_norm: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.step.size)


@dataclass(frozen=True, eq=False)
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        net: the network at the last step.
        history: the recorded loss and gradient norms.
        steps: the number of updates made.
        converged: whether the final ‖∇R‖ ≤ ``grad_tol``.
        stop_reason: ``"grad_tol"``, ``"loss_tol"``, ``"callback"`` or ``"steps"``; also
            ``"diverged"`` (non-finite loss or gradient: the last finite state is kept) and
            ``"stalled"`` (gd found no step that does not raise the loss).
        lr: the step size at the end (gd may have halved it), else the one used.
        optimizer: the optimizer's name.
        batch_size: the minibatch size B, or None for full-batch training.
    """

    net: TwoLayerNet
    history: History
    steps: int
    converged: bool
    stop_reason: str
    lr: float
    optimizer: str
    batch_size: int | None = None

    @property
    def loss(self) -> float:
        """R at the last step (minibatches: the full-batch R of the last evaluation)."""
        h = self.history
        return float(h.loss[-1] if self.batch_size is None else h.eval_loss[-1])  # type: ignore[index]

    @property
    def grad_norm(self) -> float:
        """‖∇R‖ at the last step (minibatches: the last evaluation's full-batch ‖∇R‖)."""
        h = self.history
        if self.batch_size is None:
            return float(h.grad_norm[-1])
        return float(h.eval_grad_norm[-1])  # type: ignore[index]


# ----------------------------------------------------------------------------- step size
def _lambda_max(net: TwoLayerNet, data: Dataset, seed: int) -> float:
    """Largest Hessian eigenvalue: dense for tiny P, else one Lanczos pair."""
    if net.num_params > DENSE_STEP_LIMIT:
        spec = spectrum(net, data, k=1, which="largest", method="lanczos", tol=1e-8, seed=seed)
        if spec.eigenvalues.size:  # else Lanczos did not converge: fall back to dense
            return spec.max
    return dense_spectrum(hessian(net, data), k=1, which="largest").max


def safe_step_size(
    net: TwoLayerNet, data: Dataset, safety: float = 0.9, *, seed: int = 0
) -> float:
    """A gradient-descent step η = safety / λ_max(∇²R(θ)), below 1/λ_max (docs/theory.md §10.1).

    λ_max comes from the dense spectrum for at most 64 parameters and from Lanczos on the
    matrix-free Hessian above (``seed`` fixes its start vector).

    Args:
        net: the network θ.
        data: the data defining R.
        safety: the fraction of 1/λ_max to take, in (0, 1].
        seed: seed of the Lanczos start vector.

    Returns:
        The step size η > 0.

    Raises:
        OptionError: ``safety`` outside (0, 1], or λ_max ≤ 0 (no positive curvature bounds
            the step: pass ``lr`` explicitly).

    >>> from saddlemap.problems import teacher_student
    >>> prob = teacher_student(1, 2, d=2, n=13, activation="tanh")
    >>> eta = safe_step_size(prob.student, prob.data, safety=0.5)
    >>> abs(eta * spectrum(prob.student, prob.data).max - 0.5) < 1e-12
    True
    """
    if not (0.0 < safety <= 1.0):
        raise OptionError(f"safety must be in (0, 1], got {safety!r}")
    lam = _lambda_max(net, data, seed)
    if not (math.isfinite(lam) and lam > 0.0):
        raise OptionError(
            f"the Hessian has no positive eigenvalue (λ_max = {lam:.3g}), so no curvature "
            "bounds the gradient step; pass lr explicitly"
        )
    return safety / lam


# ----------------------------------------------------------------------------- objective
def freeze_mask(net: TwoLayerNet, freeze: Sequence[str]) -> torch.Tensor:
    """1.0 on the trained coordinates of the flat vector, 0.0 on the frozen ones.

    Args:
        net: the network (its layout says where a, W, b, c sit).
        freeze: names among ``"a"``, ``"W"``, ``"b"``, ``"c"`` (one name or several).

    Returns:
        The mask, shape (P,), in the network's dtype and on its device.

    Raises:
        OptionError: an unknown name, or ``"b"``/``"c"`` for a network without that bias.

    >>> net = TwoLayerNet([1.0, -2.0], [[0.5], [1.5]])
    >>> freeze_mask(net, ["a"]).tolist()
    [0.0, 1.0, 0.0, 1.0]
    """
    names = (freeze,) if isinstance(freeze, str) else tuple(freeze)
    for name in names:
        if name not in _FREEZABLE:
            raise OptionError(f"freeze: unknown parameter {name!r}; use 'a', 'W', 'b' or 'c'")
    if "b" in names and net.b is None:
        raise OptionError("freeze: 'b' given but the network has no hidden bias")
    if "c" in names and net.c is None:
        raise OptionError("freeze: 'c' given but the network has no output bias")
    lay, d = net.layout, net.input_dim

    def keep(name: str, *shape: int) -> torch.Tensor:
        return torch.full(shape, float(name not in names), dtype=net.dtype, device=net.device)

    w_mask = torch.cat([keep("W", lay.width, d), keep("b", lay.width, lay.aug_dim - d)], dim=1)
    c_mask = keep("c", lay.output_dim * int(lay.output_bias))
    return lay.join(keep("a", lay.width, lay.output_dim), w_mask, c_mask)


class _Batches:
    """The minibatch index sets: epochs of a seeded permutation cut into ⌊n/B⌋ batches of B."""

    def __init__(self, n: int, size: int, shuffle: bool, seed: int) -> None:
        self.n, self.size, self.shuffle = n, size, shuffle
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.arange(n)
        self.next_batch = n // size  # an exhausted epoch: the first call starts one

    def next(self) -> torch.Tensor:
        if self.next_batch >= self.n // self.size:
            self.order = torch.randperm(self.n, generator=self.gen) if self.shuffle \
                else torch.arange(self.n)
            self.next_batch = 0
        start = self.next_batch * self.size
        self.next_batch += 1
        return self.order[start:start + self.size]


@dataclass(frozen=True)
class _Evaluation:
    """Full-batch R and ‖∇R‖ on the evaluation data, every ``every`` steps and at ``last``."""

    data: Dataset
    every: int
    last: int

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step >= self.last

    def add_to(self, state: TrainState, mask: torch.Tensor) -> TrainState:
        value, grad = loss_and_gradient(state.net, self.data)
        norm = float(torch.linalg.vector_norm(grad * mask))
        return dataclasses.replace(state, eval_loss=value, eval_grad_norm=norm)


@dataclass(frozen=True)
class _Objective:
    """R and the masked ∇R as functions of the flat vector θ.

    With ``batches`` each :meth:`state` is the next minibatch's R_B and ∇R_B; with an
    ``evaluation`` the states of its steps carry the full-batch R and ‖∇R‖ on its data.
    """

    template: TwoLayerNet
    data: Dataset
    mask: torch.Tensor
    batches: _Batches | None = None
    evaluation: _Evaluation | None = None
    # the last state computed, keyed by the identity of its θ: gd's accepted trial step is
    # the next state of the loop, so its forward and backward pass are not repeated
    _last: list[tuple[torch.Tensor, TrainState]] = field(default_factory=list, compare=False)

    def evaluated(self, state: TrainState) -> TrainState:
        """``state`` with the evaluation's R and ‖∇R‖ (unchanged without an evaluation)."""
        if self.evaluation is None or state.eval_loss is not None:
            return state
        return self.evaluation.add_to(state, self.mask)

    def _with_evaluation(self, state: TrainState) -> TrainState:
        if self.evaluation is not None and state.step >= 0 and self.evaluation.due(state.step):
            return self.evaluation.add_to(state, self.mask)
        return state

    def _minibatch_state(self, step: int, theta: torch.Tensor) -> TrainState:
        assert self.batches is not None
        net = self.template.unflatten(theta)
        value, grad = loss_and_gradient(net, self.data.subset(self.batches.next()))
        grad = grad * self.mask
        state = TrainState(step, net, value, grad, float(torch.linalg.vector_norm(grad)),
                           batch_size=self.batches.size)
        return self._with_evaluation(state)

    def loss(self, theta: torch.Tensor) -> float:
        if not bool(torch.isfinite(theta).all()):
            return math.inf
        return loss(self.template.unflatten(theta), self.data)

    def state(self, step: int, theta: torch.Tensor) -> TrainState:
        if self.batches is not None:
            return self._minibatch_state(step, theta)
        if self._last and self._last[0][0] is theta:
            return self._with_evaluation(dataclasses.replace(self._last[0][1], step=step))
        net = self.template.unflatten(theta)
        value, grad = loss_and_gradient(net, self.data)
        grad = grad * self.mask
        state = TrainState(step, net, value, grad, float(torch.linalg.vector_norm(grad)))
        self._last[:] = [(theta, state)]
        return self._with_evaluation(state)

    def trial_loss(self, theta: torch.Tensor) -> float:
        """R(θ) of a trial point, through :meth:`state` so an accepted trial is reused."""
        if not bool(torch.isfinite(theta).all()):
            return math.inf
        value = self.state(-1, theta).loss
        return value if math.isfinite(value) else math.inf


def _finite(state: TrainState) -> bool:
    evaluated = [v for v in (state.eval_loss, state.eval_grad_norm) if v is not None]
    return all(math.isfinite(v) for v in (state.loss, state.grad_norm, *evaluated))


# ---------------------------------------------------------------------------- optimizers
class _Stepper(Protocol):
    lr: float

    def step(self, theta: torch.Tensor, state: TrainState) -> torch.Tensor | None:
        """The next θ, or None when there is no acceptable step (gd: stalled)."""


@dataclass
class _GradientDescent:
    """θ ← θ − η g; when ``adaptive``, a step that raises R is halved and retried."""

    objective: _Objective
    lr: float
    adaptive: bool
    seed: int

    def step(self, theta: torch.Tensor, state: TrainState) -> torch.Tensor | None:
        if not self.adaptive:
            return theta - self.lr * state.grad
        eps = torch.finfo(self.objective.template.dtype).eps
        allowed = state.loss + _ROUNDING_ULPS * eps * abs(state.loss)
        for halvings in range(_MAX_HALVINGS):
            candidate = theta - self.lr * state.grad
            if self.objective.trial_loss(candidate) <= allowed:
                return candidate
            self.lr /= 2
            if halvings == 0:  # re-estimate the curvature here, once per rejected step
                lam = _lambda_max(state.net, self.objective.data, self.seed)
                if math.isfinite(lam) and lam > 0:
                    self.lr = min(self.lr, _SAFETY / lam)
        return None


class _TorchOptimizer:
    """A ``torch.optim`` optimizer on one flat tensor whose ``.grad`` is the closed form."""

    def __init__(self, objective: _Objective, theta: torch.Tensor, kind: str, lr: float) -> None:
        self.objective, self.kind, self.lr = objective, kind, lr
        self.param = theta.clone().requires_grad_(True)
        self.opt: torch.optim.Optimizer
        if kind == "adam":
            self.opt = torch.optim.Adam([self.param], lr=lr)
        else:  # one L-BFGS iteration per step, with up to 25 line-search evaluations
            self.opt = torch.optim.LBFGS(
                [self.param], lr=lr, max_iter=1, max_eval=26, tolerance_grad=0.0,
                tolerance_change=0.0, line_search_fn="strong_wolfe",
            )

    def _closure(self) -> float:
        theta = self.param.detach().clone()
        if not bool(torch.isfinite(theta).all()):
            self.param.grad = torch.zeros_like(theta)
            return math.inf
        st = self.objective.state(0, theta)
        self.param.grad = st.grad
        return st.loss

    def step(self, theta: torch.Tensor, state: TrainState) -> torch.Tensor | None:
        if self.kind == "adam":
            self.param.grad = state.grad.clone()
            self.opt.step()
        else:
            self.opt.step(self._closure)
        return self.param.detach().clone()


@dataclass
class _HeavyBall:
    """u ← μ u + g, θ ← θ − η u, with μ = :data:`MOMENTUM` and u₀ = 0."""

    lr: float
    velocity: torch.Tensor | None = None

    def step(self, theta: torch.Tensor, state: TrainState) -> torch.Tensor | None:
        g = state.grad
        self.velocity = g.clone() if self.velocity is None else MOMENTUM * self.velocity + g
        return theta - self.lr * self.velocity


def _stepper(
    optimizer: str, objective: _Objective, theta: torch.Tensor, lr: float | None, seed: int
) -> _Stepper:
    if optimizer == "gd":
        if lr is not None:
            return _GradientDescent(objective, lr, adaptive=False, seed=seed)
        net = objective.template.unflatten(theta)
        eta = safe_step_size(net, objective.data, _SAFETY, seed=seed)
        # minibatches: the safe step at the start, held fixed (no full-batch loss to compare)
        return _GradientDescent(objective, eta, adaptive=objective.batches is None, seed=seed)
    step = _DEFAULT_LR[optimizer] if lr is None else lr
    if optimizer == "momentum":
        return _HeavyBall(step)
    return _TorchOptimizer(objective, theta, optimizer, step)


# ---------------------------------------------------------------------------- main loop
def _is_count(value: Any, minimum: int) -> bool:
    return bool(
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum
    )


def _check_args(
    optimizer: str, lr: float | None, steps: int, record_every: int, grad_tol: float
) -> None:
    if optimizer not in ("gd", "momentum", "adam", "lbfgs"):
        raise OptionError(
            f"optimizer must be 'gd', 'momentum', 'adam' or 'lbfgs', got {optimizer!r}")
    if not grad_tol >= 0:
        raise OptionError(f"grad_tol must be a number ≥ 0, got {grad_tol!r}")
    if not _is_count(steps, 0):
        raise OptionError(f"steps must be an integer ≥ 0, got {steps!r}")
    if not _is_count(record_every, 1):
        raise OptionError(f"record_every must be an integer ≥ 1, got {record_every!r}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise OptionError(f"lr must be a finite number > 0, got {lr!r}")


@dataclass(frozen=True)
class _Criteria:
    steps: int
    grad_tol: float
    loss_tol: float | None
    callbacks: Sequence[Callback]

    def stop_reason(self, state: TrainState) -> str | None:
        """Why training stops at this state, or None; every callback sees every state."""
        asked = [bool(cb(state)) for cb in self.callbacks]
        if not _finite(state):
            return "diverged"
        value, norm = state.full_loss, state.full_grad_norm  # minibatches: the evaluations
        if norm is not None and norm <= self.grad_tol:
            return "grad_tol"
        if self.loss_tol is not None and value is not None and value <= self.loss_tol:
            return "loss_tol"
        if any(asked):
            return "callback"
        if state.step >= self.steps:
            return "steps"
        return None


def _progress_bar(progress: bool, steps: int) -> Any:
    if not progress:
        return None
    return tqdm(total=steps, desc="train", unit="step")


def _show(bar: Any, state: TrainState) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{state.loss:.4g}", grad=f"{state.grad_norm:.2g}", refresh=False)


_Records = list[tuple[int, float, float]]


def _eval_record(state: TrainState, out: _Records) -> None:
    if state.eval_loss is not None and state.eval_grad_norm is not None:
        out.append((state.step, state.eval_loss, state.eval_grad_norm))


def _run(
    objective: _Objective, stepper: _Stepper, criteria: _Criteria, record_every: int, bar: Any
) -> tuple[TrainState, str, _Records, _Records]:
    """The training loop: the last state, why it stopped, the history and the evaluations."""
    theta = objective.template.flatten()
    state = objective.state(0, theta)
    records: _Records = []
    evals: _Records = []
    while (reason := criteria.stop_reason(state)) is None:
        if state.step % record_every == 0:
            records.append((state.step, state.loss, state.grad_norm))
        _eval_record(state, evals)
        new_theta = stepper.step(theta, state)
        if new_theta is None:
            reason = "stalled"
            break
        new_state = objective.state(state.step + 1, new_theta) if bool(
            torch.isfinite(new_theta).all()) else None
        if new_state is None or not _finite(new_state):
            reason = "diverged"
            break
        theta, state = new_theta, new_state
        _show(bar, state)
    records.append((state.step, state.loss, state.grad_norm))
    state = objective.evaluated(state)  # the last state is always evaluated
    _eval_record(state, evals)
    return state, reason, records, evals


def train(
    net: TwoLayerNet,
    data: Dataset,
    optimizer: Optimizer = "gd",
    lr: float | None = None,
    steps: int = 1000,
    *,
    grad_tol: float = 0.0,
    loss_tol: float | None = None,
    freeze: Sequence[str] = (),
    callbacks: Sequence[Callback] = (),
    record_every: int = 1,
    seed: int = 0,
    progress: bool = False,
    batch_size: int | None = None,
    shuffle: bool = True,
    eval_every: int = 10,
    eval_data: Dataset | None = None,
) -> TrainResult:
    """Train ``net`` on ``data`` by steps on the exact gradient of R, or of minibatch risks.

    The same arguments always give the same result: ``seed`` fixes the Lanczos start vector
    of the gd step size and the minibatch permutations, and no global random state is used.

    Args:
        net: the initial network (not modified).
        data: the training data; R(θ) = (1/n) Σ ℓ(g(θ, x_i), y_i).
        optimizer: ``"gd"``, ``"momentum"``, ``"adam"`` or ``"lbfgs"`` (see the module
            docstring).
        lr: step size.  gd: None starts at :func:`safe_step_size` and halves on a rise of
            the loss (minibatches: keeps it fixed); a number is used unchanged.  Momentum
            and Adam: 1e-2 by default; L-BFGS: 1.
        steps: the most updates to make.
        grad_tol: stop (converged) once ‖∇R‖ ≤ grad_tol.
        loss_tol: stop once R ≤ loss_tol.
        freeze: parameters to hold fixed: any of ``"a"``, ``"W"``, ``"b"``, ``"c"``.
        callbacks: called with the :class:`TrainState` at every step, the initial one
            included; one returning True stops training at that step.
        record_every: record the history every this many steps (and at the last step).
        seed: seed of the Lanczos start vector for the gd step size and of the minibatch
            permutations.
        progress: show a tqdm progress bar with the loss and gradient norm.
        batch_size: B, the minibatch size; None, or B ≥ n, trains full-batch.
        shuffle: minibatches: a fresh random permutation each epoch (else the data order).
        eval_every: evaluate the full-batch R and ‖∇R‖ on ``eval_data`` every this many
            steps (and at the last step): always with minibatches, with full batches only
            when ``eval_data`` is given.
        eval_data: the evaluation set; None: the training data.

    Returns:
        The :class:`TrainResult`: final network, history, steps made, converged flag,
        stop reason and final step size.

    Raises:
        OptionError: an unknown optimizer or freeze name, steps < 0, lr ≤ 0, grad_tol < 0,
            record_every < 1, batch_size or eval_every < 1, L-BFGS with minibatches, or gd
            without lr where λ_max ≤ 0.
        DataError: data (or evaluation data) whose d or K does not match the network.

    >>> from saddlemap.problems import teacher_student
    >>> prob = teacher_student(teacher_width=1, width=2, d=2, n=13, activation="tanh")
    >>> run = train(prob.student, prob.data, optimizer="lbfgs", steps=300, grad_tol=1e-8)
    >>> run.converged, run.stop_reason, run.grad_norm <= 1e-8
    (True, 'grad_tol', True)

    Minibatch SGD (batch size 4 of 13 samples), the full-batch R evaluated every 10 steps:

    >>> run = train(prob.student, prob.data, lr=0.1, steps=30, batch_size=4, seed=1)
    >>> run.history.eval_step.tolist(), run.batch_size
    ([0, 10, 20, 30], 4)
    >>> bool(run.loss == loss(run.net, prob.data))
    True
    """
    _check_args(optimizer, lr, steps, record_every, grad_tol)
    batch = _check_minibatch(optimizer, batch_size, eval_every, data)
    loss(net, data)  # a DataError now if the data do not fit the network
    if eval_data is not None:
        loss(net, eval_data)
    objective = _objective(net, data, freeze, batch, shuffle, seed,
                           _evaluation(net, data, eval_data, batch, eval_every, steps))
    stepper = _stepper(optimizer, objective, net.flatten(), lr, seed)
    criteria = _Criteria(steps, grad_tol, loss_tol, tuple(callbacks))
    bar = _progress_bar(progress, steps)
    with bar if bar is not None else nullcontext():
        state, reason, records, evals = _run(objective, stepper, criteria, record_every, bar)
    arr = np.asarray(records, dtype=np.float64)
    ev = np.asarray(evals, dtype=np.float64).reshape(-1, 3)
    history = History(arr[:, 0].astype(np.int64), arr[:, 1].copy(), arr[:, 2].copy(),
                      *((ev[:, 0].astype(np.int64), ev[:, 1].copy(), ev[:, 2].copy())
                        if evals else (None, None, None)))
    final_norm = state.full_grad_norm
    return TrainResult(
        net=state.net, history=history, steps=state.step,
        converged=final_norm is not None and final_norm <= grad_tol, stop_reason=reason,
        lr=float(stepper.lr), optimizer=optimizer, batch_size=batch,
    )


def _check_minibatch(
    optimizer: str, batch_size: int | None, eval_every: int, data: Dataset
) -> int | None:
    """B when training by minibatches (B < n), None for full batch; refuse bad values."""
    if not _is_count(eval_every, 1):
        raise OptionError(f"eval_every must be an integer ≥ 1, got {eval_every!r}")
    if batch_size is None:
        return None
    if not _is_count(batch_size, 1):
        raise OptionError(f"batch_size must be an integer ≥ 1 or None, got {batch_size!r}")
    if batch_size >= data.n:
        return None
    if optimizer == "lbfgs":
        raise OptionError("optimizer 'lbfgs' needs the full-batch loss for its line search; "
                          "use batch_size=None or another optimizer")
    return int(batch_size)


def _evaluation(net: TwoLayerNet, data: Dataset, eval_data: Dataset | None,
                batch: int | None, every: int, steps: int) -> _Evaluation | None:
    if eval_data is None and batch is None:
        return None
    chosen = data if eval_data is None else eval_data
    return _Evaluation(chosen.to(net.dtype, net.device), every, steps)


def _objective(net: TwoLayerNet, data: Dataset, freeze: Sequence[str], batch: int | None,
               shuffle: bool, seed: int, evaluation: _Evaluation | None) -> _Objective:
    batches = None if batch is None else _Batches(data.n, batch, bool(shuffle), seed)
    return _Objective(net, data.to(net.dtype, net.device), freeze_mask(net, freeze),
                      batches, evaluation)
