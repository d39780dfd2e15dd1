"""Weight-decay penalties: R + (λ/2)‖Mθ‖² in every closed form, against torch.func autodiff.

The reference objective is written out here, independently of saddlemap's autodiff module and
of ``Penalty.mask``: outputs from the flat vector by hand, the mask from the documented flat
layout ``[a_k (K), w_k (d), b_k]`` per neuron, then ``c``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from conftest import BIASES, CUSTOM, Case, assert_close_scaled, make_problem
from torch.func import grad, hessian, jvp

import saddlemap as sm
from saddlemap.losses import Penalty, as_penalty

RTOL = 1e-10  # closed forms equal autodiff to 1e-10 in float64, with or without a penalty

WEIGHT_DECAYS = [0.0, 0.3, 1e-3]
SCOPES = ["all", "weights"]
SAMPLE_COUNTS = [1, 3, 7, 13]
ACTIVATIONS: list[str | sm.Activation] = ["tanh", "softplus", "sigmoid", "erf", "relu", CUSTOM]


@dataclass(frozen=True)
class PenaltyCase:
    case: Case
    weight_decay: float
    scope: str

    @property
    def id(self) -> str:
        return f"{self.case.id}-lam{self.weight_decay:g}-{self.scope}"


def _cases() -> list[PenaltyCase]:
    # bias × K × n × λ × scope in full; the activation turns with the row, so every
    # activation meets every bias, K and penalty somewhere in the table.
    rows = itertools.product(BIASES, [1, 3], SAMPLE_COUNTS, WEIGHT_DECAYS, SCOPES)
    cases = [
        PenaltyCase(Case(ACTIVATIONS[i % len(ACTIVATIONS)], bias, K, n, seed=i), lam, scope)
        for i, (bias, K, n, lam, scope) in enumerate(rows)
    ]
    # the penalty does not care about the loss: a few rows of each classification loss
    for i, (bias, n, scope) in enumerate(itertools.product(BIASES, [1, 7], SCOPES)):
        cases.append(PenaltyCase(Case("tanh", bias, 3, n, loss="cross_entropy", seed=i), 0.3,
                                 scope))
        cases.append(PenaltyCase(Case("softplus", bias, 1, n, loss="binary_cross_entropy",
                                      seed=i), 1e-3, scope))
    return cases


CASES = _cases()


def penalised(pc: PenaltyCase) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    net, data = make_problem(pc.case)
    return net, data.with_penalty(Penalty(pc.weight_decay, pc.scope))  # type: ignore[arg-type]


def reference_mask(net: sm.TwoLayerNet, scope: str) -> torch.Tensor:
    """M over the flat vector, from the documented layout alone."""
    m, K, d = net.width, net.output_dim, net.input_dim
    per_neuron = [1.0] * K + [1.0] * d + ([0.0 if scope == "weights" else 1.0] if net.b is not None
                                          else [])
    tail = [0.0 if scope == "weights" else 1.0] * (K if net.c is not None else 0)
    return torch.tensor(per_neuron * m + tail, dtype=torch.float64)


def reference_objective(net: sm.TwoLayerNet, data: sm.Dataset, lam: float, scope: str) -> Any:
    """θ ↦ (1/n) Σ ℓ(g(θ, x_i), y_i) + (λ/2)‖Mθ‖², written out by hand."""
    m, K, d = net.width, net.output_dim, net.input_dim
    hidden, output = net.b is not None, net.c is not None
    q = K + d + int(hidden)
    mask = reference_mask(net, scope)
    X, t, act = data.X, data.targets, net.activation.fn

    def objective(theta: torch.Tensor) -> torch.Tensor:
        blocks = theta[: m * q].reshape(m, q)
        a, W = blocks[:, :K], blocks[:, K : K + d]
        z = X @ W.T
        if hidden:
            z = z + blocks[:, K + d]
        g = act(z) @ a
        if output:
            g = g + theta[m * q :]
        risk = data.loss.value(g, t).sum() / X.shape[0]
        return risk + 0.5 * lam * ((mask * theta) ** 2).sum()

    return objective


@pytest.mark.parametrize("pc", CASES, ids=[c.id for c in CASES])
def test_closed_forms_match_autodiff_of_the_penalised_objective(pc: PenaltyCase) -> None:
    net, data = penalised(pc)
    objective = reference_objective(net, data, pc.weight_decay, pc.scope)
    theta = net.flatten()
    gen = torch.Generator().manual_seed(pc.case.seed + 1)
    V = torch.randn(net.num_params, 3, generator=gen)

    value_ref = float(objective(theta))
    grad_ref = grad(objective)(theta)
    H_ref = hessian(objective)(theta)
    hvp_ref = jvp(grad(objective), (theta,), (V[:, 0],))[1]

    assert sm.loss(net, data) == pytest.approx(value_ref, rel=1e-13)
    value, gradient = sm.loss_and_gradient(net, data)
    assert value == pytest.approx(value_ref, rel=1e-13)
    assert_close_scaled(gradient, grad_ref, RTOL)
    assert_close_scaled(sm.gradient(net, data), grad_ref, RTOL)
    H = sm.hessian(net, data)
    assert_close_scaled(H, H_ref, RTOL)
    assert torch.equal(H, H.T)
    assert_close_scaled(sm.hvp(net, data, V[:, 0]), hvp_ref, RTOL)
    assert_close_scaled(sm.hvp(net, data, V[:, :1]), hvp_ref[:, None], RTOL)
    assert_close_scaled(sm.hvp(net, data, V), H_ref @ V, RTOL)
    op = sm.hessian_operator(net, data)
    assert_close_scaled(op.apply(V), H_ref @ V, RTOL)
    assert_close_scaled(torch.as_tensor(op @ V[:, 0].numpy()), hvp_ref, RTOL)
    assert_close_scaled(torch.as_tensor(op.matmat(V.numpy())), H_ref @ V, RTOL)
    assert op.num_matvecs == 7

    # saddlemap's own autodiff reference differentiates the same objective
    assert sm.loss_autodiff(net, data) == pytest.approx(value_ref, rel=1e-13)
    assert_close_scaled(sm.gradient_autodiff(net, data), grad_ref, RTOL)
    assert_close_scaled(sm.hessian_autodiff(net, data), H_ref, RTOL)
    for method in ("forward_over_reverse", "double_backward"):
        assert_close_scaled(sm.hvp_autodiff(net, data, V[:, 0], method), hvp_ref, RTOL)


@pytest.mark.parametrize("pc", CASES[::7], ids=[c.id for c in CASES[::7]])
def test_penalty_adds_exactly_its_own_terms(pc: PenaltyCase) -> None:
    net, data = penalised(pc)
    plain = data.with_penalty(None)
    lam, theta = pc.weight_decay, net.flatten()
    mask = reference_mask(net, pc.scope)
    v = torch.randn(net.num_params, generator=torch.Generator().manual_seed(5))
    assert sm.loss(net, data) - sm.loss(net, plain) == pytest.approx(
        0.5 * lam * float(((mask * theta) ** 2).sum()), rel=1e-9, abs=1e-15)
    def added(f: Any, *args: Any) -> torch.Tensor:
        return f(net, data, *args) - f(net, plain, *args)

    assert_close_scaled(added(sm.gradient), lam * mask * theta, 1e-9)
    assert_close_scaled(added(sm.hessian), lam * torch.diag(mask), 1e-9)
    assert_close_scaled(added(sm.hvp, v), lam * mask * v, 1e-9)
    # the data term's own objects do not see the penalty
    assert torch.equal(sm.jacobian(net, data), sm.jacobian(net, plain))
    assert torch.equal(sm.residuals(net, data), sm.residuals(net, plain))
    assert_close_scaled(sm.jacobian_autodiff(net, data), sm.jacobian(net, data), RTOL)
    rf, rf_plain = sm.residual_function(net, data), sm.residual_function(net, plain)
    assert torch.equal(rf.phi(net.W_aug), rf_plain.phi(net.W_aug))
    # ∂L/∂a_k = φ(w̃_k) + λ a_k
    grad_a = net.layout.split(sm.gradient(net, data))[0]
    assert_close_scaled(grad_a, rf.phi(net.W_aug) + lam * net.a, 1e-12)


STREAMED = [
    PenaltyCase(Case("softplus", "both_biases", 3, 13, loss="cross_entropy"), 0.3, "all"),
    PenaltyCase(Case("tanh", "both_biases", 1, 13), 0.3, "weights"),
    PenaltyCase(Case("erf", "hidden_bias", 3, 13), 1e-3, "weights"),
]


@pytest.mark.parametrize("pc", STREAMED, ids=[c.id for c in STREAMED])
@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_streamed_adds_the_penalty_once(batch_size: int, pc: PenaltyCase) -> None:
    net, data = penalised(pc)
    v = torch.randn(net.num_params, generator=torch.Generator().manual_seed(2))
    V = torch.randn(net.num_params, 3, generator=torch.Generator().manual_seed(3))
    H = sm.hessian(net, data)
    assert sm.loss(net, data, batch_size) == pytest.approx(sm.loss(net, data), rel=1e-13)
    value, g = sm.loss_and_gradient(net, data, batch_size)
    assert value == pytest.approx(sm.loss(net, data), rel=1e-13)
    assert_close_scaled(g, sm.gradient(net, data), 1e-13)
    assert_close_scaled(sm.gradient(net, data, batch_size), sm.gradient(net, data), 1e-13)
    assert_close_scaled(sm.hessian(net, data, batch_size), H, 1e-13)
    assert_close_scaled(sm.hvp(net, data, v, batch_size), sm.hvp(net, data, v), 1e-13)
    assert_close_scaled(sm.hvp(net, data, V, batch_size), H @ V, 1e-12)
    op = sm.hessian_operator(net, data, batch_size)
    assert_close_scaled(torch.as_tensor(op @ v.numpy()), H @ v, 1e-12)
    assert_close_scaled(op.apply(V), H @ V, 1e-12)


# --------------------------------------------------------------------- the Dataset's penalty
def test_dataset_keeps_its_penalty() -> None:
    pen = Penalty(0.3, "weights")
    data = sm.Dataset(np.zeros((5, 2)), np.ones(5), penalty=pen)
    assert data.penalty is pen
    assert data.to(torch.float32).penalty is pen
    assert data.to(torch.float32).dtype == torch.float32
    assert data.subset(slice(0, 2)).penalty is pen
    assert data.subset(torch.tensor([0, 3])).penalty is pen
    assert data.with_penalty(None).penalty is None
    assert data.with_penalty(0.5).penalty == Penalty(0.5, "all")
    assert "penalty=Penalty(weight_decay=0.3, scope='weights')" in repr(data)
    assert sm.Dataset(np.zeros((5, 2)), np.ones(5)).penalty is None
    assert "penalty" not in repr(sm.Dataset(np.zeros((5, 2)), np.ones(5)))
    assert sm.Dataset(np.zeros((5, 2)), np.ones(5), penalty=1e-3).penalty == Penalty(1e-3, "all")
    assert sm.Dataset(np.zeros((5, 2)), np.ones(5), penalty=2).penalty == Penalty(2.0, "all")
    assert as_penalty(np.float64(0.25)) == Penalty(0.25)


def test_float32_network_and_data_keep_the_penalty() -> None:
    net, data = penalised(PenaltyCase(Case("tanh", "both_biases", 1, 7), 0.3, "weights"))
    net32, data32 = net.to(torch.float32), data.to(torch.float32)
    assert_close_scaled(sm.gradient(net32, data).double(), sm.gradient(net, data), 1e-5)
    assert_close_scaled(sm.hessian(net32, data32).double(), sm.hessian(net, data), 1e-5)


@pytest.mark.parametrize("bias", list(BIASES))
@pytest.mark.parametrize("K", [1, 3])
def test_mask_follows_the_flat_layout(bias: str, K: int) -> None:
    net, _ = make_problem(Case("tanh", bias, K, 3))
    for scope in SCOPES:
        mask = Penalty(0.1, scope).mask(net.layout)  # type: ignore[arg-type]
        assert torch.equal(mask, reference_mask(net, scope))
        assert mask.dtype == torch.float64 and mask.shape == (net.num_params,)
    weights = Penalty(0.1, "weights").mask(net.layout, torch.float32)
    assert weights.dtype == torch.float32
    assert int(weights.sum()) == net.width * (K + net.input_dim)
    a, w_aug, c = net.layout.split(weights)
    assert bool((a == 1).all()) and bool((w_aug[:, : net.input_dim] == 1).all())
    assert bool((w_aug[:, net.input_dim :] == 0).all()) and bool((c == 0).all())


def test_describe() -> None:
    assert Penalty(0.5).describe() == "weight decay λ = 0.5 on all parameters: R + (λ/2)‖θ‖²"
    text = Penalty(1e-3, "weights").describe()
    assert "0.001" in text and "not the biases" in text


BAD_WEIGHT_DECAYS: list[Any] = [math.nan, -1.0, -1e-300, math.inf, -math.inf, "0.1", None,
                                True, [0.1], torch.tensor(0.1)]


@pytest.mark.parametrize("bad", BAD_WEIGHT_DECAYS, ids=repr)
def test_bad_weight_decay_raises_option_error(bad: Any) -> None:
    with pytest.raises(sm.OptionError, match="weight_decay"):
        Penalty(bad)
    if bad is not None:  # None is "no penalty" for a Dataset
        with pytest.raises(sm.OptionError, match="weight_decay"):
            sm.Dataset(np.zeros((3, 1)), np.ones(3), penalty=bad)
        with pytest.raises(sm.OptionError, match="weight_decay"):
            sm.Dataset(np.zeros((3, 1)), np.ones(3)).with_penalty(bad)


def test_bad_scope_raises_option_error() -> None:
    with pytest.raises(sm.OptionError, match="unknown penalty scope 'biases'"):
        Penalty(0.1, "biases")  # type: ignore[arg-type]
