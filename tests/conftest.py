"""Shared problem tables: activation × bias × output dimension × sample count."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import saddlemap as sm

torch.set_default_dtype(torch.float64)
# The test problems are tiny: a second thread only adds contention on a 2-core machine.
torch.set_num_threads(1)
# Subprocesses (the CLI, the examples, study workers) inherit one thread each too: on 2 cores
# oversubscribed BLAS/OpenMP threads make small operations 10-50x slower.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

CUSTOM = sm.custom_activation("tanh_cubed", lambda z: torch.tanh(z) ** 3, symmetry="odd")

ACTIVATIONS: list[str | sm.Activation] = [
    "tanh", "sigmoid", "softplus", "gelu", "silu", "erf", "sin", "exp", "identity",
    "relu", "leaky_relu", CUSTOM,
]
BIASES = {"no_bias": (False, False), "hidden_bias": (True, False), "both_biases": (True, True)}
OUTPUT_DIMS = [1, 3]
SAMPLE_COUNTS = [1, 3, 7, 13, 100]


@dataclass(frozen=True)
class Case:
    activation: str | sm.Activation
    bias: str
    K: int
    n: int
    loss: str = "mse"
    d: int = 2
    m: int = 3
    seed: int = 0

    @property
    def id(self) -> str:
        name = self.activation if isinstance(self.activation, str) else self.activation.name
        return f"{name}-{self.bias}-K{self.K}-n{self.n}-{self.loss}"


def make_problem(case: Case) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    """A random network and data for a case; weights are O(1), inputs of unit scale."""
    gen = torch.Generator().manual_seed(case.seed)
    hidden, output = BIASES[case.bias]
    m, d, K, n = case.m, case.d, case.K, case.n

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    net = sm.TwoLayerNet(
        randn(m, K), 0.8 * randn(m, d),
        b=0.5 * randn(m) if hidden else None,
        c=randn(K) if output else None,
        activation=case.activation,
    )
    X = randn(n, d)
    if case.loss == "mse":
        y = randn(n, K)
    elif case.loss == "cross_entropy":
        y = torch.randint(0, K, (n,), generator=gen)
    else:
        y = torch.rand(n, 1, generator=gen)
    return net, sm.Dataset(X, y, loss=case.loss, num_outputs=K)


def _cases() -> list[Case]:
    cases = [
        Case(act, bias, K, n)
        for act, bias, K, n in itertools.product(ACTIVATIONS, BIASES, OUTPUT_DIMS, SAMPLE_COUNTS)
    ]
    for act, bias, n in itertools.product(["tanh", "softplus", "relu", CUSTOM], BIASES, [1, 7, 13]):
        cases.append(Case(act, bias, 3, n, loss="cross_entropy"))
        cases.append(Case(act, bias, 1, n, loss="binary_cross_entropy"))
    return cases


CASES = _cases()


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def problem(request: pytest.FixtureRequest) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    return make_problem(request.param)


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """Entrywise rtol, with an absolute floor of rtol × the largest entry.

    Entries that cancel to ~0 carry rounding of the size of the terms that cancelled, so a
    pure relative test on them measures nothing; the floor scales with the tensor.
    """
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-300))


def feed_monitor(losses: np.ndarray, **kwargs: object) -> sm.PlateauMonitor:
    """A PlateauMonitor (no refinement) fed a loss curve step by step, then finished."""
    mon = sm.PlateauMonitor(sm.Dataset(np.zeros((3, 1)), np.zeros(3)), refine=False,
                            **kwargs)  # type: ignore[arg-type]
    net = sm.TwoLayerNet([1.0], [[0.5]])
    for t, value in enumerate(losses):
        mon.observe(t, net, loss=float(value), grad_norm=1.0)
    mon.finish()
    return mon
