"""One adapter per peer the benchmarks compare saddlemap with; every bench script uses these.

* :class:`TorchFunc`: ``torch.func`` on ``sm.loss_function`` (gradient, Hessian, and the
  forward-over-reverse HVP ``jvp(grad)``);
* :class:`DoubleBackward` (and :class:`KeptGradient`): autograd, one backward for the
  gradient and double backward for HVPs, with the gradient graph built per call or kept;
* :class:`CountingOperator` and :func:`scipy_eigsh`: ``scipy.sparse.linalg.eigsh`` on a
  ``LinearOperator`` that counts its products (:func:`autograd_operator` makes one from
  double backward);
* :class:`Curvlinops`, :class:`PyHessian`, :class:`HessianEigenthings`: the third-party
  eigensolvers, in :data:`EIGEN_PEERS`.  They are optional imports: :meth:`EigenPeer.missing`
  says why one cannot run (status ``skipped`` when it is not installed), never raises.

torch, numpy and scipy are saddlemap's own dependencies, so the first three are always there.
The third-party peers are installed by ``benchmarks/requirements.txt`` (with ``--no-deps``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

import saddlemap as sm

Risk = Callable[[torch.Tensor], torch.Tensor]

LANCZOS_TOL = 1e-12  # sm.spectrum's default tolerance: what the tuned peers are held to
LANCZOS_NCV = 30  # the Krylov size sm.lanczos_spectrum uses for k = 1
GIVE_UP_S = 60.0  # an eigensolver run still going after this is a failure (no convergence)
TASKS = ("lambda_min", "lambda_max")
# Distributions whose versions stand beside every result (the peers and what they pull in).
VERSIONED = ("pyhessian", "curvlinops-for-pytorch", "hessian-eigenthings",
             "backpack-for-pytorch", "threadpoolctl")


def peer_versions() -> dict[str, str | None]:
    """Installed version of each peer distribution (None where it is not installed)."""
    out: dict[str, str | None] = {}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def start_vector(P: int, seed: int) -> np.ndarray:
    """The start vector ``sm.spectrum`` uses: the tuned peers start from it too."""
    return np.random.default_rng(seed).standard_normal(P)


def which_end(task: str) -> str:
    """ARPACK's ``which`` for λ_min (``SA``) and λ_max (``LA``)."""
    return "SA" if task == "lambda_min" else "LA"


# ---------------------------------------------------------------------------- torch.func
class TorchFunc:
    """``torch.func`` on a risk of the flat parameters."""

    def __init__(self, risk: Risk) -> None:
        self.risk = risk
        self._grad = torch.func.grad(risk)
        self._hessian = torch.func.hessian(risk)

    def gradient(self, theta: torch.Tensor) -> torch.Tensor:
        return self._grad(theta)

    def hessian(self, theta: torch.Tensor) -> torch.Tensor:
        return self._hessian(theta)

    def hvp(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Forward over reverse: ``jvp(grad)``."""
        return torch.func.jvp(self._grad, (theta,), (v,))[1]


# ------------------------------------------------------------------ autograd, double backward
def _leaf(theta: torch.Tensor) -> torch.Tensor:
    return theta.detach().requires_grad_(True)


class DoubleBackward:
    """Autograd on a risk of the flat parameters at ``theta``; nothing is kept between calls."""

    def __init__(self, risk: Risk, theta: torch.Tensor) -> None:
        self.risk = risk
        self.theta = theta

    def gradient(self) -> torch.Tensor:
        """One backward pass."""
        th = _leaf(self.theta)
        return torch.autograd.grad(self.risk(th), th)[0]

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """Double backward with the gradient graph built per call."""
        th = _leaf(self.theta)
        (g,) = torch.autograd.grad(self.risk(th), th, create_graph=True)
        return torch.autograd.grad(g @ v, th)[0]

    def kept(self) -> KeptGradient:
        """The gradient's graph built once here, for many products at this point."""
        return KeptGradient(self.risk, self.theta)


class KeptGradient:
    """The gradient's graph built once; each HVP is one more backward through it."""

    def __init__(self, risk: Risk, theta: torch.Tensor) -> None:
        self.theta = _leaf(theta)
        (self.g,) = torch.autograd.grad(risk(self.theta), self.theta, create_graph=True)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(self.g @ v, self.theta, retain_graph=True)[0]

    def hvp_columns(self, V: torch.Tensor) -> list[torch.Tensor]:
        """One kept-graph product per column of ``V``."""
        return [self.hvp(V[:, j]) for j in range(V.shape[1])]

    def hessian(self) -> torch.Tensor:
        """Row by row: one backward per parameter."""
        rows = [torch.autograd.grad(self.g[i], self.theta, retain_graph=True)[0]
                for i in range(self.theta.numel())]
        return torch.stack(rows)


# --------------------------------------------------------------- scipy eigsh, LinearOperator
class CountingOperator(LinearOperator):
    """A scipy operator from a numpy matvec that counts the vectors it multiplies.

    An eigensolver still running ``give_up_s`` seconds after the operator was made is
    stopped with a TimeoutError (a failure of that tool); ``None`` never gives up.
    """

    def __init__(self, matvec: Callable[[np.ndarray], np.ndarray], size: int,
                 give_up_s: float | None = GIVE_UP_S) -> None:
        self._fn = matvec
        self.num_matvecs = 0
        self._give_up_s = give_up_s
        self._deadline = None if give_up_s is None else time.perf_counter() + give_up_s
        super().__init__(dtype=np.dtype(np.float64), shape=(size, size))

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        self.num_matvecs += 1
        if self._deadline is not None and time.perf_counter() > self._deadline:
            raise TimeoutError(f"gave up after {self._give_up_s:.0f} s "
                               f"({self.num_matvecs} matvecs)")
        return self._fn(np.ascontiguousarray(x).reshape(-1))

    def _adjoint(self) -> CountingOperator:
        return self


def autograd_operator(risk: Risk, theta: torch.Tensor, *, kept: bool = True,
                      give_up_s: float | None = GIVE_UP_S) -> CountingOperator:
    """Double-backward HVPs as a scipy operator: first backward kept, or rebuilt per call."""
    if kept:
        fn = KeptGradient(risk, theta).hvp
    else:
        fn = DoubleBackward(risk, theta).hvp
    return CountingOperator(lambda x: fn(torch.from_numpy(x)).numpy(), theta.numel(),
                            give_up_s)


def scipy_eigsh(op: CountingOperator, which: str, *, partial: bool = True,
                **kw: Any) -> dict[str, Any]:
    """One extreme eigenpair by ``eigsh(k=1)``: ``lam``, ``vec``, ``matvecs`` and a ``note``.

    With ``partial`` an ARPACK run that did not converge but has an estimate returns it, noted;
    without, it raises as scipy does.
    """
    try:
        lam, vec = eigsh(op, k=1, which=which, **kw)
        out = (float(lam[0]), vec[:, 0], "")
    except ArpackNoConvergence as exc:
        if not partial or len(exc.eigenvalues) == 0:
            raise
        out = (float(exc.eigenvalues[0]), exc.eigenvectors[:, 0], "ARPACK did not converge")
    return {"lam": out[0], "vec": out[1], "matvecs": op.num_matvecs, "note": out[2]}


# ------------------------------------------------------------------ third-party eigensolvers
def _module_to_flat(vec: np.ndarray, m: int, d: int) -> np.ndarray:
    """A vector in nn.Sequential's order (W row-major, then a) to saddlemap's flat layout."""
    W, a = vec[: m * d].reshape(m, d), vec[m * d:]
    return np.concatenate([a[:, None], W], axis=1).reshape(-1)


def _flat_to_module(vec: np.ndarray, m: int, d: int) -> np.ndarray:
    blocks = vec.reshape(m, d + 1)
    return np.concatenate([blocks[:, 1:].reshape(-1), blocks[:, 0]])


def half_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """R = (1/2n) Σ‖g − y‖², the loss saddlemap's Dataset uses."""
    return 0.5 * ((out - target) ** 2).sum(-1).mean()


@dataclass
class PeerProblem:
    """A point and its data as the torch-module peers take them (tanh, no bias)."""

    net: sm.TwoLayerNet
    X: torch.Tensor
    Y: torch.Tensor
    seed: int

    def model(self) -> torch.nn.Module:
        return self.net.to_torch()  # a fresh copy per run: some peers leave .grad behind

    def to_flat(self, vec: np.ndarray) -> np.ndarray:
        return _module_to_flat(np.asarray(vec, dtype=np.float64), self.net.width,
                               self.net.input_dim)


class EigenPeer:
    """A third-party eigensolver: optional import, run at its defaults or tuned.

    ``run`` returns ``lam``, ``vec`` (in saddlemap's flat layout), ``matvecs`` and a ``note``.
    """

    module: str = ""
    label: str = ""
    defaults: str = ""
    tuned: str = ""

    def tool(self, tuned: bool) -> str:
        """The row's tool name, settings included."""
        settings = self.tuned if tuned else self.defaults
        return f"{self.label}, {'tuned' if tuned else 'defaults'} ({settings})"

    def unsupported(self, task: str) -> str | None:
        """Why this peer cannot compute ``task`` at all, or None."""
        return None

    def missing(self) -> tuple[str, str] | None:
        """``None`` if importable, else ``(status, why)``: ``skipped`` when not installed."""
        try:
            importlib.import_module(self.module)
        except ImportError as exc:
            return "skipped", f"not installed ({type(exc).__name__}: {exc})"
        except Exception as exc:  # installed but broken: that is the peer's failure
            return "failed", f"not importable ({type(exc).__name__}: {exc})"
        return None

    def run(self, problem: PeerProblem, task: str, tuned: bool) -> dict[str, Any]:
        raise NotImplementedError


class Curvlinops(EigenPeer):
    module = "curvlinops"
    label = "curvlinops HessianLinearOperator + eigsh"
    defaults = "scipy eigsh defaults (tol=0, ncv=20, random v0)"
    tuned = "tol=1e-12, ncv=30, same v0"

    def run(self, problem: PeerProblem, task: str, tuned: bool) -> dict[str, Any]:
        import curvlinops

        model = problem.model()
        H = curvlinops.HessianLinearOperator(model, torch.nn.MSELoss(),
                                             list(model.parameters()), [(problem.X, problem.Y)])
        scipy_op = (0.5 * H).to_scipy()  # MSELoss is (1/n)Σ(g−y)² = 2R
        op = CountingOperator(lambda x: np.asarray(scipy_op @ x), problem.net.num_params)
        kw: dict[str, Any] = {}
        if tuned:
            net = problem.net
            v0 = _flat_to_module(start_vector(net.num_params, problem.seed), net.width,
                                 net.input_dim)
            kw = {"tol": LANCZOS_TOL, "ncv": min(net.num_params, LANCZOS_NCV), "v0": v0}
        out = scipy_eigsh(op, which_end(task), **kw)
        return {**out, "vec": problem.to_flat(out["vec"])}


@contextlib.contextmanager
def _count_pyhessian_hvps(counter: list[int]) -> Iterator[None]:
    mod = sys.modules["pyhessian.hessian"]
    original = mod.hessian_vector_product

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(*args, **kwargs)

    mod.hessian_vector_product = counted
    try:
        yield
    finally:
        mod.hessian_vector_product = original


class PyHessian(EigenPeer):
    module = "pyhessian"
    label = "PyHessian power iteration"
    defaults = "maxIter=100, tol=1e-3"
    tuned = "maxIter=10000, tol=1e-12"

    def unsupported(self, task: str) -> str | None:
        if task == "lambda_min":
            return "power iteration finds the largest-|λ| eigenvalue only"
        return None

    def run(self, problem: PeerProblem, task: str, tuned: bool) -> dict[str, Any]:
        import pyhessian

        max_iter, tol = (10_000, LANCZOS_TOL) if tuned else (100, 1e-3)
        counter = [0]
        torch.manual_seed(problem.seed)  # PyHessian draws its start vector from torch's RNG
        with _count_pyhessian_hvps(counter), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its backward(create_graph=True)
            h = pyhessian.hessian(problem.model(), half_mse, data=(problem.X, problem.Y),
                                  cuda=False)
            lams, vecs = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=1)
        vec = torch.cat([t.detach().reshape(-1) for t in vecs[0]]).double().numpy()
        note = f"stopped at maxIter={max_iter}" if counter[0] >= max_iter else ""
        return {"lam": float(lams[0]), "vec": problem.to_flat(vec), "matvecs": counter[0],
                "note": note}


class HessianEigenthings(EigenPeer):
    module = "hessian_eigenthings"
    label = "hessian-eigenthings lanczos"
    defaults = "k=1: max_iter=2, tol=1e-4"
    tuned = "tol=1e-12, full reorthogonalisation, max_iter doubled"

    def run(self, problem: PeerProblem, task: str, tuned: bool) -> dict[str, Any]:
        import hessian_eigenthings as he

        op = he.HessianOperator(problem.model(), [(problem.X, problem.Y)],
                                he.supervised_loss(half_mse))
        which = which_end(task)
        if not tuned:
            r = he.lanczos(op, k=1, which=which)
            return {"lam": float(r.eigenvalues[0]),
                    "vec": problem.to_flat(r.eigenvectors[0].numpy()), "matvecs": r.iterations}
        # Tuned: its Lanczos has no restart, so grow the Krylov size until it converges.
        total, size, P = 0, 50, problem.net.num_params
        while True:
            size = min(size, P)
            r = he.lanczos(op, k=1, which=which, max_iter=size, tol=LANCZOS_TOL,
                           reorthogonalize=True, seed=problem.seed)
            total += r.iterations
            if bool(r.converged[0]) or size == P:
                break
            size *= 2
        note = f"Krylov sizes doubled from 50 up to {size}; converged={bool(r.converged[0])}"
        return {"lam": float(r.eigenvalues[0]),
                "vec": problem.to_flat(r.eigenvectors[0].numpy()), "matvecs": total,
                "note": note}


EIGEN_PEERS: tuple[EigenPeer, ...] = (Curvlinops(), PyHessian(), HessianEigenthings())
