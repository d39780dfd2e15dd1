"""Closed-form MLP derivatives against torch.func autodiff and finite differences.

Grid: depth 2–4 × activations × bias patterns × K ∈ {1, 3} × n ∈ {1, 3, 7}, plus
cross-entropy, binary cross-entropy and weight decay cases.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import assert_close_scaled

import saddlemap as sm
from saddlemap.deep import (
    MLP,
    MLPHessianOperator,
    mlp_gradient,
    mlp_gradient_autodiff,
    mlp_hessian,
    mlp_hessian_autodiff,
    mlp_hvp,
    mlp_hvp_autodiff,
    mlp_loss,
    mlp_loss_and_gradient,
    mlp_loss_function,
    mlp_spectrum,
)

EPS = torch.finfo(torch.float64).eps
RTOL = 1e-10  # the project's closed-form vs autodiff standard in float64

DEPTH_WIDTHS = {2: (3,), 3: (3, 2), 4: (3, 2, 2)}
ACTIVATIONS = ["tanh", "erf", "sigmoid", "softplus", "gelu", "silu", "relu"]
BIAS_PATTERNS = ("none", "all", "alternate")


@dataclass(frozen=True)
class DeepCase:
    depth: int
    activation: str
    bias: str
    K: int
    n: int
    loss: str = "mse"
    penalty: sm.Penalty | None = None
    seed: int = 0

    @property
    def id(self) -> str:
        extra = "" if self.penalty is None else f"-wd{self.penalty.scope}"
        return f"L{self.depth}-{self.activation}-{self.bias}-K{self.K}-n{self.n}-{self.loss}{extra}"


def make_deep(case: DeepCase, d: int = 2) -> tuple[MLP, sm.Dataset]:
    gen = torch.Generator().manual_seed(case.seed)
    sizes = (d, *DEPTH_WIDTHS[case.depth], case.K)
    L = len(sizes) - 1
    weights = [torch.randn(sizes[j + 1], sizes[j], generator=gen) * 0.9 for j in range(L)]
    has_bias = {"none": [False] * L, "all": [True] * L,
                "alternate": [j % 2 == 0 for j in range(L)]}[case.bias]
    biases = [0.5 * torch.randn(sizes[j + 1], generator=gen) if has_bias[j] else None
              for j in range(L)]
    mlp = MLP(weights, biases, activation=case.activation)
    X = torch.randn(case.n, d, generator=gen)
    if case.loss == "mse":
        y = torch.randn(case.n, case.K, generator=gen)
    elif case.loss == "cross_entropy":
        y = torch.randint(0, case.K, (case.n,), generator=gen)
    else:
        y = torch.rand(case.n, 1, generator=gen)
    return mlp, sm.Dataset(X, y, loss=case.loss, num_outputs=case.K, penalty=case.penalty)


def _cases() -> list[DeepCase]:
    cases = [DeepCase(L, act, bias, K, n) for L, act, bias, K, n in itertools.product(
        DEPTH_WIDTHS, ACTIVATIONS, BIAS_PATTERNS, (1, 3), (1, 3, 7))]
    for L, act, n in itertools.product(DEPTH_WIDTHS, ["tanh", "softplus"], (1, 7)):
        cases.append(DeepCase(L, act, "all", 3, n, loss="cross_entropy"))
        cases.append(DeepCase(L, act, "alternate", 1, n, loss="binary_cross_entropy"))
        for scope in ("all", "weights"):
            cases.append(DeepCase(L, act, "alternate", 2, n, penalty=sm.Penalty(0.3, scope)))
    return cases


CASES = _cases()


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def deep_problem(request: pytest.FixtureRequest) -> tuple[MLP, sm.Dataset]:
    return make_deep(request.param)


def test_loss_and_gradient_match_autodiff(deep_problem: tuple[MLP, sm.Dataset]) -> None:
    mlp, data = deep_problem
    reference = float(mlp_loss_function(mlp, data)(mlp.flatten()))
    assert mlp_loss(mlp, data) == pytest.approx(reference, rel=RTOL)
    value, grad = mlp_loss_and_gradient(mlp, data)
    assert value == pytest.approx(reference, rel=RTOL)
    assert_close_scaled(grad, mlp_gradient_autodiff(mlp, data), RTOL)
    assert_close_scaled(mlp_gradient(mlp, data), grad, RTOL)


def test_hessian_and_products_match_autodiff(deep_problem: tuple[MLP, sm.Dataset]) -> None:
    mlp, data = deep_problem
    H_ref = mlp_hessian_autodiff(mlp, data)
    H = mlp_hessian(mlp, data)
    assert torch.equal(H, H.T)
    assert_close_scaled(H, H_ref, RTOL)
    gen = torch.Generator().manual_seed(1)
    V = torch.randn(mlp.num_params, 3, generator=gen)
    assert_close_scaled(mlp_hvp(mlp, data, V), H_ref @ V, RTOL)
    v = V[:, 0]
    assert_close_scaled(mlp_hvp(mlp, data, v), mlp_hvp_autodiff(mlp, data, v), RTOL)
    assert_close_scaled(mlp_hvp_autodiff(mlp, data, v, "double_backward"), H_ref @ v, RTOL)


FD_CASES = [c for c in CASES if c.n == 7 and c.K == 3 and c.bias == "alternate"
            and c.activation != "relu"]


@pytest.mark.parametrize("case", FD_CASES, ids=[c.id for c in FD_CASES])
def test_gradient_and_hvp_match_central_differences(case: DeepCase) -> None:
    mlp, data = make_deep(case)
    theta = mlp.flatten()
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(mlp.num_params, generator=gen)
    h = EPS ** (1 / 3)  # the step that balances truncation O(h²) and rounding O(ε/h)

    def at(t: float) -> MLP:
        return mlp.unflatten(theta + t * v)

    fd_dir = (mlp_loss(at(h), data) - mlp_loss(at(-h), data)) / (2 * h)
    assert float(mlp_gradient(mlp, data) @ v) == pytest.approx(fd_dir, rel=1e-6, abs=1e-8)
    fd_hv = (mlp_gradient(at(h), data) - mlp_gradient(at(-h), data)) / (2 * h)
    assert_close_scaled(mlp_hvp(mlp, data, v), fd_hv, 1e-6)


def test_operator_counts_products_and_chunks_batches() -> None:
    mlp, data = make_deep(DeepCase(3, "tanh", "all", 2, 7))
    op = MLPHessianOperator(mlp, data)
    eye = torch.eye(mlp.num_params)
    H = op.apply(eye)
    assert op.num_matvecs == mlp.num_params
    chunked = torch.cat([op.apply(eye[:, :5]), op.apply(eye[:, 5:])], dim=1)
    torch.testing.assert_close(chunked, H, rtol=0, atol=1e3 * EPS * float(H.abs().max()))
    x = np.linspace(-1.0, 1.0, mlp.num_params)
    assert_close_scaled(torch.from_numpy(op @ x), H @ torch.from_numpy(x), 1e-12)


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_lanczos_ends_match_dense(activation: str) -> None:
    mlp, data = make_deep(DeepCase(4, activation, "all", 2, 13))
    dense = mlp_spectrum(mlp, data)
    assert dense.method == "dense" and dense.inertia is not None
    assert dense.inertia.negative > 0  # a random point of a deep network is indefinite
    lanczos = mlp_spectrum(mlp, data, k=2, method="lanczos")
    assert lanczos.method == "lanczos"
    scale = max(abs(dense.min), abs(dense.max))
    assert lanczos.min == pytest.approx(dense.min, abs=1e-8 * scale)
    assert lanczos.max == pytest.approx(dense.max, abs=1e-8 * scale)


def test_two_layer_special_case_agrees_with_the_two_layer_closed_forms() -> None:
    gen = torch.Generator().manual_seed(3)
    net = sm.TwoLayerNet(torch.randn(4, 2, generator=gen), torch.randn(4, 3, generator=gen),
                         b=torch.randn(4, generator=gen), c=torch.randn(2, generator=gen))
    data = sm.Dataset(torch.randn(7, 3, generator=gen), torch.randn(7, 2, generator=gen))
    mlp = MLP.from_two_layer(net)
    assert mlp_loss(mlp, data) == pytest.approx(sm.loss(net, data), rel=1e-13)
    # the layouts differ; compare the gradients block by block
    grad = mlp.layout.split(mlp_gradient(mlp, data))
    a, w_aug, c = net.layout.split(sm.gradient(net, data))
    assert_close_scaled(grad[0][0], w_aug[:, :3], 1e-12)
    assert_close_scaled(grad[0][1], w_aug[:, 3], 1e-12)
    assert_close_scaled(grad[1][0], a.T, 1e-12)
    assert_close_scaled(grad[1][1], c, 1e-12)
    spec, spec2 = mlp_spectrum(mlp, data), sm.spectrum(net, data)
    np.testing.assert_allclose(spec.eigenvalues, spec2.eigenvalues, rtol=0,
                               atol=1e-12 * spec2.scale)


def test_bad_inputs_are_refused() -> None:
    mlp, data = make_deep(DeepCase(3, "tanh", "all", 1, 3))
    with pytest.raises(sm.DataError, match="d=5"):
        mlp_gradient(mlp, sm.Dataset(torch.zeros(3, 5), torch.zeros(3)))
    with pytest.raises(sm.DataError, match="K=2"):
        mlp_loss(mlp, sm.Dataset(torch.zeros(3, 2), torch.zeros(3, 2)))
    with pytest.raises(sm.OptionError, match="shape"):
        mlp_hvp(mlp, data, torch.zeros(mlp.num_params + 1))
    with pytest.raises(sm.OptionError, match="limit"):
        mlp_hessian(mlp, data, limit=3)
    with pytest.raises(sm.OptionError, match="unknown method"):
        mlp_spectrum(mlp, data, method="qr")  # type: ignore[arg-type]
    with pytest.raises(sm.OptionError, match="unknown method"):
        mlp_hvp_autodiff(mlp, data, torch.zeros(mlp.num_params), "magic")  # type: ignore[arg-type]
