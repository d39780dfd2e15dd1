"""Which critical points are saddles, with a witness a user can check (docs/theory.md §7).

The main theorem of Zhang, Zhang & Luo (arXiv:2405.17501): if the output function f of a
non-global critical set can be computed by a narrower network, Q_m(f) contains saddle
branches.  The constructive proofs give the witnesses used here:

* a **null neuron** (a_k = 0) at a regular point of Z_f (g = ∇φ(w̃_k) ≠ 0): the direction
  v = (δa_k = −‖g‖²/A, δw̃_k = g), A = Σ_i h_i σ(w̃_kᵀx̃_i)², has vᵀHv = −‖g‖⁴/A < 0;
* a null neuron at a singular point of Z_f: a *non-strict* saddle; along the curve
  w̃_k(t) = w̃_k + t u, a_k(t) = −φ(w̃_k(t))/M(w̃_k(t)), M(w̃) = (1/n) Σ σ(w̃ᵀx̃_i)², the
  squared loss falls by exactly ‖φ(w̃_k(t))‖²/(2M(w̃_k(t))) (u: an eigenvector of the
  Hessian of φ with a nonzero eigenvalue);
* a **split cluster** j with output-weight ratios ρ_c (Σρ_c = 1) and K_j = G_{a_j*}(w̃_j*):
  along copies' input-weight perturbations u_c with Σ ρ_c u_c = 0 the curvature is
  Σ ρ_c u_cᵀ K_j u_c (Fukumizu & Amari 2000).  On that subspace diag(ρ) has (P₊ − 1)
  positive and N₋ negative directions (P₊, N₋: positive and negative ratios), so the point
  is a strict saddle iff (N₋ > 0 and K_j has a positive eigenvalue) or (P₊ > 1 and K_j has
  a negative one).

>>> from saddlemap import Dataset, TwoLayerNet
>>> data = Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
>>> a, w = 0.610515537972, 1.433931221329
>>> classify(TwoLayerNet([2 * a, -a], [[w], [w]]), data).kind.value
'strict saddle'
>>> classify(TwoLayerNet([0.5 * a, 0.5 * a], [[w], [w]]), data).kind.value
'local minimum'
>>> classify(TwoLayerNet([a, 0.0], [[w], [w]]), data).kind.value
'non-strict saddle'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .analysis import Analysis, as_analysis
from .critical_points import CriticalPoint, certify
from .critical_set import Branch, CriticalSet, Decomposition
from .data import Dataset
from .derivatives import residual_function
from .network import TwoLayerNet
from .tolerances import Tolerances
from .verdicts import BranchVerdict, Kind, SplitRegion, Verdict

__all__ = [
    "Classification",
    "EscapeCurve",
    "SaddleBranch",
    "SplitRule",
    "branch_verdict",
    "classify",
    "saddle_branches",
    "splitting_rule",
]


@dataclass(frozen=True, eq=False)
class EscapeCurve:
    """θ(t) for a null neuron at a singular point of Z_f: w̃_k + t u, a_k = −φ/M.

    ``loss_drop(t)`` is the decrease R(θ) − R(θ(t)) = ‖φ‖²/(2M), exact for the squared loss
    (R is then quadratic in a_k with curvature M); for other losses it is the second-order
    model of that decrease.
    """

    net: TwoLayerNet
    data: Dataset
    neuron: int
    direction: torch.Tensor  # u, unit, in augmented coordinates

    def point(self, t: float) -> TwoLayerNet:
        """θ(t): the null neuron moved to w̃_k + t u with its optimal output weight."""
        w = self.net.W_aug[self.neuron] + t * self.direction
        phi, M = _phi_and_mass(self.net, self.data, w)
        a = self.net.a.clone()
        a[self.neuron] = -phi / M
        W = self.net.W_aug.clone()
        W[self.neuron] = w
        d = self.net.input_dim
        return self.net.replace(a=a, W=W[:, :d], b=W[:, d] if self.net.b is not None else None)

    def loss_drop(self, t: float) -> float:
        """‖φ(w̃_k(t))‖²/(2M(w̃_k(t))): the decrease of R along the curve (squared loss)."""
        w = self.net.W_aug[self.neuron] + t * self.direction
        phi, M = _phi_and_mass(self.net, self.data, w)
        return float(phi @ phi) / (2 * M)


def _phi_and_mass(net: TwoLayerNet, data: Dataset, w: torch.Tensor) -> tuple[torch.Tensor, float]:
    """φ(w̃) and M(w̃) = (1/n) Σ σ(w̃ᵀx̃_i)², the curvature of R in a null neuron's a."""
    rf = residual_function(net, data)
    s = net.activation(rf.X @ w)
    return rf.phi(w), float((s * s).sum()) / rf.X.shape[0]


@dataclass(frozen=True, eq=False)
class SplitRule:
    """Fukumizu–Amari rule for one neuron j of θ*: K_j, its inertia, the splitting line.

    For a two-way split (λa_j*, w̃_j*), ((1 − λ)a_j*, w̃_j*) the curvature along
    (δw̃ = (1 − λ)ξ, δw̃' = −λξ) is λ(1 − λ) ξᵀK_jξ; ``intervals`` labels the λ-line.
    """

    neuron: int
    K: torch.Tensor
    eigenvalues: np.ndarray
    zero_tol: float
    intervals: tuple[tuple[float, float, SplitRegion], ...]

    @property
    def inertia(self) -> tuple[int, int, int]:
        """(n₊, n₀, n₋) of K_j."""
        lam = self.eigenvalues
        tol = self.zero_tol
        return int((lam > tol).sum()), int((abs(lam) <= tol).sum()), int((lam < -tol).sum())


def splitting_rule(
    star: TwoLayerNet, data: Dataset, *, tolerances: Tolerances | None = None
) -> list[SplitRule]:
    """K_j = G_{a_j*}(w̃_j*) and the labelled splitting line for every neuron of ``star``.

    Intervals (docs/theory.md §7.3): K_j indefinite: strict saddle for λ ∉ {0, 1}; K_j ≻ 0:
    strict saddle outside [0, 1], local minimum inside if θ* is a strict local minimum;
    K_j ≺ 0: the reverse; semidefinite singular: strict on the side where λ(1 − λ)ξᵀKξ < 0
    is possible, undetermined on the other; λ ∈ {0, 1}: non-strict saddle.  An eigenvalue μ
    of K_j is zero when |μ| ≤ ``tolerances.kernel`` · max(max|μ|, Σ_i ‖e_i‖₁).
    """
    rf = residual_function(star, data)
    rtol = (tolerances or Tolerances()).kernel
    rules = []
    for j in range(star.width):
        K = rf.G(star.W_aug[j], star.a[j])
        lam = torch.linalg.eigvalsh(K).cpu().numpy()
        tol = rtol * max(float(np.abs(lam).max()), float(rf.e.abs().sum()))
        pos, neg = bool((lam > tol).any()), bool((lam < -tol).any())
        inside = SplitRegion.STRICT_SADDLE if neg else SplitRegion.LOCAL_MINIMUM
        outside = SplitRegion.STRICT_SADDLE if pos else SplitRegion.UNDETERMINED
        if not pos and not neg:
            inside = outside = SplitRegion.UNDETERMINED
        intervals = (
            (-np.inf, 0.0, outside), (0.0, 0.0, SplitRegion.NON_STRICT_SADDLE),
            (0.0, 1.0, inside), (1.0, 1.0, SplitRegion.NON_STRICT_SADDLE),
            (1.0, np.inf, outside),
        )
        rules.append(SplitRule(j, K, lam, tol, intervals))
    return rules


@dataclass(frozen=True, eq=False)
class Classification:
    """A verdict with its witness.

    Attributes:
        kind: the :class:`Kind`.
        certificate: gradient, spectrum and warnings of the point.
        direction: a unit direction v with negative curvature (strict saddles), else None.
        curvature: vᵀHv for ``direction``.
        curve: the escape curve of a non-strict saddle, else None.
        evidence: what was checked, in words.
    """

    kind: Kind
    certificate: CriticalPoint
    direction: torch.Tensor | None = None
    curvature: float | None = None
    curve: EscapeCurve | None = None
    evidence: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """The verdict and its evidence, a few lines."""
        lines = [self.kind.value, *(f"- {e}" for e in self.evidence)]
        return "\n".join(lines)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v)


def _null_witness(
    an: Analysis, k: int, zero_tol: float
) -> tuple[torch.Tensor | None, EscapeCurve, str]:
    """For null neuron k: a negative-curvature direction, if any, and always an escape curve.

    The direction is the lowest eigenvector of the neuron's own Hessian block when its
    eigenvalue is below −``zero_tol``.

    Neuron k's block is [[Σ σ² h_i, ∇φ], [∇φᵀ, 0]]: indefinite when ∇φ(w̃_k) ≠ 0 (for the
    squared loss its minimum is −‖g‖⁴/A along (−‖g‖²/A, g), docs/theory.md §7.2).  The curve
    w̃_k + tu, a_k = −φ/M lowers R wherever φ ≠ 0; u follows ∇φ at a regular point of Z_f and
    the largest curvature of φ at a singular one (φ(w̃ + tu) ≈ ½t² uᵀ∇²φ u).
    """
    net, rf = an.net, an.residual_function
    w = net.W_aug[k]
    point = an.zero_set.point(w)
    sl = net.layout.neuron_slice(k)
    lam, vecs = torch.linalg.eigh(an.block(sl))
    if point.regular:
        u = torch.linalg.svd(rf.grad(w))[2][0]
    else:
        eye = torch.eye(net.output_dim, dtype=net.dtype, device=net.device)
        best = max(
            (torch.linalg.eigh(rf.G(w, eye[c])) for c in range(net.output_dim)),
            key=lambda pair: float(pair[0].abs().max()),
        )
        u = best[1][:, int(best[0].abs().argmax())]
    curve = EscapeCurve(net, an.data, k, _unit(u))
    where = "regular" if point.regular else "singular"
    if float(lam[0]) < -zero_tol:
        v = torch.zeros(net.num_params, dtype=net.dtype, device=net.device)
        v[sl] = vecs[:, 0]
        return v, curve, (
            f"null neuron {k} at a {where} point of Z_f (‖∇φ‖ = {point.grad_norm:.2e}): its own "
            f"Hessian block has eigenvalue {float(lam[0]):.3e}"
        )
    return None, curve, (
        f"null neuron {k} at a {where} point of Z_f (‖∇φ‖ = {point.grad_norm:.1e}): "
        "non-strict; escape curve w̃_k + tu with a_k = −φ/M"
    )


def _split_witness(
    star: TwoLayerNet, rule: SplitRule, members: list[int], ratios: np.ndarray,
    net: TwoLayerNet, signs: tuple[int, ...],
) -> torch.Tensor | None:
    """A direction of negative curvature within cluster ``members``, or None."""
    pos, _, neg = rule.inertia
    _lam, vecs = np.linalg.eigh(rule.K.cpu().numpy())
    n_pos, n_neg = ratios > 0, ratios < 0
    if n_neg.any() and pos > 0:
        xi = vecs[:, -1]
        P, N = ratios[n_pos].sum(), -ratios[n_neg].sum()
        coef = np.where(n_neg, 1.0, np.where(n_pos, N / P, 0.0))  # Σ ρ_c coef_c = 0
    elif n_pos.sum() > 1 and neg > 0:
        xi = vecs[:, 0]
        first, second = np.nonzero(n_pos)[0][:2]
        coef = np.zeros_like(ratios)
        coef[first], coef[second] = 1.0, -ratios[first] / ratios[second]
    else:
        return None
    lay = net.layout
    v = torch.zeros(lay.num_params, dtype=net.dtype, device=net.device)
    for c, k in enumerate(members):
        block = v[lay.neuron_slice(k)]
        block[net.output_dim :] = signs[k] * coef[c] * torch.as_tensor(xi, dtype=net.dtype)
    return _unit(v)


def classify(
    net: TwoLayerNet | Analysis,
    data: Dataset | None = None,
    *,
    tolerances: Tolerances | None = None,
) -> Classification:
    """Classify a point with the spectrum and the saddle theory (docs/theory.md §7).

    Order of evidence: not critical → vanishing residuals (a global minimum) → negative
    eigenvalue (strict saddle, its eigenvector) → theory for PSD Hessians: a null neuron
    (strict where its own Hessian block is indefinite, otherwise non-strict with an escape
    curve), a split cluster (Fukumizu–Amari) → local minimum when θ* is a strict minimum and
    every split has K_j ≻ 0 with positive ratios → otherwise undetermined, saying what was
    checked.  ``net`` may be an :class:`~saddlemap.Analysis`: its certificate, Hessian and
    critical set are reused, and the classification is kept in it.
    """
    an = as_analysis(net, data, tolerances)
    return an.memo("classification", lambda: _classify(an))


def _classify(an: Analysis) -> Classification:
    net, cert = an.net, certify(an)
    evidence = []
    if not net.activation.analytic:
        evidence.append(
            f"{net.activation.name} is not analytic: second-order verdicts hold only off kinks"
        )
    if not cert.converged:
        return Classification(Kind.NOT_CRITICAL, cert, evidence=(
            *evidence, f"‖∇R‖ = {cert.grad_norm:.2e} > {cert.grad_tol:.1e} ({cert.verdict.value})"
        ))
    if an.is_global:
        return Classification(Kind.GLOBAL_MINIMUM, cert, evidence=(
            *evidence, f"every residual vanishes (R = {cert.loss:.3g}): a global minimum, where "
            "every representation of the output is critical and nothing lowers R",
        ))
    spec = cert.spectrum
    if cert.verdict is Verdict.STRICT_SADDLE and spec.eigenvectors is not None:
        v = _unit(torch.as_tensor(spec.eigenvectors[:, 0], dtype=net.dtype, device=net.device))
        return Classification(
            Kind.STRICT_SADDLE, cert, v, an.curvature(v),
            evidence=(*evidence, f"λ_min = {spec.min:.3e} < −{spec.zero_tol:.1e}: eigenvector"),
        )
    cs = an.memo("critical_set", lambda: CriticalSet(an, check=False))
    dec = cs.decompose(net)
    if not dec.ok:
        evidence.append("the network does not decompose into Q_m(f): " + "; ".join(dec.reasons))
        kind = Kind.LOCAL_MINIMUM if cert.verdict is Verdict.STRICT_MINIMUM else Kind.UNDETERMINED
        return Classification(kind, cert, evidence=tuple(evidence))
    return _classify_psd(an, cert, cs, dec, evidence)


def _classify_psd(
    an: Analysis, cert: CriticalPoint, cs: CriticalSet, dec: Decomposition, evidence: list[str],
) -> Classification:
    net, zero_tol = an.net, cert.spectrum.zero_tol
    for k in dec.nulls:
        v, curve, note = _null_witness(an, k, zero_tol)
        if v is not None:
            return Classification(Kind.STRICT_SADDLE, cert, v, an.curvature(v),
                                  evidence=(*evidence, note))
        return Classification(Kind.NON_STRICT_SADDLE, cert, curve=curve, evidence=(*evidence, note))
    rules = splitting_rule(cs.star, an.data, tolerances=an.tolerances)
    star_cert = certify(cs.star, an.data, tolerances=an.tolerances)
    all_definite = True
    for j, members in enumerate(dec.clusters):
        if len(members) < 2:
            continue
        a_canon = np.array([dec.signs[k] * float(net.a[k] @ cs.star.a[j]) for k in members])
        ratios = a_canon / float(cs.star.a[j] @ cs.star.a[j])
        if (np.abs(ratios) <= an.tolerances.ratio).any():
            k = members[int(np.argmin(np.abs(ratios)))]
            _, curve, note = _null_witness(an, k, zero_tol)
            return Classification(Kind.NON_STRICT_SADDLE, cert, curve=curve,
                                  evidence=(*evidence, f"ratio 0 in cluster {j}: " + note))
        v = _split_witness(cs.star, rules[j], list(members), ratios, net, dec.signs)
        if v is not None:
            return Classification(Kind.STRICT_SADDLE, cert, v, an.curvature(v), evidence=(
                *evidence, f"cluster {j} split with ratios {np.round(ratios, 4).tolist()}, "
                f"K_j inertia {rules[j].inertia}: Fukumizu–Amari direction",
            ))
        _pos, zero, neg = rules[j].inertia
        all_definite &= zero == 0 and neg == 0 and bool((ratios > 0).all())
    if all_definite and star_cert.verdict is Verdict.STRICT_MINIMUM:
        return Classification(Kind.LOCAL_MINIMUM, cert, evidence=(
            *evidence, "θ* is a strict local minimum and every split cluster has K_j ≻ 0 with "
            "ratios in (0, 1): a local minimum, flat along the branch (Fukumizu–Amari)",
        ))
    return Classification(Kind.UNDETERMINED, cert, evidence=(
        *evidence, f"PSD Hessian; θ* is {star_cert.verdict.value}; split clusters have no "
        "negative-curvature direction at second order",
    ))


@dataclass(frozen=True, eq=False)
class SaddleBranch:
    """The verdict over one branch of Q_m(f), with a checked witness.

    Attributes:
        branch: the branch type.
        verdict: the :class:`~saddlemap.BranchVerdict`: ``SADDLE_BRANCH`` (every point a
            saddle), ``MIXED`` (saddles and local minima or undetermined points, split by the
            sign pattern of the ratios) or ``UNDETERMINED``.
        regions: the sub-regions in words.
        point: a point of the branch where the witness holds.
        witness: its classification (direction with vᵀHv < 0, or an escape curve).
    """

    branch: Branch
    verdict: BranchVerdict
    regions: str
    point: TwoLayerNet | None
    witness: Classification | None


def saddle_branches(cs: CriticalSet, m: int, seed: int = 0) -> list[SaddleBranch]:
    """Every branch of Q_m(f) with its saddle verdict and, where it has one, a witness.

    docs/theory.md §7: a branch with a null neuron is a saddle branch (strict where the neuron
    sits at a regular point of Z_f); a splitting branch is a saddle branch when some split
    cluster has an indefinite K_j, and otherwise splits by the signs of the ratios
    (Fukumizu–Amari).  When r < m the branch "θ* plus m − r null neurons" exists, so there is
    always a saddle branch.
    """
    rules = splitting_rule(cs.star, cs.data, tolerances=cs.tolerances)
    star_cert = certify(cs.star, cs.data, tolerances=cs.tolerances)
    star_min = star_cert.verdict is Verdict.STRICT_MINIMUM
    out = []
    for b in cs.branches(m):
        if b.nulls == 0 and all(s == 1 for s in b.sizes):
            continue  # θ* itself (m = r)
        verdict, regions = branch_verdict(b, rules, star_min)
        point, witness = _branch_witness(cs, b, rules, verdict, seed)
        out.append(SaddleBranch(b, verdict, regions, point, witness))
    return out


def branch_verdict(
    b: Branch, rules: list[SplitRule], star_min: bool
) -> tuple[BranchVerdict, str]:
    """The verdict over branch ``b`` and its sub-regions in words, from the splitting rules."""
    if b.nulls:
        return BranchVerdict.SADDLE_BRANCH, (
            "every point: a null neuron escapes (docs/theory.md §7.1)")
    split = [j for j, s in enumerate(b.sizes) if s > 1]
    inertias = [rules[j].inertia for j in split]
    if any(pos and neg for pos, _, neg in inertias):
        return BranchVerdict.SADDLE_BRANCH, "every point with nonzero ratios: K_j indefinite"
    if all(zero == 0 and neg == 0 for _, zero, neg in inertias):
        minima = "local minima" if star_min else "undetermined (θ* is not a strict minimum)"
        return BranchVerdict.MIXED, (
            f"a negative ratio: strict saddle; all ratios in (0, 1): {minima}")
    if all(zero == 0 and pos == 0 for pos, zero, _ in inertias):
        return BranchVerdict.MIXED, "two or more positive ratios: strict saddle; else undetermined"
    return BranchVerdict.UNDETERMINED, "semidefinite singular K_j: second order does not settle it"


def _branch_witness(
    cs: CriticalSet, b: Branch, rules: list[SplitRule], verdict: BranchVerdict, seed: int
) -> tuple[TwoLayerNet | None, Classification | None]:
    """A sampled point of the branch where the saddle shows, classified; None if none."""
    if verdict is BranchVerdict.UNDETERMINED:
        return None, None
    for attempt in range(8):
        point = cs.sample(b, seed=seed + attempt)
        if b.nulls == 0:
            point = _with_negative_ratio(cs, b, rules, point, seed + attempt)
        found = classify(point, cs.data, tolerances=cs.tolerances)
        if found.kind.is_saddle:
            return point, found
    return None, None


def _with_negative_ratio(
    cs: CriticalSet, b: Branch, rules: list[SplitRule], point: TwoLayerNet, seed: int
) -> TwoLayerNet:
    """For a K_j ≻ 0 split, make sure one ratio is negative (the saddle side of the line)."""
    dec = cs.decompose(point)
    a = point.a.clone()
    for j, members in enumerate(dec.clusters):
        if len(members) > 1 and rules[j].inertia[2] == 0:
            ratios = torch.linspace(-0.5, 1.5, len(members), dtype=a.dtype)
            ratios = ratios / ratios.sum() if float(ratios.sum()) != 0 else ratios
            ratios[-1] = 1 - ratios[:-1].sum()
            for rho, k in zip(ratios, members, strict=True):
                a[k] = dec.signs[k] * rho * cs.star.a[j]
    return point.replace(a=a)
