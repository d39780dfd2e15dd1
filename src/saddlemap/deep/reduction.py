"""Reduction of an MLP, layer by layer, to the narrowest network with the same function.

Hidden layer j with its outgoing weights is a two-layer network from h_j to z_{j+2}
(pre-activations of the next layer): neurons w̃_k = (row k of W_j, b_j[k]), output weights
a_k = column k of W_{j+1}, output bias b_{j+1}.  So each layer is reduced by the
two-layer critical reduction operator (:func:`saddlemap.reduce`; Zhang, Zhang & Luo,
arXiv:2405.17501): sign twins folded for the activation's symmetry class (odd: (a, w̃) ≡
(−a, −w̃); sigmoid: the constant into b_{j+1}; softplus-class where the linear parts
cancel), neurons with equal w̃ merged with their outgoing columns summed, neurons whose
(summed) outgoing weights are zero dropped.  Before that, a neuron whose row of W_j is
zero is the constant σ(b_j[k]): its column times that constant moves into b_{j+1}
(when there is one, or σ(b_j[k]) = 0) and the neuron is dropped.  Merging in layer j
changes the rows of W_{j+1}, and dropping a neuron of layer j + 1 can leave a neuron of
layer j without outgoing weights, so the sweep over the layers repeats until no width
changes.  Every step keeps z_{j+2} up to the merge tolerances, hence the network's output.

>>> import torch
>>> from saddlemap.deep import MLP
>>> mlp = MLP([[[1.0], [1.0], [2.0]], [[0.3, 0.7, 0.0], [1.0, 1.0, 5.0]], [[1.0, 0.0]]],
...           activation="tanh")
>>> red = reduce_mlp(mlp)  # neuron 2 of layer 0 feeds only the null neuron 1 of layer 1
>>> red.widths_before, red.widths_after, red.groups, red.dropped, red.sweeps
((3, 2), (1, 1), (((0, 1),), ((0,),)), ((2,), (1,)), 3)
>>> red.net.weights[1].tolist(), red.output_change < 1e-15
([[1.0]], True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import OptionError
from ..network import TwoLayerNet
from ..reduction import reduce
from ..tolerances import Tolerances
from .mlp import MLP

__all__ = ["MLPReduction", "reduce_mlp"]

#: Sweeps over the layers at most (each but the last removes at least one neuron).
MAX_SWEEPS = 1000


@dataclass(frozen=True, eq=False)
class MLPReduction:
    """The reduced MLP and how each layer's original neurons map onto it.

    Attributes:
        net: the reduced network.
        widths_before: the hidden widths of the original.
        widths_after: the hidden widths of the reduced network.
        groups: per hidden layer, for each kept neuron the original neurons merged into it.
        assignment: per hidden layer, for each original neuron its kept neuron, or −1.
        dropped: per hidden layer, the original neurons dropped (zero outgoing weights,
            zero-sum groups, constants moved into the next bias).
        output_change: max |g_original − g_reduced| over the data and probe inputs.
        rank_deficiency: per hidden layer, how many kept neurons (with the constant, where
            the next layer has a bias) are linearly dependent on the layer's inputs at the
            data and probes; 0 everywhere means no dependence was found.
        sweeps: passes over the layers, the last one changing nothing.
        notes: what could not be settled, in words (per layer).
    """

    net: MLP
    widths_before: tuple[int, ...]
    widths_after: tuple[int, ...]
    groups: tuple[tuple[tuple[int, ...], ...], ...]
    assignment: tuple[tuple[int, ...], ...]
    dropped: tuple[tuple[int, ...], ...]
    output_change: float
    rank_deficiency: tuple[int, ...]
    sweeps: int
    notes: tuple[str, ...] = ()

    @property
    def is_minimal(self) -> bool:
        """Whether no layer has kept neurons left linearly dependent."""
        return not any(self.rank_deficiency)


class _State:
    """Per-layer weights being reduced, and which original neurons each neuron stands for."""

    def __init__(self, net: MLP) -> None:
        self.activation = net.activation
        self.weights = [W.clone() for W in net.weights]
        self.biases = [None if b is None else b.clone() for b in net.biases]
        self.members: list[list[list[int]]] = [[[k] for k in range(m)] for m in net.widths]
        self.dropped: list[list[int]] = [[] for _ in net.widths]
        self.notes: list[str] = []

    def layer_net(self, j: int) -> TwoLayerNet:
        return TwoLayerNet(self.weights[j + 1].T, self.weights[j], b=self.biases[j],
                           c=self.biases[j + 1], activation=self.activation)

    def mlp(self) -> MLP:
        return MLP(self.weights, self.biases, self.activation)

    def fold_constants(self, j: int, tol: float) -> None:
        """Move constant neurons σ(b_k) (zero row of W_j) into b_{j+1}; zero their column."""
        b = self.biases[j]
        if b is None:
            return
        const = torch.linalg.vector_norm(self.weights[j], dim=1) <= tol
        const &= self.weights[j + 1].abs().sum(0) > 0
        if not bool(const.any()):
            return
        values = self.activation(b[const])
        column = self.weights[j + 1][:, const] @ values
        nxt = self.biases[j + 1]
        if nxt is None and bool((values != 0).any()):
            self.notes.append(f"layer {j}: constant neurons kept: layer {j + 1} has no bias")
            return
        if nxt is not None:
            self.biases[j + 1] = nxt + column
        self.weights[j + 1][:, const] = 0.0

    def apply(self, j: int, tol: float | None, a_tol: float | None,
              tolerances: Tolerances | None) -> bool:
        """Reduce layer j in place; whether its width changed."""
        red = reduce(self.layer_net(j), tol=tol, a_tol=a_tol, num_probes=0, check_rank=False,
                     tolerances=tolerances)
        before = len(self.members[j])
        for group in (*red.dropped_null, *((k,) for k in red.dropped_zero)):
            for k in group:
                self.dropped[j].extend(self.members[j][k])
        net, groups = red.net, red.groups
        if net.width == 0:  # the layer carries nothing: keep one neuron with zero outputs
            self.notes.append(f"layer {j}: every neuron dropped; one null neuron kept")
            self.dropped[j] = self.dropped[j][:-1]
            keep = self.members[j][0][:1]
            bias = self.biases[j]
            # zero weights both ways, so that the layers before it carry nothing either
            net = TwoLayerNet(torch.zeros_like(self.weights[j + 1][:, :1]).T,
                              torch.zeros_like(self.weights[j][:1]),
                              b=None if bias is None else torch.zeros_like(bias[:1]),
                              c=red.net.c, activation=self.activation)
            self.members[j] = [keep]
            groups = ()
        else:
            self.members[j] = [sorted(i for k in g for i in self.members[j][k]) for g in groups]
        self.weights[j], self.biases[j] = net.W.clone(), None if net.b is None else net.b.clone()
        self.weights[j + 1] = net.a.T.contiguous().clone()
        self.biases[j + 1] = None if net.c is None else net.c.clone()
        self.notes.extend(f"layer {j}: {note}" for note in red.notes
                          if "not analytic" not in note and "polynomial" not in note)
        return len(self.members[j]) != before


def _check(value: float | None, name: str) -> None:
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                  and value >= 0):
        raise OptionError(f"{name} must be a finite number ≥ 0, got {value!r}")


def _probes(net: MLP, X: torch.Tensor | None, num: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    probes = torch.randn(num, net.input_dim, generator=gen, dtype=net.dtype).to(net.device)
    return probes if X is None else torch.cat([X.to(net.dtype).to(net.device), probes])


def reduce_mlp(
    net: MLP,
    X: torch.Tensor | None = None,
    tol: float | None = None,
    a_tol: float | None = None,
    num_probes: int = 64,
    check_rank: bool = True,
    tolerances: Tolerances | None = None,
) -> MLPReduction:
    """Reduce every hidden layer of ``net`` until no width changes (module docstring).

    Args:
        net: the network.
        X: data inputs (n, d): the output change and the dependence check use them with
            ``num_probes`` random Gaussian inputs.
        tol: equal-weight tolerance (absolute) in every layer; default
            ``tolerances.merge`` · max(1, max|w̃|) of the layer, as for two layers.
        a_tol: zero outgoing-weight tolerance; default ``tolerances.merge`` · max(1, max|a|).
        num_probes: random probe inputs for the checks.
        check_rank: look for linear dependence left among each layer's kept neurons.
        tolerances: where the default ``tol`` and ``a_tol`` come from.

    Raises:
        OptionError: a negative, NaN or infinite tolerance, ``num_probes`` < 0.
    """
    _check(tol, "tol")
    _check(a_tol, "a_tol")
    if not (isinstance(num_probes, int) and num_probes >= 0):
        raise OptionError(f"num_probes must be an integer ≥ 0, got {num_probes!r}")
    state = _State(net)
    merge = (tolerances or Tolerances()).resolved(net.dtype).merge_value
    sweeps, changed = 0, True
    while changed and sweeps < MAX_SWEEPS:
        changed, sweeps = False, sweeps + 1
        for j in range(net.depth - 1):
            const_tol = merge * max(1.0, float(state.weights[j].abs().max())) if tol is None \
                else tol
            state.fold_constants(j, const_tol)
            changed |= state.apply(j, tol, a_tol, tolerances)
    reduced = state.mlp()
    if not net.activation.in_theory:
        kind = "a polynomial" if net.activation.analytic else "not analytic"
        state.notes.append(f"{net.activation.name} is {kind}: outside the theory (for ReLU-type "
                           "activations neurons are merged by direction, a·‖w̃‖ onto unit w̃)")
    probes = _probes(net, X, num_probes)
    with torch.no_grad():
        change = float((net(probes) - reduced(probes)).abs().max()) if probes.numel() else 0.0
    deficiency = tuple(_rank(state, reduced, probes, j, num_probes) if check_rank else 0
                       for j in range(net.depth - 1))
    for j, defect in enumerate(deficiency):
        if defect:
            state.notes.append(f"layer {j}: {defect} kept neuron(s) remain linearly dependent "
                               "on the probe points: the width may not be minimal")
    assignment = []
    for j, m in enumerate(net.widths):
        where = [-1] * m
        for kept, members in enumerate(state.members[j]):
            for k in members:
                where[k] = kept
        assignment.append(tuple(where))
    return MLPReduction(
        reduced, net.widths, reduced.widths,
        tuple(tuple(tuple(g) for g in layer) for layer in state.members),
        tuple(assignment), tuple(tuple(sorted(d)) for d in state.dropped), change,
        deficiency, sweeps, tuple(dict.fromkeys(state.notes)),
    )


def _rank(state: _State, reduced: MLP, probes: torch.Tensor, j: int, num_probes: int) -> int:
    """Rank deficiency of layer j's kept neurons on the layer inputs of data and probes."""
    inputs = reduced.hidden(probes)[j]
    layer = TwoLayerNet(reduced.weights[j + 1].T, reduced.weights[j], b=reduced.biases[j],
                        c=reduced.biases[j + 1], activation=reduced.activation)
    return reduce(layer, X=inputs, num_probes=num_probes, check_rank=True).rank_deficiency
