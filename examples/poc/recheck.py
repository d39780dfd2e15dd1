"""Re-check plateau verdicts of a study independently of saddlemap's analysis.

For a random draw of plateaus from a study database, each verdict is derived again from the
stored mid-plateau snapshot, sharing nothing with saddlemap's closed forms, refinement or
classification (docs/poc-study.md):

* the loss R(θ) = (1/2n) Σᵢ (f(xᵢ) − yᵢ)², f(x) = Σⱼ aⱼ σ(wⱼᵀx + bⱼ) + c, written here from
  the raw weights; its gradient and Hessian by ``torch.func`` (autodiff);
* refinement by ``scipy.optimize.root(∇R, θ₀, jac=∇²R, method="lm")`` on the trained
  coordinates: Levenberg–Marquardt on the gradient equations, which converges to critical
  points of any index (not only minima);
* acceptance by the study's own stated rules (relative distance, loss along the path);
* the kind from ``numpy.linalg.eigvalsh`` of the trained block of the Hessian;
* "narrower" from the neurons themselves: a null output weight, two equal input weights, or
  (odd σ) two opposite ones, at the study's width tolerance;
* separately, saddlemap's own refined point (stored with every accepted plateau) is checked
  with the same autodiff: is it critical, near, without a barrier, of the stated kind?

Usage::

    python examples/poc/recheck.py poc.sqlite --count 40 --seed 0 --out docs/poc-recheck.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
import torch
from torch.func import grad, hessian

import saddlemap as sm
from saddlemap.study import StudyStore

SIGMA = {"tanh": torch.tanh, "erf": torch.special.erf, "sigmoid": torch.sigmoid,
         "softplus": torch.nn.functional.softplus}
ODD = {"tanh", "erf"}
#: ‖∇R‖ on the trained coordinates at which scipy's point counts as critical.
GRAD_TOL = 1e-9
#: An eigenvalue below −EIG_TOL · max|λ| is negative, one within ±EIG_TOL · max|λ| zero.
EIG_TOL = 1e-6
#: Neurons coincide (or an output weight is null) within this, relative to the weight scale.
WIDTH_TOL = 1e-3


class Problem:
    """The data, the activation and the parameter layout of one run, rebuilt from its spec."""

    def __init__(self, spec: dict[str, Any], net: sm.TwoLayerNet) -> None:
        prob = sm.teacher_student(
            teacher_width=spec["teacher_width"], width=spec["width"], d=spec["d"],
            n=spec["n"], activation=spec["activation"], seed=spec["seed"],
            noise=spec["noise"], init_scale=spec["init_scale"],
            orthonormal=spec.get("committee", False))
        self.X = prob.data.X.to(torch.float64)
        self.Y = prob.data.targets.to(torch.float64).reshape(len(self.X), -1)
        self.sigma = SIGMA[spec["activation"]]
        self.odd = spec["activation"] in ODD
        self.m, self.d, self.k = net.width, net.input_dim, self.Y.shape[1]
        self.bias, self.out_bias = net.b is not None, net.c is not None
        self.committee = bool(spec.get("committee", False))

    def pack(self, net: sm.TwoLayerNet) -> torch.Tensor:
        parts = [net.a.reshape(-1), net.W.reshape(-1)]
        parts += [net.b.reshape(-1)] if net.b is not None else []
        parts += [net.c.reshape(-1)] if net.c is not None else []
        return torch.cat(parts).to(torch.float64)

    def unpack(self, theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, d, k = self.m, self.d, self.k
        a = theta[: m * k].reshape(m, k)
        at = m * k
        W = theta[at: at + m * d].reshape(m, d)
        at += m * d
        b = theta[at: at + m] if self.bias else torch.zeros(m, dtype=theta.dtype)
        at += m if self.bias else 0
        c = theta[at: at + k] if self.out_bias else torch.zeros(k, dtype=theta.dtype)
        return a, W, b, c

    def trained(self) -> np.ndarray:
        """A boolean mask of the trained coordinates (committee: the output weights fixed)."""
        mask = np.ones(self.size, dtype=bool)
        if self.committee:
            mask[: self.m * self.k] = False
        return mask

    @property
    def size(self) -> int:
        return self.m * (self.k + self.d + int(self.bias)) + self.k * int(self.out_bias)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        a, W, b, c = self.unpack(theta)
        f = self.sigma(self.X @ W.T + b) @ a + c
        return 0.5 * ((f - self.Y) ** 2).sum() / len(self.X)


def _refine(prob: Problem, theta0: torch.Tensor) -> tuple[np.ndarray, bool, float]:
    """scipy's Levenberg–Marquardt on ∇R = 0 over the trained coordinates."""
    mask = prob.trained()
    full = theta0.clone()

    def embed(x: np.ndarray) -> torch.Tensor:
        t = full.clone()
        t[torch.from_numpy(mask)] = torch.from_numpy(x)
        return t

    g_fn, h_fn = grad(prob.loss), hessian(prob.loss)
    sol = scipy.optimize.root(lambda x: g_fn(embed(x)).numpy()[mask], theta0.numpy()[mask],
                              jac=lambda x: h_fn(embed(x)).numpy()[np.ix_(mask, mask)],
                              method="lm", options={"maxiter": 2000, "xtol": 1e-15,
                                                    "ftol": 1e-15})
    theta = embed(sol.x)
    gnorm = float(np.linalg.norm(g_fn(theta).numpy()[mask]))
    return theta.numpy(), gnorm <= GRAD_TOL, gnorm


def _narrower(prob: Problem, theta: np.ndarray) -> bool:
    a, W, b, _ = (t.numpy() for t in prob.unpack(torch.from_numpy(theta)))
    w = np.concatenate([W, b[:, None]], axis=1)
    scale = max(np.abs(w).max(), 1.0)
    if np.linalg.norm(a, axis=1).min() <= WIDTH_TOL * max(np.abs(a).max(), 1.0):
        return True
    if prob.odd and np.linalg.norm(w, axis=1).min() <= WIDTH_TOL * scale:
        return True  # σ(0) = 0: a neuron with zero weights computes nothing
    for i in range(prob.m):
        for j in range(i + 1, prob.m):
            if np.linalg.norm(w[i] - w[j]) <= WIDTH_TOL * scale:
                return True
            if prob.odd and np.linalg.norm(w[i] + w[j]) <= WIDTH_TOL * scale:
                return True
    return False


def _channel(prob: Problem, snap: np.ndarray, end: np.ndarray) -> bool:
    """A pair of nearly equal input weights whose opposite output weights grew ≥ 1.5×."""
    a0 = prob.unpack(torch.from_numpy(snap))[0].numpy()[:, 0]
    a1, W, b, _ = (t.numpy() for t in prob.unpack(torch.from_numpy(end)))
    a1 = a1[:, 0]
    w = np.concatenate([W, b[:, None]], axis=1)
    for i in range(prob.m):
        for j in range(i + 1, prob.m):
            close = np.linalg.norm(w[i] - w[j]) <= 0.05 * (np.linalg.norm(w[i]) + 1)
            opposite = a1[i] * a1[j] < 0
            grew = min(abs(a1[i]) / max(abs(a0[i]), 1e-300),
                       abs(a1[j]) / max(abs(a0[j]), 1e-300)) >= 1.5
            if close and opposite and grew:
                return True
    return False


def recheck(store: StudyStore, plateau: dict[str, Any]) -> dict[str, Any]:
    """The independent verdict of one stored plateau, with its numbers."""
    run = store.run(plateau["run_id"])
    spec, rules = run["spec"], (store.history(plateau["run_id"]) or {}).get("rules", {})
    snap_net = store.point(plateau["run_id"], plateau["index"], "snapshot")
    if snap_net is None:
        raise SystemExit(f"plateau {plateau['run_id']}/{plateau['index']}: no snapshot stored")
    prob = Problem(spec, snap_net)
    theta0 = prob.pack(snap_net)
    r_snap = float(prob.loss(theta0))
    theta, converged, gnorm = _refine(prob, theta0)
    distance = float(np.linalg.norm(theta - theta0.numpy()) / np.linalg.norm(theta0.numpy()))
    path = max(float(prob.loss(torch.from_numpy((1 - s) * theta0.numpy() + s * theta)))
               for s in np.linspace(0.0, 1.0, int(rules.get("path_points", 11))))
    accepted = (converged and distance <= rules.get("max_distance", 0.1)
                and path <= r_snap * (1 + rules.get("path_margin", 0.01)))
    mask = prob.trained()
    eig = np.linalg.eigvalsh(hessian(prob.loss)(torch.from_numpy(theta)).numpy()
                             [np.ix_(mask, mask)])
    tol = EIG_TOL * max(np.abs(eig).max(), 1e-300)
    negative = int((eig < -tol).sum())
    if accepted and negative:
        verdict = "saddle of a narrower network" if _narrower(prob, theta) else "saddle"
    elif accepted:
        verdict = "local minimum or undetermined"
    elif _channel(prob, theta0.numpy(), theta) and float(prob.loss(torch.from_numpy(theta))) \
            < r_snap:
        verdict = "channel to infinity"
    else:
        verdict = "not near a critical point"
    claimed = _verify_claim(store, plateau, prob, theta0, r_snap, rules)
    return {"run_id": plateau["run_id"], "index": plateau["index"],
            "activation": spec["activation"], "ratio": spec["width"] / spec["teacher_width"],
            "committee": bool(spec.get("committee", False)), "optimizer": spec["optimizer"],
            "stored": plateau["verdict"], "recheck": verdict,
            "agree": _agree(plateau["verdict"], verdict),
            "grad_norm": gnorm, "distance": distance, "max_path_loss": path,
            "loss": r_snap, "lambda_min": float(eig[0]), "negative": negative,
            "claim": claimed}


def _verify_claim(store: StudyStore, plateau: dict[str, Any], prob: Problem,
                  theta0: torch.Tensor, r_snap: float, rules: dict[str, Any]) -> dict[str, Any]:
    """Check saddlemap's own refined point (if stored) with this file's autodiff alone.

    The verdict the stored point implies: critical (‖∇R‖ on the trained coordinates at most
    GRAD_TOL), within the stated distance, no barrier on the path, its inertia and the
    neuron test.  A stored verdict of "not near a critical point" makes no claim to check.
    """
    ref_net = store.point(plateau["run_id"], plateau["index"], "refined")
    if ref_net is None or not plateau.get("accepted"):
        return {"checked": False}
    theta = prob.pack(ref_net)
    mask = prob.trained()
    gnorm = float(np.linalg.norm(grad(prob.loss)(theta).numpy()[mask]))
    distance = float((theta - theta0).norm() / theta0.norm())
    path = max(float(prob.loss((1 - s) * theta0 + s * theta))
               for s in np.linspace(0.0, 1.0, int(rules.get("path_points", 11))))
    eig = np.linalg.eigvalsh(hessian(prob.loss)(theta).numpy()[np.ix_(mask, mask)])
    negative = int((eig < -EIG_TOL * max(np.abs(eig).max(), 1e-300)).sum())
    ok = (gnorm <= GRAD_TOL and distance <= rules.get("max_distance", 0.1)
          and path <= r_snap * (1 + rules.get("path_margin", 0.01)))
    if ok and negative:
        verdict = ("saddle of a narrower network" if _narrower(prob, theta.numpy())
                   else "saddle")
    elif ok:
        verdict = "local minimum or undetermined"
    else:
        verdict = "not a critical point near the plateau"
    return {"checked": True, "verdict": verdict, "agree": _agree(plateau["verdict"], verdict),
            "grad_norm": gnorm, "distance": distance, "negative": negative}


def _agree(stored: str, recheck: str) -> bool:
    if recheck == "local minimum or undetermined":
        return stored in ("local minimum", "critical point of undetermined type")
    return stored == recheck


def main(argv: list[str] | None = None) -> int:
    """Draw plateaus at random, re-check each, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with StudyStore(args.db, create=False) as store:
        plateaus = [p for p in store.plateaus() if p["verdict"] != "not refined"]
        draw = random.Random(args.seed).sample(plateaus, min(args.count, len(plateaus)))
        rows = [recheck(store, p) for p in draw]
    for r in rows:
        print(f"{r['run_id']}/{r['index']}  {r['stored']:<30} {r['recheck']:<30} "
              f"{'agree' if r['agree'] else 'DISAGREE'}  ‖∇R‖ {r['grad_norm']:.1e} "
              f"dist {r['distance']:.3f} λmin {r['lambda_min']:.2e}")
    agree = sum(r["agree"] for r in rows)
    print(f"agreement: {agree} of {len(rows)} ({agree / max(len(rows), 1):.0%})")
    claims = [r["claim"] for r in rows if r["claim"]["checked"]]
    confirmed = sum(c["agree"] for c in claims)
    print(f"stored refined points confirmed by autodiff: {confirmed} of {len(claims)}")
    if args.out:
        args.out.write_text(json.dumps({"seed": args.seed, "rows": rows, "agree": agree,
                                        "count": len(rows), "claims": len(claims),
                                        "claims_confirmed": confirmed}, indent=1) + "\n")
    return 0 if rows and agree / len(rows) >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
