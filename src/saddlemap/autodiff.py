"""Reference derivatives by generic autodiff (``torch.func``), for tests and fallbacks.

These differentiate R(θ) as a plain function of the flat parameter vector, knowing nothing
of the two-layer structure: they are the yardstick the closed forms of
:mod:`saddlemap.derivatives` are checked against, and what a user would otherwise write.
With a ``data.penalty`` the function differentiated is R(θ) + (λ/2)‖Mθ‖², as in the closed
forms; :func:`output_function` and :func:`jacobian_autodiff` concern the outputs only.

>>> import torch
>>> from saddlemap import Dataset, TwoLayerNet, gradient
>>> net = TwoLayerNet([0.6, -0.2], [[1.4], [0.3]], activation="erf")
>>> data = Dataset([[-1.0], [0.5], [2.0]], [-1.0, 0.5, 0.0])
>>> bool(torch.allclose(gradient_autodiff(net, data), gradient(net, data), rtol=1e-12))
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch.func import grad, hessian, jacfwd, jvp

from ._forward import checked_data
from .data import Dataset
from .errors import OptionError
from .network import TwoLayerNet

__all__ = [
    "gradient_autodiff",
    "hessian_autodiff",
    "hvp_autodiff",
    "jacobian_autodiff",
    "loss_autodiff",
    "loss_function",
    "output_function",
]

FlatFn = Callable[[torch.Tensor], torch.Tensor]


def output_function(net: TwoLayerNet, data: Dataset) -> FlatFn:
    """θ ↦ g(θ, X), the outputs (n, K) as a function of the flat vector θ (P,)."""
    data = checked_data(net, data)
    layout, act = net.layout, net.activation
    X = net.augment(data.X)

    def outputs(theta: torch.Tensor) -> torch.Tensor:
        a, w_aug, c = layout.split(theta)
        g = act.fn(X @ w_aug.T) @ a
        return g + c if layout.output_bias else g

    return outputs


def loss_function(net: TwoLayerNet, data: Dataset) -> FlatFn:
    """θ ↦ R(θ) + P(θ) as a function of the flat vector θ (P,).

    R is the empirical risk (1/n) Σ ℓ(g(θ, x_i), y_i) and P(θ) = (λ/2)‖Mθ‖² the
    ``data.penalty`` (0 without one).
    """
    data = checked_data(net, data)
    outputs = output_function(net, data)
    penalty, layout = data.penalty, net.layout

    def risk(theta: torch.Tensor) -> torch.Tensor:
        return data.loss.value(outputs(theta), data.targets).mean()

    if penalty is None:
        return risk

    def objective(theta: torch.Tensor) -> torch.Tensor:
        return risk(theta) + penalty.value(theta, layout)

    return objective


def loss_autodiff(net: TwoLayerNet, data: Dataset) -> float:
    """R(θ) + P(θ) evaluated through :func:`loss_function`."""
    return float(loss_function(net, data)(net.flatten()))


def gradient_autodiff(net: TwoLayerNet, data: Dataset) -> torch.Tensor:
    """∇(R + P)(θ) by reverse mode, shape (P,)."""
    return grad(loss_function(net, data))(net.flatten())


def jacobian_autodiff(net: TwoLayerNet, data: Dataset) -> torch.Tensor:
    """∂g(θ, x_i)_c / ∂θ by forward mode, shape (n, K, P)."""
    return jacfwd(output_function(net, data))(net.flatten())


def hvp_autodiff(
    net: TwoLayerNet,
    data: Dataset,
    v: torch.Tensor,
    method: Literal["forward_over_reverse", "double_backward"] = "forward_over_reverse",
) -> torch.Tensor:
    """H v by ``jvp(grad(L))`` or by double backward ``∇(∇L · v)``, L = R + P, shape (P,)."""
    risk = loss_function(net, data)
    theta = net.flatten()
    v = torch.as_tensor(v, dtype=theta.dtype, device=theta.device)
    if method == "forward_over_reverse":
        return jvp(grad(risk), (theta,), (v,))[1]
    if method == "double_backward":
        theta = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(risk(theta), theta, create_graph=True)
        (hv,) = torch.autograd.grad(g @ v, theta)
        return hv
    raise OptionError(f"unknown method {method!r}")


def hessian_autodiff(net: TwoLayerNet, data: Dataset) -> torch.Tensor:
    """∇²(R + P)(θ) by ``torch.func.hessian`` (forward over reverse), shape (P, P)."""
    return hessian(loss_function(net, data))(net.flatten())
