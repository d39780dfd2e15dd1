"""Activations: closed-form derivatives, symmetry identities, registry, custom activations."""

from __future__ import annotations

import pytest
import torch
from conftest import ACTIVATIONS

import saddlemap as sm
from saddlemap.activations import Symmetry

Z = torch.linspace(-4.0, 4.0, 41) + 0.013  # off the ReLU kink at 0


def _name(act: str | sm.Activation) -> str:
    return act if isinstance(act, str) else act.name


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=_name)
def test_derivatives_match_autodiff(activation: str | sm.Activation) -> None:
    act = sm.get_activation(activation)
    d1 = torch.func.vmap(torch.func.grad(act.fn))(Z)
    d2 = torch.func.vmap(torch.func.grad(torch.func.grad(act.fn)))(Z)
    torch.testing.assert_close(act.d1(Z), d1, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(act.d2(Z), d2, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=_name)
def test_with_derivatives_equals_the_separate_functions(activation: str | sm.Activation) -> None:
    act = sm.get_activation(activation)
    z = Z.reshape(-1, 1).expand(-1, 3).contiguous()
    expected = (act.fn(z), act.d1(z), act.d2(z))
    out = tuple(torch.full_like(z, float("nan")) for _ in range(3))
    for got in (act.with_derivatives(z), act.with_derivatives(z, out=out)):
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-14, atol=1e-15)
    assert all(o is g for o, g in zip(out, act.with_derivatives(z, out=out), strict=True))
    out2 = (torch.full_like(z, float("nan")), torch.full_like(z, float("nan")))
    for got in (act.with_first_derivative(z), act.with_first_derivative(z, out=out2)):
        assert len(got) == 2
        for g, e in zip(got, expected[:2], strict=True):
            torch.testing.assert_close(g, e, rtol=1e-14, atol=1e-15)
    zc = z.clone()
    s, _ = act.with_first_derivative(zc, out=(zc, out2[1]))
    assert s is zc  # in place, as the forward pass uses it
    torch.testing.assert_close(s, expected[0], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", ["sigmoid", "softplus"])
def test_logistic_derivatives_in_saturation(name: str) -> None:
    # Below zero σ' ≈ e^{z} keeps every digit; above, s ≈ 1 − e^{−z} is one double, so
    # only ε absolute is possible there.
    z = torch.tensor([-20.0, -30.0, 20.0, 30.0], dtype=torch.float64)
    _, d1, d2 = sm.get_activation(name).with_derivatives(z)
    p = torch.exp(-z.abs())
    logistic_d1 = p / (1 + p) ** 2
    logistic_d2 = logistic_d1 * torch.tanh(-z / 2)
    eps = torch.finfo(torch.float64).eps
    pairs = [(d1, logistic_d1), (d2, logistic_d2)] if name == "sigmoid" else [(d2, logistic_d1)]
    for got, want in pairs:
        torch.testing.assert_close(got[:2], want[:2], rtol=1e-13, atol=0)
        torch.testing.assert_close(got[2:], want[2:], rtol=0, atol=eps)


def test_with_derivatives_stays_differentiable_under_autograd() -> None:
    z = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)
    s, s1, _ = sm.get_activation("tanh").with_derivatives(z)
    (grad,) = torch.autograd.grad(s.sum(), z)
    torch.testing.assert_close(grad, s1.detach(), rtol=1e-15, atol=0)


IDENTITIES = {
    Symmetry.ODD: lambda f, z: f(-z) + f(z),
    Symmetry.ODD_PLUS_CONSTANT: lambda f, z: f(z) + f(-z) - 2 * f(torch.zeros_like(z)),
    Symmetry.ODD_PART_LINEAR: lambda f, z: f(z) - f(-z) - z,
}


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=_name)
def test_symmetry_identity_holds(activation: str | sm.Activation) -> None:
    act = sm.get_activation(activation)
    identity = IDENTITIES.get(act.symmetry)
    if identity is None:
        assert act.symmetry in (Symmetry.GENERIC, Symmetry.POLYNOMIAL, Symmetry.NON_ANALYTIC)
        return
    assert float(identity(act.fn, Z).abs().max()) < 1e-14


@pytest.mark.parametrize(
    ("name", "symmetry", "analytic", "zero_at_origin"),
    [
        ("tanh", "odd", True, True), ("sigmoid", "odd_plus_constant", True, False),
        ("softplus", "odd_part_linear", True, False), ("gelu", "odd_part_linear", True, True),
        ("silu", "odd_part_linear", True, True), ("erf", "odd", True, True),
        ("sin", "odd", True, True), ("exp", "generic", True, False),
        ("identity", "polynomial", True, True), ("relu", "non_analytic", False, True),
        ("leaky_relu", "non_analytic", False, True),
    ],
)
def test_classes_are_as_in_the_theory(
    name: str, symmetry: str, analytic: bool, zero_at_origin: bool
) -> None:
    act = sm.get_activation(name)
    assert act.symmetry is Symmetry(symmetry)
    assert act.analytic is analytic
    assert act.zero_at_origin is zero_at_origin
    assert act.in_theory is (analytic and symmetry != "polynomial")


def test_softplus_is_exact_far_out() -> None:
    z = torch.tensor([30.0, 40.0, -40.0])
    expected = torch.log1p(torch.exp(-z.abs())) + z.clamp(min=0)
    torch.testing.assert_close(sm.get_activation("softplus")(z), expected, rtol=1e-15, atol=0)


def test_unknown_activation_is_named_in_the_error() -> None:
    with pytest.raises(sm.ActivationError, match=r"unknown activation .swishy.*tanh"):
        sm.get_activation("swishy")
    with pytest.raises(sm.ActivationError, match="must be a name"):
        sm.get_activation(3)  # type: ignore[arg-type]


def test_custom_activation_errors() -> None:
    with pytest.raises(sm.ActivationError, match="not elementwise"):
        sm.custom_activation("sum", lambda z: z.sum(0, keepdim=True))
    with pytest.raises(sm.ActivationError, match="cannot be evaluated"):
        sm.custom_activation("bad", lambda z: z @ z @ z)


def test_register_custom_activation_and_given_derivatives() -> None:
    act = sm.custom_activation(
        "cosh_minus_one", lambda z: torch.cosh(z) - 1, d1=torch.sinh, d2=torch.cosh,
    )
    sm.register_activation(act, "cosh1")
    assert sm.get_activation("COSH1") is act
    assert "cosh_minus_one" in sm.available_activations()
    assert sm.leaky_relu(0.2).params == (("negative_slope", 0.2),)
