"""The network being compressed, for :mod:`saddlemap.compression`: :class:`State`, merges.

:class:`State` holds the live neurons in float64 with their features (and Gram matrices);
:func:`merged` forms the neuron replacing a pair (the maths is in the docstring of
:mod:`saddlemap.compression`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._refit import Problem
from .network import TwoLayerNet

__all__ = ["Merge", "State", "merged", "pair_weights"]


def pair_weights(a_i: torch.Tensor, a_j: torch.Tensor) -> tuple[float, float]:
    """α_i, α_j of the merged input weight (see the docstring of compression)."""
    s = a_i + a_j
    ss = float(s @ s)
    if ss > 0:
        alpha_i, alpha_j = float(a_i @ s) / ss, float(a_j @ s) / ss
        if min(alpha_i, alpha_j) >= -1.0:
            return alpha_i, alpha_j
    p, q = float(torch.linalg.vector_norm(a_i)), float(torch.linalg.vector_norm(a_j))
    return (p / (p + q), q / (p + q)) if p + q > 0 else (0.5, 0.5)


@dataclass
class Merge:
    """The neuron replacing i and j: w̃ = β_i w̃_i + β_j w̃_j, so X̃w̃ = β_i X̃w̃_i + β_j X̃w̃_j."""

    a: torch.Tensor
    w_aug: torch.Tensor
    beta_i: float
    beta_j: float
    c_gain: torch.Tensor | None  # what the output bias gains (a flip of sigmoid-class)


def merged(
    prob: Problem, a_i: torch.Tensor, w_i: torch.Tensor, a_j: torch.Tensor,
    w_j: torch.Tensor, flip: bool,
) -> Merge:
    """The neuron replacing i and j (see the docstring of compression).

    ``flip``: j enters as its sign twin (−a_j, −w̃_j), which leaves 2σ(0)a_j for c.
    """
    c_gain, sign = None, 1.0
    if flip:
        c_gain = 2.0 * prob.sigma0 * a_j if prob.sigma0 != 0.0 else None
        a_j, w_j, sign = -a_j, -w_j, -1.0
    if torch.equal(w_i, w_j):
        return Merge(a_i + a_j, w_i.clone(), 1.0, 0.0, c_gain)
    if prob.by_direction:  # σ(λz) = λσ(z): merge directions, a·‖w̃‖ as the output weight
        n_i, n_j = float(torch.linalg.vector_norm(w_i)), float(torch.linalg.vector_norm(w_j))
        if n_j == 0.0:  # a zero neuron of a ReLU-type activation is the zero function
            return Merge(a_i.clone(), w_i.clone(), 1.0, 0.0, c_gain)
        if n_i == 0.0:
            return Merge(a_j.clone(), w_j.clone(), 0.0, sign, c_gain)
        b_i, b_j = a_i * n_i, a_j * n_j
        alpha_i, alpha_j = pair_weights(b_i, b_j)
        scale = (abs(alpha_i) * n_i + abs(alpha_j) * n_j) / (abs(alpha_i) + abs(alpha_j))
        beta_i, beta_j = alpha_i * scale / n_i, alpha_j * scale / n_j
        return Merge((b_i + b_j) / scale, beta_i * w_i + beta_j * w_j, beta_i,
                     sign * beta_j, c_gain)
    alpha_i, alpha_j = pair_weights(a_i, a_j)
    return Merge(a_i + a_j, alpha_i * w_i + alpha_j * w_j, alpha_i, sign * alpha_j, c_gain)


# --------------------------------------------------------------------------------- state
class State:
    """The network being compressed, in float64, with its features (and Gram matrices).

    Rows 0..w−1 of every array are the live neurons; a removed row is overwritten by the
    last live one (so nothing of size n × m is ever reallocated).  The pre-activations
    Z = W̃X̃ᵀ are kept with the features F = σ(Z): a merged neuron's input weight is a
    linear combination of the pair's, and so is its row of Z, which costs O(n), not O(nD).
    """

    def __init__(self, prob: Problem, net: TwoLayerNet) -> None:
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

    def merged_row(self, i: int, j: int, merge: Merge) -> tuple[torch.Tensor, torch.Tensor]:
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

    def merge(self, i: int, j: int, merge: Merge) -> None:
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
