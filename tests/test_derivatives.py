"""Closed-form derivatives against torch.func autodiff and central finite differences."""

from __future__ import annotations

import pytest
import torch
from conftest import Case, assert_close_scaled, make_problem

import saddlemap as sm
from saddlemap import _hvp, derivatives
from saddlemap._forward import forward

RTOL = 1e-10  # DESIGN: closed forms equal autodiff to 1e-10 in float64


def test_loss_and_gradient_match_autodiff(problem: tuple[sm.TwoLayerNet, sm.Dataset]) -> None:
    net, data = problem
    assert sm.loss(net, data) == pytest.approx(sm.loss_autodiff(net, data), rel=1e-13)
    assert_close_scaled(sm.gradient(net, data), sm.gradient_autodiff(net, data), RTOL)
    value, grad = sm.loss_and_gradient(net, data, batch_size=5)
    assert value == pytest.approx(sm.loss(net, data), rel=1e-13)
    assert_close_scaled(grad, sm.gradient(net, data), 1e-13)


def _close_by_kernel(
    kernel: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float
) -> None:
    try:
        assert_close_scaled(actual, expected, rtol)
    except AssertionError as exc:
        raise AssertionError(f"kernel {kernel!r}: {exc}") from None


def _check_hvp_kernels(net: sm.TwoLayerNet, data: sm.Dataset, H_ref: torch.Tensor) -> None:
    """Every HVP kernel, forced in turn, against the autodiff Hessian and HVPs."""
    V = torch.randn(net.num_params, 3, generator=torch.Generator().manual_seed(1))
    for kernel in _hvp.CACHED_KERNELS:  # HessianOperator.apply, through sm.hvp with r = 3
        with _hvp.forced(cached=kernel):
            _close_by_kernel(kernel, sm.hvp(net, data, V), H_ref @ V, RTOL)
            op = sm.hessian_operator(net, data)
            assert op._cached.kernel == kernel
            _close_by_kernel(kernel, op.apply(V[:, :1]), H_ref @ V[:, :1], RTOL)
    refs = [sm.hvp_autodiff(net, data, V[:, 0], method)
            for method in ("forward_over_reverse", "double_backward")]
    for kernel in _hvp.FRESH_KERNELS:  # a fresh point: sm.hvp with one vector
        with _hvp.forced(fresh=kernel):
            out = sm.hvp(net, data, V[:, 0])
        for ref in refs:
            _close_by_kernel(kernel, out, ref, RTOL)


def test_hessian_and_hvp_match_autodiff(problem: tuple[sm.TwoLayerNet, sm.Dataset]) -> None:
    net, data = problem
    H = sm.hessian(net, data)
    H_ref = sm.hessian_autodiff(net, data)
    assert_close_scaled(H, H_ref, RTOL)
    assert torch.equal(H, H.T)
    for build in (derivatives._hessian_closed, derivatives._hessian_by_products):
        H = build(net, data, batch_size=3)  # both ways to form H, whichever the cost picks
        assert_close_scaled(H, H_ref, RTOL)
        assert torch.equal(H, H.T)
    _check_hvp_kernels(net, data, H_ref)


@pytest.mark.parametrize(
    ("shape", "by_products"),
    [((442, 32, 1, 11), False), ((1797, 8, 10, 65), True), ((200, 4, 3, 6), False)],
)
def test_dense_hessian_built_the_cheaper_way(
    shape: tuple[int, int, int, int], by_products: bool
) -> None:
    # (n, m, K, D): diabetes (one output) by Jᵀ(hJ); digits at width 8 by products
    n, m, K, D = shape
    net = sm.TwoLayerNet(torch.ones(m, K), torch.ones(m, D - 1), torch.ones(m), torch.ones(K))
    work, products = derivatives.dense_hessian_work(net, n)
    assert products is by_products
    assert work == min(n * K * net.num_params**2, 3.3 * n * m * (D + K) * net.num_params)


# Many outputs and wide inputs, where the per-sample order and fused G are chosen by shape.
WIDE_CASES = [
    Case("tanh", "both_biases", 10, 7, loss="cross_entropy", d=6, m=4),
    Case("softplus", "hidden_bias", 10, 13, d=3),
    Case("gelu", "both_biases", 10, 5, loss="cross_entropy", d=100, m=3),
    Case("tanh", "both_biases", 1, 5, d=120, m=3),
    Case("sigmoid", "no_bias", 1, 3, loss="binary_cross_entropy", d=110, m=2),
    Case("erf", "hidden_bias", 3, 4, d=105, m=2),
]


@pytest.mark.parametrize("case", WIDE_CASES, ids=lambda c: f"{c.id}-d{c.d}-m{c.m}")
def test_hvp_kernels_many_outputs_and_wide_inputs(case: Case) -> None:
    net, data = make_problem(case)
    H_ref = sm.hessian_autodiff(net, data)
    assert_close_scaled(sm.hessian(net, data), H_ref, RTOL)
    _check_hvp_kernels(net, data, H_ref)
    V = torch.randn(net.num_params, 2, generator=torch.Generator().manual_seed(4))
    for kernel in _hvp.CACHED_KERNELS:  # blocks of samples, summed
        with _hvp.forced(cached=kernel):
            _close_by_kernel(kernel, sm.hvp(net, data, V, batch_size=2), H_ref @ V, RTOL)


@pytest.mark.parametrize(
    ("shape", "cached", "fresh"),
    [
        ((1000, 100, 1, 10), "coordinate", "scalar"),  # the README's headline problem
        ((1797, 20, 10, 65), "sample", "general"),  # digits, cross-entropy
        ((1000, 100, 1, 785), "sample_fused", "general"),  # MNIST-sized inputs
        ((2000, 256, 1, 785), "sample_fused", "general"),
    ],
)
def test_kernel_choice_by_shape(shape: tuple[int, int, int, int], cached: str, fresh: str) -> None:
    # (n, m, K, D): the cost model's choices, each the fastest measured on these shapes
    assert _hvp.cached_kernel(*shape) == cached
    assert _hvp.fresh_kernel(*shape) == fresh
    with _hvp.forced(cached="coordinate", fresh="scalar"):
        assert _hvp.cached_kernel(*shape) == "coordinate"
        assert _hvp.fresh_kernel(*shape) == ("scalar" if shape[2] == 1 else "general")
    assert _hvp.cached_kernel(*shape) == cached
    with pytest.raises(ValueError, match="unknown"), _hvp.forced(cached="nope"):
        pass


@pytest.mark.parametrize("batch_size", [None, 3])
def test_streaming_operator_equals_the_cached_one(
    problem: tuple[sm.TwoLayerNet, sm.Dataset], batch_size: int | None
) -> None:
    net, data = problem
    data = data.with_penalty(0.01)
    V = torch.randn(net.num_params, 2, generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    cached = sm.hessian_operator(net, data, batch_size, cache=True)
    streamed = sm.hessian_operator(net, data, batch_size, cache=False)
    assert cached.cached and not streamed.cached
    assert_close_scaled(streamed.apply(V), cached.apply(V), 1e-12)
    assert streamed.num_matvecs == 2


def test_operator_streams_when_its_cache_would_be_large(monkeypatch: pytest.MonkeyPatch) -> None:
    net, data = make_problem(Case("tanh", "both_biases", 2, 13, d=3, m=4))
    assert sm.hessian_operator(net, data).cached
    need = derivatives.cache_bytes(data.n, net.width, net.output_dim, 4)
    monkeypatch.setattr(derivatives, "CACHE_BYTES", need - 1)
    op = sm.hessian_operator(net, data)
    assert not op.cached
    v = torch.ones(net.num_params, 1, dtype=torch.float64)
    assert_close_scaled(op.apply(v), sm.hessian(net, data) @ v, RTOL)


def test_jacobian_matches_autodiff(problem: tuple[sm.TwoLayerNet, sm.Dataset]) -> None:
    net, data = problem
    assert_close_scaled(sm.jacobian(net, data), sm.jacobian_autodiff(net, data), RTOL)


def test_finite_differences(problem: tuple[sm.TwoLayerNet, sm.Dataset]) -> None:
    net, data = problem
    theta = net.flatten()
    h = 1e-5
    # Central differences: truncation O(h²) ≈ 1e-10 and rounding O(ε/h) ≈ 1e-11 of the scale.
    fd_rtol = 1e-6
    eye = torch.eye(net.num_params)
    fd_grad = torch.tensor([
        (sm.loss(net.unflatten(theta + h * e), data) - sm.loss(net.unflatten(theta - h * e), data))
        / (2 * h) for e in eye
    ])
    assert_close_scaled(sm.gradient(net, data), fd_grad, fd_rtol)
    fd_hess = torch.stack([
        (sm.gradient(net.unflatten(theta + h * e), data)
         - sm.gradient(net.unflatten(theta - h * e), data)) / (2 * h) for e in eye
    ])
    assert_close_scaled(sm.hessian(net, data), fd_hess, fd_rtol)


BATCHED_CASES = [Case("softplus", "both_biases", 3, 13, loss="cross_entropy"),
                 Case("tanh", "both_biases", 1, 13)]  # K = 1 has kernels of its own


@pytest.mark.parametrize("case", BATCHED_CASES, ids=lambda c: f"K{c.K}")
@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_batched_over_data_equals_unbatched(batch_size: int, case: Case) -> None:
    net, data = make_problem(case)
    v = torch.randn(net.num_params, generator=torch.Generator().manual_seed(2))
    assert_close_scaled(sm.hessian(net, data, batch_size), sm.hessian(net, data), 1e-13)
    assert_close_scaled(sm.gradient(net, data, batch_size), sm.gradient(net, data), 1e-13)
    assert_close_scaled(sm.hvp(net, data, v, batch_size), sm.hvp(net, data, v), 1e-13)
    assert sm.loss(net, data, batch_size) == pytest.approx(sm.loss(net, data), rel=1e-13)
    V = torch.randn(net.num_params, 3, generator=torch.Generator().manual_seed(3))
    for kernel in _hvp.CACHED_KERNELS:
        with _hvp.forced(cached=kernel):
            op = sm.hessian_operator(net, data, batch_size)
            assert_close_scaled(sm.hvp(net, data, V, batch_size), sm.hessian(net, data) @ V, 1e-12)
        assert_close_scaled(torch.as_tensor(op @ v.numpy()), sm.hessian(net, data) @ v, 1e-12)
        assert op.num_matvecs == 1
        assert_close_scaled(
            torch.as_tensor(op.matmat(V.numpy())), sm.hessian(net, data) @ V, 1e-12
        )
        assert op.num_matvecs == 4


def test_residual_function_gives_gradient_and_residual_blocks() -> None:
    net, data = make_problem(Case("erf", "hidden_bias", 3, 13))
    rf = sm.residual_function(net, data)
    grad = sm.gradient(net, data).reshape(net.width, -1)
    K = net.output_dim
    # ∂R/∂a_k = φ(w̃_k) and ∇_{w̃_k} R = ∇φ(w̃_k)ᵀ a_k (docs/theory.md §2)
    assert_close_scaled(rf.phi(net.W_aug), grad[:, :K], RTOL)
    grad_w = torch.einsum("pcd,pc->pd", rf.grad(net.W_aug), net.a)
    assert_close_scaled(grad_w, grad[:, K:], RTOL)
    # ∇φ and G are the first and second derivatives of u ↦ φ(u), u ↦ aᵀφ(u)
    u = net.W_aug[1] + 0.1
    a = net.a[0]
    assert_close_scaled(rf.grad(u), torch.func.jacrev(rf.phi)(u), RTOL)
    assert_close_scaled(rf.G(u, a), torch.func.hessian(lambda v: a @ rf.phi(v))(u), RTOL)
    assert rf.phi(net.W_aug[:2]).shape == (2, K)
    assert rf.G(net.W_aug[:2], net.a[:2]).shape == (2, 3, 3)


@pytest.mark.parametrize("activation", ["erf", "gelu"])  # fused and not
def test_lower_order_forward_skips_derivatives(activation: str) -> None:
    net, data = make_problem(Case(activation, "hidden_bias", 1, 7))
    full, first, plain = (forward(net, data, order=k) for k in (2, 1, 0))
    assert plain.first is None and plain.second is None and first.second is None
    with pytest.raises(RuntimeError, match="skipped σ''"):
        _ = first.S2
    with pytest.raises(RuntimeError, match="skipped σ'"):
        _ = plain.S1
    for name in ("S", "g", "e"):
        torch.testing.assert_close(getattr(plain, name), getattr(full, name), rtol=0, atol=0)
    for name in ("S", "S1", "g", "e"):
        torch.testing.assert_close(getattr(first, name), getattr(full, name), rtol=0, atol=0)


def test_residuals_are_scaled_gradients_of_the_loss() -> None:
    net, data = make_problem(Case("tanh", "no_bias", 1, 7))
    e = sm.residuals(net, data)
    assert_close_scaled(e, (net(data.X) - data.targets) / data.n, 1e-14)


def test_data_moved_to_network_dtype() -> None:
    net, data = make_problem(Case("tanh", "no_bias", 1, 7))
    data32 = data.to(torch.float32)
    assert sm.loss(net, data32) == pytest.approx(sm.loss(net, data32.to(torch.float64)))
