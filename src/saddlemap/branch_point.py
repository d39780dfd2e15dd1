"""The branch point nearest to a model: a critical point of a narrower network, embedded back.

A trained model near a plateau sits close to a branch of the critical set of a narrower
network (docs/theory.md §6, §7): some of its neurons nearly coincide (a cluster) and some
nearly carry no output (null neurons).  Given such a grouping — from the compression
profile — :func:`nearest_branch_point`

1. refines the narrow network (width r) to a critical point θ* (Levenberg–Marquardt);
2. embeds θ* back to the model's width along the grouping: each cluster's neurons take
   w̃_j* (with their own sign for odd activations) and split a_j* in the ratios of their own
   output weights (the splitting embedding of docs/theory.md §5, which keeps θ* critical);
   each dropped neuron becomes a null neuron (0, u) at the projection u of its own input
   weights onto Z_f (§5, E2c);
3. measures how far that branch point is from the model (relative distance in parameter
   space, output difference, loss gap) and classifies it.

The answer is "near a saddle branch of width r" only when θ* is critical, the branch point
is a saddle and it lies within ``tolerances.near`` · ‖θ‖ of the model; otherwise the numbers
say how far it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .activations import Symmetry
from .analysis import Analysis
from .critical_points import REFINE_PATIENCE, CriticalPoint, find_critical_point
from .data import Dataset
from .derivatives import residual_function
from .network import TwoLayerNet
from .saddles import Classification, classify
from .tolerances import Tolerances
from .zero_set import ZeroSet

__all__ = ["BranchPoint", "nearest_branch_point"]


@dataclass(frozen=True, eq=False)
class BranchPoint:
    """A critical point of a narrower network embedded at the model's width, and its distance.

    Attributes:
        width: r, the width of the narrow network.
        star: the certificate of the refined narrow network θ*.
        net: the branch point at the model's width.
        groups: the model's neurons in each cluster (in θ*'s order).
        nulls: the model's neurons made null neurons.
        nulls_on_zero_set: whether every null neuron was projected onto Z_f.
        distance: ‖θ_branch − θ‖ / ‖θ‖.
        output_change: max |g_branch − g| over the data.
        loss_gap: R(branch point) − R(model).
        classification: the saddle classification of the branch point.
        near: within ``tolerances.near`` of the model, with θ* critical.
    """

    width: int
    star: CriticalPoint
    net: TwoLayerNet
    groups: tuple[tuple[int, ...], ...]
    nulls: tuple[int, ...]
    nulls_on_zero_set: bool
    distance: float
    output_change: float
    loss_gap: float
    classification: Classification
    near: bool

    @property
    def is_saddle_branch(self) -> bool:
        """θ* critical, the branch point a saddle, and near the model."""
        return self.near and self.classification.kind.is_saddle

    def summary(self) -> str:
        """One sentence with the numbers."""
        where = (f"a branch point of width {self.width} at relative distance "
                 f"{self.distance:.2g} (output change {self.output_change:.2g}, loss gap "
                 f"{self.loss_gap:+.3g})")
        if not self.star.converged:
            return f"no critical point of width {self.width} was reached near the model; {where}"
        if self.is_saddle_branch:
            return f"near a saddle branch of width {self.width}: {where}, a " + (
                self.classification.kind.value)
        if self.near:
            return f"near {where}, which is a {self.classification.kind.value}"
        return f"not near a branch of width {self.width}: the nearest found is {where}"


#: Products for the spectrum of a branch point known not to be critical (large problems).
QUICK_MATVECS = 20


def _signs(model: TwoLayerNet, star_w: torch.Tensor, members: Sequence[int]) -> list[float]:
    if model.activation.symmetry is not Symmetry.ODD:
        return [1.0] * len(members)
    return [1.0 if float(model.W_aug[k] @ star_w) >= 0 else -1.0 for k in members]


def _ratios(a: torch.Tensor, signs: Sequence[float], star_a: torch.Tensor) -> torch.Tensor:
    """The ratios ρ (Σ ρ_k = 1) that put s_k ρ_k a* closest to the model's a_k.

    Minimising Σ_k ‖ρ_k a* − s_k a_k‖² under Σ ρ_k = 1 gives
    ρ_k = ⟨s_k a_k, a*⟩/‖a*‖² + (1 − Σ_j ⟨s_j a_j, a*⟩/‖a*‖²)/|g|; equal ratios if a* ≈ 0.
    """
    g = a.shape[0]
    norm2 = float(star_a @ star_a)
    if norm2 <= 1e-30 * max(1.0, float((a * a).sum())):
        return torch.full((g,), 1.0 / g, dtype=a.dtype, device=a.device)
    signed = a * torch.as_tensor(signs, dtype=a.dtype, device=a.device)[:, None]
    rho = (signed @ star_a) / norm2
    return rho + (1.0 - rho.sum()) / g


def merged_network(model: TwoLayerNet, groups: Sequence[Sequence[int]]) -> TwoLayerNet:
    """The model's clusters merged in place, no refit: the narrow start nearest the model.

    Cluster j becomes (Σ_k s_k a_k, Σ_k |a_k| s_k w̃_k / Σ_k |a_k|), with s_k the sign that
    aligns w̃_k with the cluster's first neuron for odd activations (1 otherwise).
    """
    a, W = [], []
    for members in groups:
        idx = list(members)
        s = torch.as_tensor(_signs(model, model.W_aug[idx[0]], idx), dtype=model.dtype,
                            device=model.device)[:, None]
        weight = torch.linalg.vector_norm(model.a[idx], dim=1, keepdim=True)
        weight = weight + (1.0 if float(weight.sum()) == 0.0 else 0.0)  # all null: plain mean
        a.append((s * model.a[idx]).sum(0))
        W.append((weight * s * model.W_aug[idx]).sum(0) / weight.sum())
    d = model.input_dim
    W_aug = torch.stack(W)
    return model.replace(a=torch.stack(a), W=W_aug[:, :d],
                         b=W_aug[:, d] if model.b is not None else None)


def nearest_branch_point(
    model: TwoLayerNet,
    data: Dataset,
    narrow: TwoLayerNet | None,
    groups: Sequence[Sequence[int]],
    dropped: Sequence[int] = (),
    *,
    tolerances: Tolerances | None = None,
    max_iter: int = 50,
) -> BranchPoint:
    """Refine ``narrow`` to θ*, embed it back along ``groups``/``dropped``, measure, classify.

    Args:
        model: the model (width m).
        data: its data.
        narrow: the narrow network (width r = len(groups)) to refine, e.g. a compression
            profile point; None starts from :func:`merged_network`, which is nearer the
            model than a refitted one (a cross-entropy refit can scale the output layer).
        groups: for each neuron of ``narrow``, the model's neurons it stands for.
        dropped: the model's neurons ``narrow`` left out.
        tolerances: the analysis tolerances (``near`` decides "near").
        max_iter: refinement iterations at width r (a third of it when matrix-free, none
            when each Hessian-vector product is expensive: ``Analysis.matvec_budget``).
    """
    tol = (tolerances or Tolerances()).resolved(model.dtype)
    if narrow is None:
        narrow = merged_network(model, groups)
    start = Analysis(narrow, data, tol)
    # matrix-free: a third of the iterations; expensive products: the certificate alone
    iterations = max_iter if start.dense else 0 if start.matvec_budget else max(1, max_iter // 3)
    star = find_critical_point(narrow, data, tolerances=tol, max_iter=iterations,
                               max_move=3 * tol.near, patience=REFINE_PATIENCE)
    a, W = model.a.clone(), model.W_aug.clone()
    for j, members in enumerate(groups):
        idx = list(members)
        signs = _signs(model, star.net.W_aug[j], idx)
        rho = _ratios(model.a[idx], signs, star.net.a[j])
        for k, s, r in zip(idx, signs, rho.tolist(), strict=True):
            a[k] = s * r * star.net.a[j]
            W[k] = s * star.net.W_aug[j]
    zero_set = ZeroSet(residual_function(star.net, data), tol)
    on_zero_set = True
    for k in dropped:
        a[k] = 0.0
        u = zero_set.project(W[k])
        on_zero_set &= u is not None
        if u is not None:
            W[k] = u
    d = model.input_dim
    branch = model.replace(a=a, W=W[:, :d], b=W[:, d] if model.b is not None else None,
                           c=star.net.c)
    theta, moved = model.flatten(), branch.flatten()
    distance = float(torch.linalg.vector_norm(moved - theta)) / max(
        float(torch.linalg.vector_norm(theta)), 1e-300)
    # θ* not critical: neither is its embedding, and the spectrum is only evidence
    given = Analysis(model, data, tol)
    quick = QUICK_MATVECS if given.matvec_budget and not star.converged else None
    an = Analysis(branch, data, tol, max_matvecs=quick)
    with torch.no_grad():
        change = float((branch(data.X) - model(data.X)).abs().max()) if data.n else 0.0
    loss_gap = an.loss - given.loss
    near = star.converged and distance <= tol.near
    return BranchPoint(len(groups), star, branch, tuple(tuple(g) for g in groups),
                       tuple(dropped), on_zero_set, distance, change, loss_gap, classify(an),
                       near)
