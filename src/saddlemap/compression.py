"""Compression with a loss budget: a width–loss profile by merges, drops and exact refits.

:func:`~saddlemap.reduce` removes only what costs nothing (coinciding neurons, null neurons,
zero-sum groups, at a √ε tolerance), and a trained network is never exactly reducible.
:func:`compression_profile` goes further, one width at a time, and measures what each
width costs, so that a user can pick the smallest network within a loss budget.

**Exact phase.**  From the original width m, the reduction of ``reduce`` is replayed one
neuron at a time: every merge of two neurons of one of its groups (sign twins folded as
``reduce`` folds them) and every drop of a null, zero or constant neuron is a step of one
width, with the output unchanged to the merge tolerance and no refit.  (A softplus-class
flip is exact only jointly with the other flips, so those merges are left to the next
phase.)

**Greedy phase.**  Below that, each width w → w − 1 takes the best of a few candidates of
two kinds, each judged by the loss after an exact refit of the output layer:

* *merge* the pairs of neurons whose input weights are closest in the activation's
  symmetry class (odd activations: ‖w̃_i ∓ w̃_j‖, the sign twin folded, with the output
  bias absorbing 2σ(0)a for sigmoid; ReLU-type: the directions w̃/‖w̃‖; otherwise
  ‖w̃_i − w̃_j‖).  The merged neuron has output weight a_i + a_j and input weight the
  output-weight-weighted mean w̄ = α_i w̃_i + α_j w̃_j, α_k = a_kᵀs/‖s‖², s = a_i + a_j
  (for one output (a_i w̃_i + a_j w̃_j)/(a_i + a_j)): the first-order terms of the pair's
  output in w̃_k − w̄ cancel, so a cluster of spread δ merges with an output change of
  O(δ²).  Where that mean extrapolates by more than the pair's distance (α outside
  [−1, 2]: output weights of opposite signs that nearly cancel) the |a|-weighted mean is
  taken instead;
* *drop* the neurons of least contribution ‖a_k‖ · ‖σ(X̃w̃_k)‖ / √n.

The refit minimises R over the output layer (a and, if the network has one, the output bias
c) with the hidden layer fixed.  For the squared loss R = (1/2n)‖F̂θ − Y‖², F̂ = [σ(X̃W̃ᵀ), 1],
it is the least-squares solution of the normal equations F̂ᵀF̂ θ = F̂ᵀY.  The Gram matrix
FᵀF, Fᵀ1 and FᵀY are kept and updated when one column changes (a merge) or goes (a drop):
a candidate costs O(w²) to form and O(w³) to solve rather than O(nw²), and its loss is
(‖Y‖² − 2⟨θ, F̂ᵀY⟩ + ⟨θ, F̂ᵀF̂θ⟩)/2n.  A merge's new column costs O(n), not O(nD): the
pre-activations Z = W̃X̃ᵀ are kept too, and w̄ is a combination of w̃_i and w̃_j, so its row of
Z is the same combination of theirs; its Gram row is O(nw), one product for all merge
candidates.  The normal equations are scaled to unit diagonal and regularised by a ridge of
10⁻¹² (relative to that unit diagonal), so duplicate neurons or n < w never break the
Cholesky factorisation; two steps of iterative refinement on the unregularised equations
then remove the ridge's bias, except in directions of relative curvature ≲ 10⁻¹², where
the features are linearly dependent to 10⁻⁶ (there exact least squares would build a
"derivative neuron" out of two near-duplicates with output weights ±10⁶; the ridge declines).

For cross-entropy and binary cross-entropy (and any other loss) the refit is the convex
problem in θ, solved by Newton with Levenberg–Marquardt damping on the output layer (up to
300 output-layer parameters; L-BFGS above), warm-started from the candidate's own output
weights (scaled by the best of 1, 1/2, …, 2⁻¹⁰, 0), to a Newton decrement of 10⁻¹³ R.  On
(nearly) separable data that optimum lies at infinity, or far out along nearly collinear
features, and the output weights grow without bound (to 10⁶ on three well-separated blobs),
so the refit adds the tiny ridge 10⁻⁸/2 · Σ_k ‖a_k‖² ‖σ(X̃w̃_k)‖²/n (10⁻⁸ of each neuron's
mean-square output) and stops once R falls to half the original loss, well within any
budget.

**Choice.**  The chosen width is the smallest whose loss is within the budget (and, for
classifiers, whose accuracy is).  Near zero loss a refit of the output layer alone cannot
meet a relative budget: R is then all distance to an exactly reducible network, and merging
or dropping neurons costs a few times R (a zero-noise teacher–student student of width 8
keeps width 7 at 1 %).  With ``finetune_steps``, candidate widths are fine-tuned (all
parameters) and the smallest whose fine-tuned network is within the budget is chosen (that
student: width 2).

The loss is the data term R(θ) = (1/n) Σ ℓ(g(θ, x_i), y_i) throughout, computed in float64;
a weight-decay penalty the data may carry (``data.penalty``) is ignored: the budget is on
the data term.

>>> from saddlemap import Dataset, TwoLayerNet
>>> from saddlemap.embedding import split
>>> net = TwoLayerNet([0.8], [[1.5]], activation="tanh")
>>> wide = split(net, 0, [0.25, 0.75]).net          # two copies of one neuron
>>> data = Dataset([[-1.0], [0.0], [0.5], [2.0]], [-0.5, 0.1, 0.4, 0.7])
>>> profile = compression_profile(wide, data)
>>> profile.widths, profile.chosen.width, profile.chosen.groups
((2, 1), 1, ((0, 1),))
>>> abs(profile.chosen.loss - profile.loss_before) <= 1e-12 * profile.loss_before
True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from .activations import Symmetry
from .data import Dataset
from .errors import DataError, OptionError
from .losses import BinaryCrossEntropy, CrossEntropy, Loss, SquaredLoss
from .network import TwoLayerNet
from .reduction import Reduction, reduce
from .training import train

__all__ = ["CompressionProfile", "ProfilePoint", "compression_profile"]

FinetuneOptimizer = Literal["adam", "lbfgs"]

#: Candidates of each kind (merges, drops) refitted at every width of the greedy phase.
CANDIDATES = 4
#: Ridge added to the unit-diagonal normal equations before the Cholesky factorisation.
RIDGE = 1e-12
_REFINEMENTS = 2
#: Dense Newton for convex refits up to this many output-layer parameters, L-BFGS above.
NEWTON_LIMIT = 300
_NEWTON_ITERS = 100
_NEWTON_RTOL = 1e-13
_LBFGS_ITERS = 500
#: Ridge of convex refits, relative to each neuron's mean-square output (see _refit_convex).
CONVEX_RIDGE = 1e-8
#: Convex refits stop once R ≤ this × the original loss (separable data: optimum at ∞).
SEPARABLE_FLOOR = 0.5


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True, eq=False)
class ProfilePoint:
    """The network kept at one width of a :class:`CompressionProfile`.

    Attributes:
        width: the number of hidden neurons.
        loss: the data loss R of ``net`` (float64).
        accuracy: the fraction of samples classified correctly, for cross-entropy and binary
            cross-entropy; None for other losses.
        net: the network at this width, in the original network's dtype and device; its
            output layer is refitted unless ``exact``.  (A profile builds it when it is
            first asked for, so that m networks of width up to m are not all held at once.)
        groups: for each neuron of ``net``, in order, the original neurons merged into it.
        dropped: the original neurons dropped (after any merges into them), sorted.
        output_change: max |g_original − g_compressed| over the data (all outputs).
        exact: whether this width came from the exact reduction (no refit; the output is
            the original's to the merge tolerance).
        finetuned: the optimizer (``"adam"`` or ``"lbfgs"``) that fine-tuned all the
            parameters afterwards, or None.
    """

    width: int
    loss: float
    accuracy: float | None
    groups: tuple[tuple[int, ...], ...]
    dropped: tuple[int, ...]
    output_change: float
    exact: bool
    finetuned: str | None
    _net: TwoLayerNet | Callable[[], TwoLayerNet] = field(repr=False)

    def __init__(
        self,
        width: int,
        loss: float,
        accuracy: float | None,
        net: TwoLayerNet | Callable[[], TwoLayerNet],
        groups: tuple[tuple[int, ...], ...],
        dropped: tuple[int, ...],
        output_change: float,
        exact: bool = False,
        finetuned: str | None = None,
    ) -> None:
        for name, value in (
            ("width", width), ("loss", loss), ("accuracy", accuracy), ("groups", groups),
            ("dropped", dropped), ("output_change", output_change), ("exact", exact),
            ("finetuned", finetuned), ("_net", net),
        ):
            object.__setattr__(self, name, value)

    @property
    def net(self) -> TwoLayerNet:
        """The network at this width (built on first use, then kept)."""
        net = self._net
        if not isinstance(net, TwoLayerNet):
            net = net()
            object.__setattr__(self, "_net", net)
        return net

    def to_dict(self) -> dict[str, Any]:
        """``{"width", "loss", "accuracy"}``, JSON-serialisable."""
        return {"width": self.width, "loss": self.loss, "accuracy": self.accuracy}


@dataclass(frozen=True, eq=False)
class CompressionProfile:
    """The width–loss profile of a network, and the width chosen within the loss budget.

    Attributes:
        points: one :class:`ProfilePoint` per width, descending from the original width m
            to ``min_width``.
        loss_before: R of the given network.
        max_loss_increase: the relative budget δ: a width qualifies when its loss is at most
            ``loss_before · (1 + δ)`` (plus rounding: 64ε of it, and 64ε² of the loss of the
            zero output) and, for classifiers, its accuracy is at least
            ``accuracy_before · (1 − δ)``.
        chosen: the smallest qualifying width; with fine-tuning, the smallest whose
            fine-tuned network qualifies (then it is not one of ``points``).
        accuracy_before: the given network's accuracy (classifiers), else None.
        notes: what is worth knowing, in words (the widths fine-tuned and their losses).
    """

    points: tuple[ProfilePoint, ...]
    loss_before: float
    max_loss_increase: float
    chosen: ProfilePoint
    accuracy_before: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def widths(self) -> tuple[int, ...]:
        """The widths of the profile, descending."""
        return tuple(p.width for p in self.points)

    @property
    def losses(self) -> tuple[float, ...]:
        """The losses at those widths."""
        return tuple(p.loss for p in self.points)

    @property
    def budget(self) -> float:
        """loss_before · (1 + max_loss_increase)."""
        return self.loss_before * (1.0 + self.max_loss_increase)

    def at(self, width: int) -> ProfilePoint:
        """The point of the profile at ``width``.

        Raises:
            OptionError: no point of that width (outside [min_width, m]).
        """
        for point in self.points:
            if point.width == width:
                return point
        raise OptionError(f"the profile has widths {min(self.widths)}..{max(self.widths)}, "
                          f"not {width!r}")

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-serialisable data: budget, chosen width and every point."""
        return {
            "loss_before": self.loss_before,
            "accuracy_before": self.accuracy_before,
            "max_loss_increase": self.max_loss_increase,
            "budget": self.budget,
            "chosen": {**self.chosen.to_dict(), "finetuned": self.chosen.finetuned},
            "points": [p.to_dict() for p in self.points],
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """One line: the chosen width, its loss against the budget."""
        acc = "" if self.chosen.accuracy is None else f", accuracy {self.chosen.accuracy:.4f}"
        return (
            f"width {self.points[0].width} → {self.chosen.width}: R = {self.chosen.loss:.6g} "
            f"(before {self.loss_before:.6g}, budget {self.budget:.6g}{acc})"
        )


# ------------------------------------------------------------------------------ problem
class _Problem:
    """The data in float64 on the network's device, and what the steps need to know."""

    def __init__(self, net: TwoLayerNet, data: Dataset) -> None:
        self.dtype, self.device = net.dtype, net.device
        X = data.X.to(torch.float64).to(net.device)
        self.Xt = X if net.b is None else torch.cat([X, torch.ones_like(X[:, :1])], dim=1)
        self.T = data.targets.to(torch.float64).to(net.device)
        self.loss: Loss = data.loss
        self.squared = isinstance(self.loss, SquaredLoss)
        self.n, self.K, self.d = int(X.shape[0]), int(self.T.shape[1]), net.input_dim
        self.hidden_bias, self.has_c = net.b is not None, net.c is not None
        self.activation = net.activation
        self.sym = net.activation.symmetry
        self.sigma0 = float(net.activation.fn(torch.zeros(1, dtype=torch.float64))[0])
        # Sign twins fold (w̃ → −w̃, a → −a, c += 2σ(0)a) exactly for odd activations, and
        # for sigmoid-class ones when an output bias takes the constant.
        self.can_flip = self.sym is Symmetry.ODD or (
            self.sym is Symmetry.ODD_PLUS_CONSTANT and self.has_c
        )
        self.by_direction = self.sym is Symmetry.NON_ANALYTIC
        if self.squared:
            self.ybar = self.T.sum(0)
            self.yy = float((self.T * self.T).sum())

    def risk(self, g: torch.Tensor) -> float:
        """R = (1/n) Σ ℓ(g_i, t_i)."""
        return float(self.loss.value(g, self.T).mean())

    def accuracy(self, g: torch.Tensor) -> float | None:
        """The fraction classified correctly (classifiers), else None."""
        if isinstance(self.loss, CrossEntropy):
            return float((g.argmax(1) == self.T.argmax(1)).to(torch.float64).mean())
        if isinstance(self.loss, BinaryCrossEntropy):
            return float(((g[:, 0] > 0) == (self.T[:, 0] > 0.5)).to(torch.float64).mean())
        return None


def _pair_weights(a_i: torch.Tensor, a_j: torch.Tensor) -> tuple[float, float]:
    """α_i, α_j of the merged input weight (see the module docstring)."""
    s = a_i + a_j
    ss = float(s @ s)
    if ss > 0:
        alpha_i, alpha_j = float(a_i @ s) / ss, float(a_j @ s) / ss
        if min(alpha_i, alpha_j) >= -1.0:
            return alpha_i, alpha_j
    p, q = float(torch.linalg.vector_norm(a_i)), float(torch.linalg.vector_norm(a_j))
    return (p / (p + q), q / (p + q)) if p + q > 0 else (0.5, 0.5)


@dataclass
class _Merge:
    """The neuron replacing i and j: w̃ = β_i w̃_i + β_j w̃_j, so X̃w̃ = β_i X̃w̃_i + β_j X̃w̃_j."""

    a: torch.Tensor
    w_aug: torch.Tensor
    beta_i: float
    beta_j: float
    c_gain: torch.Tensor | None  # what the output bias gains (a flip of sigmoid-class)


def _merged(
    prob: _Problem, a_i: torch.Tensor, w_i: torch.Tensor, a_j: torch.Tensor,
    w_j: torch.Tensor, flip: bool,
) -> _Merge:
    """The neuron replacing i and j (see the module docstring).

    ``flip``: j enters as its sign twin (−a_j, −w̃_j), which leaves 2σ(0)a_j for c.
    """
    c_gain, sign = None, 1.0
    if flip:
        c_gain = 2.0 * prob.sigma0 * a_j if prob.sigma0 != 0.0 else None
        a_j, w_j, sign = -a_j, -w_j, -1.0
    if torch.equal(w_i, w_j):
        return _Merge(a_i + a_j, w_i.clone(), 1.0, 0.0, c_gain)
    if prob.by_direction:  # σ(λz) = λσ(z): merge directions, a·‖w̃‖ as the output weight
        n_i, n_j = float(torch.linalg.vector_norm(w_i)), float(torch.linalg.vector_norm(w_j))
        if n_j == 0.0:  # a zero neuron of a ReLU-type activation is the zero function
            return _Merge(a_i.clone(), w_i.clone(), 1.0, 0.0, c_gain)
        if n_i == 0.0:
            return _Merge(a_j.clone(), w_j.clone(), 0.0, sign, c_gain)
        b_i, b_j = a_i * n_i, a_j * n_j
        alpha_i, alpha_j = _pair_weights(b_i, b_j)
        scale = (abs(alpha_i) * n_i + abs(alpha_j) * n_j) / (abs(alpha_i) + abs(alpha_j))
        beta_i, beta_j = alpha_i * scale / n_i, alpha_j * scale / n_j
        return _Merge((b_i + b_j) / scale, beta_i * w_i + beta_j * w_j, beta_i,
                      sign * beta_j, c_gain)
    alpha_i, alpha_j = _pair_weights(a_i, a_j)
    return _Merge(a_i + a_j, alpha_i * w_i + alpha_j * w_j, alpha_i, sign * alpha_j, c_gain)


# ------------------------------------------------------------------------ linear algebra
def _spd_solve(M: torch.Tensor, rhs: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """Solve M θ = rhs for symmetric positive semi-definite M (overwritten).

    Jacobi scaling to unit diagonal, a ridge (:data:`RIDGE`), Cholesky, then
    :data:`_REFINEMENTS` steps of iterative refinement on the unregularised system.  If the
    factorisation still fails, a pseudo-inverse from the eigendecomposition.  A ridge
    above :data:`RIDGE` is a damping (Levenberg–Marquardt) and is not refined away.
    """
    if M.shape[0] == 0:
        return rhs.clone()
    diag = M.diagonal()
    d = torch.where(diag > 0, diag.sqrt(), torch.ones_like(diag))
    S = M.div_(d[:, None]).div_(d[None, :])
    bs = rhs / d[:, None]
    S.diagonal().add_(ridge)
    L, info = torch.linalg.cholesky_ex(S)
    if int(info) == 0:
        x = torch.cholesky_solve(bs, L)
        for _ in range(_REFINEMENTS if ridge <= RIDGE else 0):
            x += torch.cholesky_solve(bs - S @ x + ridge * x, L)  # bs − (S − ridge I) x
    else:  # rounding made the scaled matrix indefinite beyond the ridge
        S.diagonal().sub_(ridge)
        evals, evecs = torch.linalg.eigh(S)
        cut = float(evals.abs().max()) * M.shape[0] * torch.finfo(M.dtype).eps
        inv = torch.where(evals > cut, 1.0 / evals.clamp_min(cut), torch.zeros_like(evals))
        x = evecs @ (inv[:, None] * (evecs.T @ bs))
    return x / d[:, None]


def _least_squares(
    prob: _Problem, G: torch.Tensor, s: torch.Tensor, B: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """The least-squares output layer θ and its loss, from the Gram matrices.

    θ (rows: neurons, then c) minimises (1/2n)‖F̂θ − Y‖²; G = FFᵀ, s = F1 and B = FY,
    with F one row per neuron.
    """
    p = G.shape[0]
    q = p + int(prob.has_c)
    M, rhs = G.new_empty(q, q), G.new_empty(q, prob.K)
    M[:p, :p], rhs[:p] = G, B
    if prob.has_c:
        M[:p, p], M[p, :p], M[p, p], rhs[p] = s, s, float(prob.n), prob.ybar
    theta = _spd_solve(M.clone(), rhs)
    value = prob.yy - float((theta * (2.0 * rhs - M @ theta)).sum())
    return theta, max(value, 0.0) / (2.0 * prob.n)


def _with_ones(prob: _Problem, F: torch.Tensor) -> torch.Tensor:
    return torch.cat([F, torch.ones_like(F[:1])], 0) if prob.has_c else F


def _refit_convex(
    prob: _Problem, F: torch.Tensor, theta: torch.Tensor, floor: float
) -> tuple[torch.Tensor, float]:
    """Minimise R over the output layer, from ``theta``; returns θ and R.

    θ has rows: neurons (features F, one row each), then c.  The objective is R plus the
    tiny ridge (:data:`CONVEX_RIDGE`/2) Σ_k ‖a_k‖² ‖σ(X̃w̃_k)‖²/n; Newton with
    Levenberg–Marquardt damping up to :data:`NEWTON_LIMIT` parameters, else L-BFGS.
    """
    Fh = _with_ones(prob, F)
    loss, T, n, K = prob.loss, prob.T, prob.n, prob.K
    q = Fh.shape[0]
    weight = torch.zeros(q, 1, dtype=F.dtype, device=F.device)
    weight[: F.shape[0], 0] = CONVEX_RIDGE * (F * F).sum(1) / n

    def objective(th: torch.Tensor, g: torch.Tensor) -> tuple[float, float]:
        R = float(loss.value(g, T).mean())
        return R + 0.5 * float((weight * th * th).sum()), R

    # A warm start can be far off (large weights grown on separable data, then a neuron
    # merged or dropped): start from the best of θ₀ scaled by 1, 1/2, ..., 2⁻¹⁰, 0.
    g0 = Fh.T @ theta
    scales = [2.0**-k for k in range(11)] + [0.0]
    values = [objective(t * theta, t * g0)[0] for t in scales]
    best = min(range(len(scales)),
               key=lambda k: values[k] if math.isfinite(values[k]) else math.inf)
    theta, g = scales[best] * theta, scales[best] * g0
    if q * K > NEWTON_LIMIT:
        return _lbfgs(prob, Fh, theta, weight)
    J, R = objective(theta, g)
    damping = RIDGE
    for _ in range(_NEWTON_ITERS):
        if R <= floor:
            break
        grad = Fh @ loss.grad(g, T) / n + weight * theta  # (q, K)
        h = loss.hess(g, T) / n  # (n, K, K)
        if K == 1:
            H = (Fh * h[:, 0, 0]) @ Fh.T
        else:
            H = torch.einsum("pi,ikl,qi->pkql", Fh, h, Fh).reshape(q * K, q * K)
        H = H + torch.diag(weight.expand(q, K).reshape(-1))
        accepted = False
        while damping < 1e8:  # Levenberg–Marquardt: a rejected step raises the damping
            step = -_spd_solve(H.clone(), grad.reshape(-1, 1), damping).reshape(q, K)
            decrement = -float((grad * step).sum())
            if not (decrement > _NEWTON_RTOL * J and decrement > 1e-300):
                return theta, R  # converged
            g_new = Fh.T @ (theta + step)
            J_new, R_new = objective(theta + step, g_new)
            if J_new <= J - 1e-4 * decrement:
                accepted = True
                break
            damping *= 10.0
        if not accepted:
            break
        theta, g, J, R = theta + step, g_new, J_new, R_new
        damping = max(damping / 10.0, RIDGE)
    return theta, R


def _lbfgs(
    prob: _Problem, Fh: torch.Tensor, theta: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """L-BFGS with a strong-Wolfe line search on the output layer, closed-form gradient."""
    param = theta.clone()
    opt = torch.optim.LBFGS(
        [param], lr=1.0, max_iter=_LBFGS_ITERS, tolerance_grad=1e-12, tolerance_change=1e-16,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        g = Fh.T @ param
        param.grad = Fh @ prob.loss.grad(g, prob.T) / prob.n + weight * param
        return prob.loss.value(g, prob.T).mean() + 0.5 * (weight * param * param).sum()

    with torch.no_grad():
        opt.step(closure)
        R = float(prob.loss.value(Fh.T @ param, prob.T).mean())
    return param.detach(), R


# --------------------------------------------------------------------------------- state
class _State:
    """The network being compressed, in float64, with its features (and Gram matrices).

    Rows 0..w−1 of every array are the live neurons; a removed row is overwritten by the
    last live one (so nothing of size n × m is ever reallocated).  The pre-activations
    Z = W̃X̃ᵀ are kept with the features F = σ(Z): a merged neuron's input weight is a
    linear combination of the pair's, and so is its row of Z, which costs O(n), not O(nD).
    """

    def __init__(self, prob: _Problem, net: TwoLayerNet) -> None:
        self.prob = prob
        self.W = net.W_aug.to(torch.float64).clone()  # (m, D)
        self.A = net.a.to(torch.float64).clone()  # (m, K)
        self.c = None if net.c is None else net.c.to(torch.float64).clone()
        self.Z = self.W @ prob.Xt.T  # (m, n)
        self.F = prob.activation(self.Z)
        self.w = m = net.width
        # Every input weight ever held, append-only (m originals, at most m − 1 merges), and
        # the entry of each live row: a point's network is rebuilt from these on demand.
        self.bank = self.W.new_empty(max(2 * m - 1, 1), self.W.shape[1])
        self.bank[:m] = self.W
        self.bank_size = m
        self.ids = list(range(m))
        self.members: list[tuple[int, ...]] = [(k,) for k in range(self.w)]
        self.slot_of = list(range(self.w))  # original neuron → its row (while it has one)
        self.dropped: list[int] = []
        self.H: torch.Tensor | None = None  # W̃W̃ᵀ
        self.G: torch.Tensor | None = None  # FFᵀ, F1, FY (squared loss)
        self.s: torch.Tensor | None = None
        self.B: torch.Tensor | None = None

    # -- bookkeeping
    def start_greedy(self) -> None:
        """Form W̃W̃ᵀ (and, for the squared loss, the Gram matrices) of the live rows."""
        w = self.w
        m = self.W.shape[0]
        self.H = self.W.new_zeros(m, m)
        self.H[:w, :w] = self.W[:w] @ self.W[:w].T
        if self.prob.squared:
            F = self.F[:w]
            self.G = torch.zeros_like(self.H)
            self.G[:w, :w] = F @ F.T
            self.s = self.F.sum(1)
            self.B = self.F @ self.prob.T

    def outputs(self) -> torch.Tensor:
        g = self.F[: self.w].T @ self.A[: self.w]
        return g if self.c is None else g + self.c

    def remove(self, j: int) -> None:
        """Remove live row j: the last live row moves into it."""
        last = self.w - 1
        if j != last:
            for arr in (self.W, self.A, self.Z, self.F):
                arr[j] = arr[last]
            for sym in (self.H, self.G):
                if sym is not None:
                    sym[j, : self.w] = sym[last, : self.w]
                    sym[: self.w, j] = sym[: self.w, last]
            for vec in (self.s, self.B):
                if vec is not None:
                    vec[j] = vec[last]
            self.members[j] = self.members[last]
            self.ids[j] = self.ids[last]
            for k in self.members[j]:
                self.slot_of[k] = j
        self.members.pop()
        self.ids.pop()
        self.w -= 1

    def merged_row(self, i: int, j: int, merge: _Merge) -> tuple[torch.Tensor, torch.Tensor]:
        """The pre-activations and features of the merged neuron."""
        z = merge.beta_i * self.Z[i]
        if merge.beta_j != 0.0:
            z = z + merge.beta_j * self.Z[j]
        return z, self.prob.activation(z)

    def set_neuron(self, i: int, a: torch.Tensor, w_aug: torch.Tensor, z: torch.Tensor,
                   f: torch.Tensor) -> None:
        """Row i becomes the neuron (a, w̃) with pre-activations z and features f."""
        self.A[i], self.W[i], self.Z[i], self.F[i] = a, w_aug, z, f
        self.bank[self.bank_size] = w_aug
        self.ids[i] = self.bank_size
        self.bank_size += 1
        w = self.w
        if self.H is not None:
            row = self.W[:w] @ w_aug
            self.H[i, :w], self.H[:w, i] = row, row
        if self.G is not None and self.s is not None and self.B is not None:
            row = self.F[:w] @ f
            self.G[i, :w], self.G[:w, i] = row, row
            self.s[i], self.B[i] = f.sum(), f @ self.prob.T

    def merge(self, i: int, j: int, merge: _Merge) -> None:
        """Merge row j into row i as ``merge`` says (the output layer is not refitted)."""
        self.set_neuron(i, merge.a, merge.w_aug, *self.merged_row(i, j, merge))
        if merge.c_gain is not None and self.c is not None:
            self.c = self.c + merge.c_gain
        self.members[i] = tuple(sorted(self.members[i] + self.members[j]))
        self.remove(j)

    def drop(self, j: int) -> None:
        self.dropped.extend(self.members[j])
        self.remove(j)

    def net_factory(self) -> Callable[[], TwoLayerNet]:
        """A function building the network of the live rows as they are now."""
        bank, ids, prob = self.bank, torch.tensor(self.ids, device=self.W.device), self.prob
        a = self.A[: self.w].clone()
        c = None if self.c is None else self.c.clone()

        def build() -> TwoLayerNet:
            W, d = bank[ids], prob.d
            net = TwoLayerNet(
                a, W[:, :d], b=W[:, d] if prob.hidden_bias else None, c=c,
                activation=prob.activation,
            )
            return net if prob.dtype == torch.float64 else net.to(dtype=prob.dtype)

        return build


# ------------------------------------------------------------------------- exact phase
def _exact_plan(red: Reduction, prob: _Problem) -> list[tuple[str, int, int]]:
    """The reduction as one-width steps: ("zero", k, −1), ("merge", base, k), ("null", base, −1)."""
    ops: list[tuple[str, int, int]] = [("zero", k, -1) for k in red.dropped_zero]

    def merges(group: tuple[int, ...]) -> list[int]:
        subgroups: list[list[int]] = []
        if prob.sym is Symmetry.ODD_PART_LINEAR:  # a single flip is not exact: same signs only
            for sign in (1, -1):
                sub = [k for k in group if red.signs[k] == sign]
                if sub:
                    subgroups.append(sub)
        else:
            subgroups = [list(group)]
        for sub in subgroups:
            ops.extend(("merge", sub[0], k) for k in sub[1:])
        return [sub[0] for sub in subgroups]

    for group in red.groups:
        merges(group)
    for group in red.dropped_null:
        ops.extend(("null", base, -1) for base in merges(group))
    return ops


def _exact_steps(
    state: _State, red: Reduction, min_width: int
) -> Iterator[None]:
    """Apply the exact steps one width at a time; yields after each width decrease."""
    prob = state.prob
    for op, base, other in _exact_plan(red, prob):
        if state.w <= min_width:
            return
        i = state.slot_of[base]
        if op == "merge":
            j = state.slot_of[other]
            flip = red.signs[base] != red.signs[other] and prob.can_flip
            state.merge(i, j, _merged(prob, state.A[i], state.W[i], state.A[j], state.W[j], flip))
        elif op == "zero":
            if prob.sigma0 != 0.0 and state.c is not None:  # the constant a σ(0) into c
                state.c = state.c + prob.sigma0 * state.A[i]
            state.drop(i)
        else:
            if float(torch.linalg.vector_norm(state.A[i])) > red.a_tol:
                continue  # softplus-class sub-group whose sum is not zero on its own
            state.drop(i)
        yield None


# ------------------------------------------------------------------------ greedy phase
@dataclass
class _Candidate:
    """One way to lose a neuron, with its refitted output layer.

    ``theta``'s rows are the neurons as they will be after the step (row ``removed`` taken
    by the last live row, as :meth:`_State.remove` does), then c.
    """

    loss: float
    theta: torch.Tensor
    removed: int
    merged_into: int = -1  # merges: the row that takes the merged neuron
    merge: _Merge | None = None
    z: torch.Tensor | None = None
    f: torch.Tensor | None = None


def _after_removal(t: torch.Tensor, j: int, w: int, square: bool) -> torch.Tensor:
    """``t`` (a copy of rows, or of rows and columns, 0..w−1) as after removing row j."""
    last = w - 1
    if j != last:
        t[j] = t[last]
        if square:
            t[:, j] = t[:, last]
    return t[:last, :last] if square else t[:last]


def _closest_pairs(state: _State, count: int) -> list[tuple[int, int, bool]]:
    """The ``count`` closest pairs (i < j) in the symmetry class, with the flip flag."""
    prob, w = state.prob, state.w
    assert state.H is not None
    H = state.H[:w, :w]
    upper = torch.ones(w, w, dtype=torch.bool, device=H.device).triu(1)
    k = min(count, w * (w - 1) // 2)

    def smallest(dist: torch.Tensor) -> list[tuple[int, int]]:
        dist = torch.where(upper, dist, torch.full_like(dist, math.inf))
        flat = torch.topk(dist.flatten(), k, largest=False).indices.tolist()
        return [(f // w, f % w) for f in flat]

    sq = H.diagonal()
    if prob.by_direction:
        norms = sq.clamp_min(0).sqrt()
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        dist = 2.0 - 2.0 * H / safe[:, None] / safe[None, :]
    else:
        cross = H.abs() if prob.can_flip else H
        dist = sq[:, None] + sq[None, :] - 2.0 * cross
    pairs = smallest(dist)
    return [(i, j, bool(prob.can_flip and float(H[i, j]) < 0)) for i, j in pairs]


def _least_contributing(state: _State, count: int) -> list[int]:
    """The ``count`` rows of least ‖a_k‖ · ‖σ(X̃w̃_k)‖ / √n."""
    w = state.w
    if state.G is not None:
        fnorm = state.G[:w, :w].diagonal().clamp_min(0).sqrt()
    else:
        fnorm = torch.linalg.vector_norm(state.F[:w], dim=1)
    contribution = torch.linalg.vector_norm(state.A[:w], dim=1) * fnorm
    return torch.topk(contribution, min(count, w), largest=False).indices.tolist()


def _least_squares_after(
    state: _State, j: int, i: int = -1, g_row: torch.Tensor | None = None,
    f: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """The least-squares refit after removing row j: O(w²) to form, O(w³) to solve.

    For a merge, row i is first replaced by features f, whose inner products with the
    live rows are g_row.
    """
    assert state.G is not None and state.s is not None and state.B is not None
    w = state.w
    G, s, B = state.G[:w, :w].clone(), state.s[:w].clone(), state.B[:w].clone()
    if i >= 0:
        assert g_row is not None and f is not None
        G[i, :], G[:, i] = g_row, g_row
        G[i, i] = f @ f
        s[i], B[i] = f.sum(), f @ state.prob.T
    return _least_squares(
        state.prob, _after_removal(G, j, w, True), _after_removal(s, j, w, False),
        _after_removal(B, j, w, False),
    )


def _convex_after(
    state: _State, j: int, floor: float, i: int = -1, merge: _Merge | None = None,
    f: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """The convex refit after removing row j (and, for a merge, replacing row i)."""
    w = state.w
    F, start = state.F[:w].clone(), state.A[:w].clone()
    c = state.c
    if i >= 0:
        assert merge is not None and f is not None
        F[i], start[i] = f, merge.a
        if c is not None and merge.c_gain is not None:
            c = c + merge.c_gain
    start = _after_removal(start, j, w, False)
    if c is not None:
        start = torch.cat([start, c[None, :]], 0)
    return _refit_convex(state.prob, _after_removal(F, j, w, False), start, floor)


def _candidates(state: _State, floor: float) -> list[_Candidate]:
    """Every candidate of this width, each with its refitted output layer and loss."""
    prob, w = state.prob, state.w
    out: list[_Candidate] = []
    pairs = _closest_pairs(state, CANDIDATES) if w >= 2 else []
    merges = [_merged(prob, state.A[i], state.W[i], state.A[j], state.W[j], flip)
              for i, j, flip in pairs]
    rows = [state.merged_row(i, j, merge) for (i, j, _), merge in zip(pairs, merges, strict=True)]
    g_rows = None
    if prob.squared and rows:  # the Gram rows of every merged neuron in one product
        g_rows = (state.F[:w] @ torch.stack([f for _, f in rows]).T).T
    for k, ((i, j, _), merge, (z, f)) in enumerate(zip(pairs, merges, rows, strict=True)):
        if g_rows is not None:
            theta, loss = _least_squares_after(state, j, i, g_rows[k], f)
        else:
            theta, loss = _convex_after(state, j, floor, i, merge, f)
        out.append(_Candidate(loss, theta, j, i, merge, z, f))
    for j in _least_contributing(state, CANDIDATES):
        if prob.squared:
            theta, loss = _least_squares_after(state, j)
        else:
            theta, loss = _convex_after(state, j, floor)
        out.append(_Candidate(loss, theta, j))
    return out


def _greedy_step(state: _State, floor: float) -> None:
    """One width less, by the best candidate, its refitted output layer installed."""
    candidates = _candidates(state, floor)
    best = min(candidates, key=lambda cand: cand.loss if math.isfinite(cand.loss) else math.inf)
    if best.merge is not None:
        assert best.z is not None and best.f is not None
        i, j = best.merged_into, best.removed
        state.set_neuron(i, best.merge.a, best.merge.w_aug, best.z, best.f)
        state.members[i] = tuple(sorted(state.members[i] + state.members[j]))
        state.remove(j)
    else:
        state.drop(best.removed)
    w = state.w
    state.A[:w] = best.theta[:w]
    if state.c is not None:
        state.c = best.theta[w].clone()


# ---------------------------------------------------------------------------- the API
def _check_options(
    net: TwoLayerNet, max_loss_increase: Any, min_width: Any, finetune_steps: Any,
    finetune_optimizer: Any,
) -> None:
    if isinstance(max_loss_increase, bool) or not isinstance(max_loss_increase, numbers.Real) \
            or not (0.0 <= float(max_loss_increase) < math.inf):
        raise OptionError(
            f"max_loss_increase must be a finite number ≥ 0, got {max_loss_increase!r}")
    if isinstance(min_width, bool) or not isinstance(min_width, numbers.Integral) \
            or not (1 <= int(min_width) <= net.width):
        raise OptionError(
            f"min_width must be an integer in [1, {net.width}] (the network's width), "
            f"got {min_width!r}")
    if isinstance(finetune_steps, bool) or not isinstance(finetune_steps, numbers.Integral) \
            or int(finetune_steps) < 0:
        raise OptionError(f"finetune_steps must be an integer ≥ 0, got {finetune_steps!r}")
    if finetune_optimizer not in ("adam", "lbfgs"):
        raise OptionError(
            f"finetune_optimizer must be 'adam' or 'lbfgs', got {finetune_optimizer!r}")


def _point(state: _State, g0: torch.Tensor, exact: bool, net: TwoLayerNet | None = None
           ) -> ProfilePoint:
    g = state.outputs()
    prob = state.prob
    return ProfilePoint(
        width=state.w, loss=prob.risk(g), accuracy=prob.accuracy(g),
        net=state.net_factory() if net is None else net, groups=tuple(state.members),
        dropped=tuple(sorted(state.dropped)), output_change=float((g - g0).abs().max()),
        exact=exact,
    )


def _finetune(
    point: ProfilePoint, prob: _Problem, data: Dataset, g0: torch.Tensor, steps: int,
    optimizer: FinetuneOptimizer,
) -> ProfilePoint:
    plain = Dataset(data.X, data.targets, loss=data.loss, dtype=torch.float64,
                    device=prob.device)  # the data term only: no penalty
    run = train(point.net.to(dtype=torch.float64), plain, optimizer=optimizer, steps=steps)
    with torch.no_grad():
        X = prob.Xt[:, : prob.d]
        g = run.net(X)
    net = run.net if prob.dtype == torch.float64 else run.net.to(dtype=prob.dtype)
    return ProfilePoint(
        width=point.width, loss=prob.risk(g), accuracy=prob.accuracy(g), net=net,
        groups=point.groups, dropped=point.dropped,
        output_change=float((g - g0).abs().max()), exact=False, finetuned=optimizer,
    )


def _finetuned_choice(
    points: list[ProfilePoint],
    chosen: ProfilePoint,
    min_width: int,
    qualifies: Callable[[ProfilePoint], bool],
    tune: Callable[[ProfilePoint], ProfilePoint],
    notes: list[str],
) -> ProfilePoint:
    """The smallest width whose fine-tuned network is within the budget.

    Widths below the refit choice are tried galloping up from ``min_width`` (the gaps
    doubling), then by bisection between the last width that failed and the first that
    passed: about 2 log₂ m fine-tunings.  Without one below, the refit choice itself, fine-
    tuned if that lowered its loss.
    """
    by_width = {p.width: p for p in points}
    tried: dict[int, ProfilePoint] = {}

    def ok(width: int) -> bool:
        if width not in tried:
            tried[width] = tune(by_width[width])
        return qualifies(tried[width])

    lo, hi, step = min_width, None, 1  # lo: the smallest width not yet known to fail
    while lo < chosen.width:
        width = min(lo + step - 1, chosen.width - 1)
        if ok(width):
            hi = width
            break
        lo, step = width + 1, step * 2
    if hi is not None:
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid + 1
        best = tried[hi]
    else:
        tuned = tried.get(chosen.width) or tune(chosen)
        tried[chosen.width] = tuned
        best = tuned if tuned.loss <= chosen.loss else chosen
    notes.append("fine-tuned ({}): {}".format(
        next(iter(tried.values())).finetuned,
        ", ".join(f"width {w} R = {p.loss:.6g}" for w, p in sorted(tried.items()))))
    return best


def compression_profile(
    net: TwoLayerNet,
    data: Dataset,
    *,
    max_loss_increase: float = 0.01,
    min_width: int = 1,
    finetune_steps: int = 0,
    finetune_optimizer: FinetuneOptimizer = "lbfgs",
    progress: bool = False,
) -> CompressionProfile:
    """The width–loss profile of ``net`` from its width m down to ``min_width``.

    First the exact reduction, one width at a time (no loss change); then greedy steps of
    one width, each the best merge or drop after an exact refit of the output layer (see
    the module docstring for the maths).  The chosen width is the smallest whose data loss
    is at most R_before · (1 + ``max_loss_increase``) and, for classifiers (cross-entropy,
    binary cross-entropy), whose accuracy is at least accuracy_before · (1 −
    ``max_loss_increase``).

    Cost for the squared loss: the pre-activations X̃W̃ᵀ and features (two n × m arrays,
    O(nmD)) and their Gram matrix (O(nm²)) once; then per width O(n) for each merge
    candidate's feature column, one product O(nw) for their Gram rows, and a Cholesky solve
    of size w per candidate (O(w³)).  Measured on one core of a shared 2-core virtual
    machine: m = 256, d = 784 down to width 1 in 3–4 s at n = 10,000 and 2–3 s at n = 2,000.

    Args:
        net: the network (any dtype and device; the work is done in float64 there).
        data: the data; R is its data term, a ``data.penalty`` is ignored.
        max_loss_increase: δ ≥ 0, the relative loss budget (0.01: 1 %).
        min_width: the smallest width of the profile, in [1, m].
        finetune_steps: when > 0, networks of the profile are trained for this many steps
            (all parameters, on the data term, from their compressed values) and their loss
            measured again, and the chosen width becomes the smallest whose fine-tuned
            network is within the budget (searched galloping up from ``min_width``, then by
            bisection: about 2 log₂ m fine-tunings; the refit choice, fine-tuned if that
            lowered its loss, when no smaller width passes).  The profile's points stay as
            refitted; ``notes`` lists the widths tried.
        finetune_optimizer: ``"lbfgs"`` or ``"adam"``, for the fine-tuning.
        progress: show a progress bar (tqdm, on stderr).

    Returns:
        The :class:`CompressionProfile`.

    Raises:
        OptionError: δ negative, NaN or infinite; ``min_width`` not an integer in [1, m];
            ``finetune_steps`` < 0; an unknown fine-tuning optimizer.
        DataError: data whose d or K does not match the network.
    """
    _check_options(net, max_loss_increase, min_width, finetune_steps, finetune_optimizer)
    if data.input_dim != net.input_dim or data.output_dim != net.output_dim:
        raise DataError(
            f"the data have d={data.input_dim}, K={data.output_dim}; the network "
            f"d={net.input_dim}, K={net.output_dim}")
    delta, min_width = float(max_loss_increase), int(min_width)
    prob = _Problem(net, data)
    state = _State(prob, net)
    g0 = state.outputs()
    first = _point(state, g0, exact=True, net=net)
    points = [first]
    loss_before, accuracy_before = first.loss, first.accuracy
    floor = SEPARABLE_FLOOR * loss_before
    red = reduce(net.to(dtype=torch.float64) if net.dtype != torch.float64 else net,
                 check_rank=False)
    with tqdm(total=net.width - min_width, desc="compress", disable=not progress) as bar:
        for _ in _exact_steps(state, red, min_width):
            points.append(_point(state, g0, exact=True))
            bar.update(1)
        if state.w > min_width:
            state.start_greedy()
        while state.w > min_width:
            _greedy_step(state, floor)
            points.append(_point(state, g0, exact=False))
            bar.update(1)
            bar.set_postfix(R=f"{points[-1].loss:.4g}")
    eps = torch.finfo(torch.float64).eps
    zero_loss = prob.risk(torch.zeros_like(g0))
    limit = loss_before * (1.0 + delta) + 64 * eps * loss_before + 64 * eps**2 * zero_loss

    def qualifies(p: ProfilePoint) -> bool:
        if not p.loss <= limit:
            return False
        if accuracy_before is None or p.accuracy is None:
            return True
        return p.accuracy >= accuracy_before * (1.0 - delta) - 1e-12

    chosen = min((p for p in points if qualifies(p)), key=lambda p: p.width)
    notes: list[str] = []
    if finetune_steps > 0:
        chosen = _finetuned_choice(
            points, chosen, min_width, qualifies,
            lambda p: _finetune(p, prob, data, g0, int(finetune_steps), finetune_optimizer),
            notes,
        )
    return CompressionProfile(
        tuple(points), loss_before, delta, chosen, accuracy_before, tuple(notes))
