"""Conversion between two-layer parameters and torch modules (Linear → activation → Linear).

This module sits below :mod:`saddlemap.network`: it reads and writes plain parameter
tensors (:class:`Parts`), and ``TwoLayerNet`` wraps them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import nn

from .activations import Activation, get_activation, leaky_relu
from .errors import ActivationError, ModelError


class Parts(NamedTuple):
    """The parameters of a two-layer network: a (m, K), W (m, d), b (m,), c (K,), σ."""

    a: torch.Tensor
    W: torch.Tensor
    b: torch.Tensor | None
    c: torch.Tensor | None
    activation: Activation


class ActivationModule(nn.Module):
    """A torch module computing a saddlemap activation (for those torch has no class for)."""

    def __init__(self, activation: Activation) -> None:
        super().__init__()
        self.activation = activation

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """σ(z), elementwise."""
        return self.activation(z)

    def extra_repr(self) -> str:
        return self.activation.name


def activation_module(activation: Activation) -> nn.Module:
    """The torch module for an activation: torch's own class where one exists."""
    if activation.torch_module == "LeakyReLU":
        return nn.LeakyReLU(dict(activation.params)["negative_slope"])
    if activation.torch_module is not None:
        return getattr(nn, activation.torch_module)()
    return ActivationModule(activation)


def activation_of_module(module: nn.Module) -> Activation:
    """The activation a torch module computes, or an ActivationError naming the module."""
    if isinstance(module, ActivationModule):
        return module.activation
    if isinstance(module, nn.LeakyReLU):
        return leaky_relu(module.negative_slope)
    if isinstance(module, nn.Softplus) and module.beta != 1:
        raise ActivationError(f"Softplus with beta={module.beta} is not supported (beta=1 is)")
    if isinstance(module, nn.GELU) and module.approximate != "none":
        raise ActivationError(
            f"GELU(approximate={module.approximate!r}) is not supported; use the exact erf form"
        )
    by_class = {
        "Tanh": "tanh", "Sigmoid": "sigmoid", "Softplus": "softplus", "GELU": "gelu",
        "SiLU": "silu", "ReLU": "relu", "Identity": "identity",
    }
    name = by_class.get(type(module).__name__)
    if name is None:
        raise ActivationError(f"unsupported activation module {type(module).__name__}")
    return get_activation(name)


def to_sequential(parts: Parts) -> nn.Sequential:
    """``nn.Sequential(Linear, activation, Linear)`` holding a copy of the parameters."""
    (m, K), d = parts.a.shape, parts.W.shape[1]
    first = nn.Linear(d, m, bias=parts.b is not None)
    second = nn.Linear(m, K, bias=parts.c is not None)
    model = nn.Sequential(first, activation_module(parts.activation), second)
    model.to(dtype=parts.W.dtype, device=parts.W.device)
    with torch.no_grad():
        first.weight.copy_(parts.W)
        second.weight.copy_(parts.a.T)
        if parts.b is not None:
            first.bias.copy_(parts.b)
        if parts.c is not None:
            second.bias.copy_(parts.c)
    return model


def _parts_from_linears(first: nn.Linear, second: nn.Linear, activation: Activation) -> Parts:
    if second.in_features != first.out_features:
        raise ModelError(
            f"the layers do not chain: Linear({first.in_features}, {first.out_features}) then "
            f"Linear({second.in_features}, {second.out_features})"
        )
    return Parts(
        second.weight.detach().T.clone(),
        first.weight.detach().clone(),
        None if first.bias is None else first.bias.detach().clone(),
        None if second.bias is None else second.bias.detach().clone(),
        activation,
    )


def from_module(module: nn.Module) -> Parts:
    """Read a module whose children are exactly Linear, an activation, Linear.

    The result is checked against the module's own forward on probe inputs, so a module that
    registers these layers but computes something else is refused.
    """
    children = list(module.children())
    kinds = ", ".join(type(c).__name__ for c in children) or "no submodules"
    if (
        len(children) != 3
        or not isinstance(children[0], nn.Linear)
        or not isinstance(children[2], nn.Linear)
    ):
        raise ModelError(
            f"not a two-layer network: expected Linear, activation, Linear; found {kinds}"
        )
    return _parts_from_linears(children[0], children[2], activation_of_module(children[1]))


def check_same_function(
    module: nn.Module, ours_fn: Callable[[torch.Tensor], torch.Tensor], input_dim: int
) -> None:
    """Refuse a module whose forward differs from ``ours_fn`` on random probe inputs."""
    param = next(module.parameters())
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(7, input_dim, generator=generator, dtype=param.dtype)
    with torch.no_grad():
        try:
            expected = module(probe.to(param.device))
        except Exception as exc:
            raise ModelError(
                f"the module cannot be run on inputs of size {input_dim}: {exc}"
            ) from exc
        ours = ours_fn(probe)
    if expected.shape != ours.shape:
        raise ModelError(
            f"the module's output has shape {tuple(expected.shape)}, expected {tuple(ours.shape)}"
        )
    # Float32 modules round at ~1e-7; the check only guards against a different function.
    scale = 1.0 + float(expected.abs().max())
    if float((expected.to(ours.dtype) - ours.to(expected.device)).abs().max()) > 1e-4 * scale:
        raise ModelError(
            "the module's forward does not compute Linear → activation → Linear in that order"
        )


def from_state_dict(state_dict: Mapping[str, torch.Tensor], activation: str | Activation) -> Parts:
    """Read a state_dict with exactly two 2-d weights (first and second layer, in key order)."""
    weights = [k for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 2]
    if len(weights) != 2:
        raise ModelError(
            f"a two-layer state_dict has 2 weight matrices, found {len(weights)}: {weights}"
        )
    layers = []
    for key in weights:
        weight = state_dict[key]
        bias = state_dict.get(key[: -len("weight")] + "bias")
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        layer.to(dtype=weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if bias is not None:
                layer.bias.copy_(bias)
        layers.append(layer)
    return _parts_from_linears(layers[0], layers[1], get_activation(activation))
