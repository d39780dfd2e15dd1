"""Conversion between MLP parameters and torch modules, state dicts and scikit-learn (private).

Everything here reads or writes plain per-layer tensors (:class:`Layers`); :class:`MLP
<saddlemap.deep.MLP>` wraps them.  scikit-learn is optional and imported where it is used.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .._torch_interop import activation_module, activation_of_module
from ..activations import Activation, get_activation
from ..errors import ActivationError, ModelError
from ..io._sklearn import fitted_mlp_loss

#: scikit-learn's activation names and saddlemap's.
SKLEARN_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh",
                       "relu": "relu"}


class Layers(NamedTuple):
    """Weights (n_l × n_{l−1}), biases (n_l,) or None, one activation for every hidden layer."""

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor | None, ...]
    activation: Activation


def _linear_parts(linears: list[nn.Linear]) -> tuple[tuple[torch.Tensor, ...],
                                                     tuple[torch.Tensor | None, ...]]:
    for j in range(1, len(linears)):
        before, after = linears[j - 1], linears[j]
        if after.in_features != before.out_features:
            raise ModelError(
                f"layers {j - 1} and {j} do not chain: Linear({before.in_features}, "
                f"{before.out_features}) then Linear({after.in_features}, {after.out_features})"
            )
    weights = tuple(lin.weight.detach().clone() for lin in linears)
    biases = tuple(None if lin.bias is None else lin.bias.detach().clone() for lin in linears)
    return weights, biases


def from_module(module: nn.Module) -> Layers:
    """Read a module whose children are Linear, σ, Linear, σ, …, Linear (one σ throughout)."""
    children = list(module.children())
    kinds = ", ".join(type(c).__name__ for c in children) or "no submodules"
    ok = len(children) >= 3 and len(children) % 2 == 1 and all(
        isinstance(c, nn.Linear) == (i % 2 == 0) for i, c in enumerate(children)
    )
    if not ok:
        raise ModelError(
            "not a multilayer perceptron: expected Linear, activation, Linear, …, Linear "
            f"(at least one hidden layer); found {kinds}"
        )
    acts = [activation_of_module(c) for c in children[1::2]]
    if any(a != acts[0] for a in acts[1:]):
        names = ", ".join(a.name for a in acts)
        raise ActivationError(f"every hidden layer must have the same activation; found {names}")
    weights, biases = _linear_parts([c for c in children[::2] if isinstance(c, nn.Linear)])
    return Layers(weights, biases, acts[0])


def to_sequential(layers: Layers) -> nn.Sequential:
    """``nn.Sequential(Linear, σ, …, Linear)`` holding a copy of the parameters."""
    modules: list[nn.Module] = []
    for j, (W, b) in enumerate(zip(layers.weights, layers.biases, strict=True)):
        lin = nn.Linear(W.shape[1], W.shape[0], bias=b is not None)
        lin.to(dtype=W.dtype, device=W.device)
        with torch.no_grad():
            lin.weight.copy_(W)
            if b is not None:
                lin.bias.copy_(b)
        if j:
            modules.append(activation_module(layers.activation))
        modules.append(lin)
    return nn.Sequential(*modules)


def from_state_dict(state_dict: Mapping[str, Any], activation: str | Activation) -> Layers:
    """The 2-d ``*weight`` entries of a state dict in key order, each with its ``*bias``."""
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelError(
                f"a state_dict maps names to tensors; entry {key!r} is a {type(value).__name__}"
            )
    keys = [k for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 2]
    if len(keys) < 2:
        raise ModelError(
            f"a multilayer perceptron's state_dict has at least 2 weight matrices, found "
            f"{len(keys)}: {keys}"
        )
    weights = tuple(state_dict[k].detach().clone() for k in keys)
    biases: list[torch.Tensor | None] = []
    for k, W in zip(keys, weights, strict=True):
        b = state_dict.get(k[: -len("weight")] + "bias")
        if b is not None and tuple(b.shape) != (W.shape[0],):
            raise ModelError(f"{k[:-len('weight')]}bias has shape {tuple(b.shape)}, expected "
                             f"({W.shape[0]},)")
        biases.append(None if b is None else b.detach().clone())
    for j in range(1, len(weights)):
        if weights[j].shape[1] != weights[j - 1].shape[0]:
            raise ModelError(
                f"{keys[j - 1]} {tuple(weights[j - 1].shape)} and {keys[j]} "
                f"{tuple(weights[j].shape)} do not chain"
            )
    return Layers(weights, tuple(biases), get_activation(activation))


def check_same_function(
    module: Callable[[torch.Tensor], torch.Tensor], ours: Callable[[torch.Tensor], torch.Tensor],
    input_dim: int, dtype: torch.dtype, device: torch.device,
) -> None:
    """Refuse a module whose forward differs from ``ours`` on random probe inputs."""
    probe = torch.randn(7, input_dim, generator=torch.Generator().manual_seed(0), dtype=dtype)
    with torch.no_grad():
        try:
            expected = module(probe.to(device))
        except Exception as exc:
            raise ModelError(
                f"the module cannot be run on inputs of size {input_dim}: {exc}"
            ) from exc
        mine = ours(probe)
    if expected.shape != mine.shape:
        raise ModelError(
            f"the module's output has shape {tuple(expected.shape)}, expected {tuple(mine.shape)}"
        )
    # float32 modules round at ~1e-7; the check only guards against a different function
    scale = 1.0 + float(expected.abs().max())
    if float((expected.to(mine.dtype) - mine.to(expected.device)).abs().max()) > 1e-4 * scale:
        raise ModelError("the module's forward does not compute Linear, σ, …, Linear in order")


# ----------------------------------------------------------------------- scikit-learn
def sklearn_loss(estimator: Any) -> str:
    """The loss a fitted scikit-learn MLP minimises: ``"mse"``, ``"cross_entropy"``, ``"bce"``."""
    return fitted_mlp_loss(estimator)


def from_sklearn(estimator: Any) -> Layers:
    """The layers of a fitted ``MLPRegressor``/``MLPClassifier`` (any number of hidden layers)."""
    sklearn_loss(estimator)  # checks the estimator
    act = SKLEARN_ACTIVATIONS.get(estimator.activation)
    if act is None:
        raise ActivationError(f"unsupported scikit-learn activation {estimator.activation!r}")
    weights = tuple(torch.from_numpy(np.array(c, dtype=np.float64).T.copy())
                    for c in estimator.coefs_)
    biases = tuple(torch.from_numpy(np.array(b, dtype=np.float64)) for b in estimator.intercepts_)
    return Layers(weights, biases, get_activation(act))


def sklearn_outputs(estimator: Any, X: np.ndarray) -> np.ndarray:
    """The estimator's outputs after its output activation, shape (n, K)."""
    loss = sklearn_loss(estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "X does not have valid feature names"
        if loss == "mse":
            return np.asarray(estimator.predict(X)).reshape(len(X), -1)
        proba = np.asarray(estimator.predict_proba(X))
    return proba[:, 1:] if loss == "bce" else proba


def output_transform(loss: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The output activation an estimator of this loss applies to the last layer."""
    if loss == "bce":
        return torch.sigmoid
    if loss == "cross_entropy":
        return lambda g: torch.softmax(g, dim=1)
    return lambda g: g
