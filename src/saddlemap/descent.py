"""A way down from the model as it is: the most negative curvature, measured and taken.

A practitioner's model is rarely at a critical point, yet its Hessian often has negative
eigenvalues: directions in which the loss bends down.  :func:`negative_curvature_step` finds
the lowest eigenpair (λ_min, v) of the Hessian at the given network (dense up to the dense
limit, Lanczos above), orients v downhill (∇Rᵀv ≤ 0), scans the loss along ±t v on both
sides, and steps to the lowest point found — whether or not the point is critical.  The
scan is the evidence: the loss along v falls on the chosen side, and a positive-curvature
direction (the top eigenvector) is scanned too, where the loss rises on both sides.

>>> from saddlemap import Dataset, TwoLayerNet
>>> data = Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
>>> a, w = 0.610515537972, 1.433931221329
>>> out = negative_curvature_step(TwoLayerNet([2 * a, -a], [[w], [w]]), data)
>>> out.lambda_min < 0, out.loss_after_step < out.loss_before
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .analysis import Analysis, as_analysis
from .data import Dataset
from .derivatives import loss
from .network import TwoLayerNet
from .tolerances import Tolerances

__all__ = ["Descent", "negative_curvature_step", "scan_loss"]


def scan_loss(
    point: Callable[[float], TwoLayerNet], data: Dataset, scale: float, num: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """R at t = ±scale · 2^-k, k = 0..num−1, and t = 0, along t ↦ point(t), sorted by t."""
    mags = scale * 2.0 ** -np.arange(num)
    ts = np.sort(np.concatenate([-mags, [0.0], mags]))
    return ts, np.array([loss(point(float(t)), data) for t in ts])


@dataclass(frozen=True, eq=False)
class Descent:
    """The negative-curvature step at a network, with its evidence.

    Attributes:
        lambda_min: the smallest Hessian eigenvalue found.
        lambda_max: the largest.
        negative: how many eigenvalues are below −zero_tol (of those computed).
        zero_tol: the zero tolerance of the spectrum.
        direction: the unit direction v (downhill: ∇Rᵀv ≤ 0), None without negative curvature.
        curvature: vᵀHv.
        path_t: the scanned steps t along v (both signs).
        path_loss: R(θ + t v) at each.
        up_t: the steps scanned along the top eigenvector (positive curvature).
        up_loss: R along it: up on both sides.
        step: the t taken (0 when nothing lowered R).
        loss_before: R at the network.
        loss_after_step: R after the step.
        net: the network after the step (the given one when no step was taken).
    """

    lambda_min: float
    lambda_max: float
    negative: int
    zero_tol: float
    direction: torch.Tensor | None
    curvature: float | None
    path_t: np.ndarray
    path_loss: np.ndarray
    up_t: np.ndarray
    up_loss: np.ndarray
    step: float
    loss_before: float
    loss_after_step: float
    net: TwoLayerNet

    @property
    def improved(self) -> bool:
        """Whether the step lowered R."""
        return self.loss_after_step < self.loss_before

    def summary(self) -> str:
        """One line a person can read."""
        if self.direction is None:
            return (f"no negative curvature: λ_min = {self.lambda_min:.3e} ≥ "
                    f"−{self.zero_tol:.1e}")
        return (f"{self.negative} negative eigenvalue(s), λ_min = {self.lambda_min:.3e}: "
                f"a step t = {self.step:.3g} along its eigenvector takes R from "
                f"{self.loss_before:.6g} to {self.loss_after_step:.6g}")


def negative_curvature_step(
    net: TwoLayerNet | Analysis,
    data: Dataset | None = None,
    *,
    tolerances: Tolerances | None = None,
    num: int = 12,
) -> Descent:
    """Scan the loss along the lowest-curvature eigenvector at ``net`` and take the best step.

    The step sizes are ±scale · 2^-k, k < ``num``, scale = ½ max(1, max|θ|); the lowest loss
    of the scan is taken when it is below R(θ).  ``net`` may be an
    :class:`~saddlemap.Analysis`, whose spectrum is reused.
    """
    an = as_analysis(net, data, tolerances)
    spec = an.spectrum
    theta = an.net.flatten()
    scale = 0.5 * max(1.0, float(theta.abs().max()))
    top = _eigenvector(spec.eigenvectors, -1, an)
    up_t, up_loss = (np.zeros(0), np.zeros(0)) if top is None else scan_loss(
        lambda t: an.net.unflatten(theta + t * top), an.data, scale, num)
    negative = int((spec.eigenvalues < -spec.zero_tol).sum())
    v = _eigenvector(spec.eigenvectors, 0, an) if negative else None
    if v is None:
        return Descent(spec.min, spec.max, negative, spec.zero_tol, None, None, np.zeros(0),
                       np.zeros(0), up_t, up_loss, 0.0, an.loss, an.loss, an.net)
    if float(an.gradient @ v) > 0:
        v = -v  # downhill on the positive side

    def along(t: float) -> TwoLayerNet:
        return an.net.unflatten(theta + t * v)

    ts, losses = scan_loss(along, an.data, scale, num)
    best = int(np.argmin(losses))
    taken = float(ts[best]) if losses[best] < an.loss else 0.0
    return Descent(
        spec.min, spec.max, negative, spec.zero_tol, v, an.curvature(v), ts, losses, up_t,
        up_loss, taken, an.loss, float(min(losses[best], an.loss)),
        along(taken) if taken else an.net,
    )


def _eigenvector(vectors: np.ndarray | None, index: int, an: Analysis) -> torch.Tensor | None:
    if vectors is None or vectors.shape[1] == 0:
        return None
    v = torch.as_tensor(vectors[:, index], dtype=an.net.dtype, device=an.net.device)
    return v / torch.linalg.vector_norm(v)
