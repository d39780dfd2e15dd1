"""A multilayer perceptron of any depth: g(θ, x) = W_L σ(… σ(W_1 x + b_1) …) + b_L.

:class:`MLP` holds L ≥ 2 linear layers (at least one hidden layer), each with an optional
bias, one activation σ for every hidden layer, and K outputs.  Layer j (0-based) maps
h_j ∈ R^{n_j} to z_{j+1} = W_j h_j + b_j, with h_0 = x and h_{j+1} = σ(z_{j+1}) for the
hidden layers; the output is z_L.  *Hidden layer* j (0 ≤ j ≤ L − 2) is the n_{j+1} neurons
made by ``weights[j]``: neuron k has incoming weights w̃_k = (row k of W_j, b_j[k]) and
outgoing weights column k of ``weights[j + 1]``.

**Flat layout** (what every derivative and embedding of :mod:`saddlemap.deep` uses): layer
by layer, W_j row-major then b_j when present — the order of
``torch.nn.utils.parameters_to_vector(mlp.to_torch().parameters())``.  So
P = Σ_j n_{j+1}(n_j + [b_j]).

:class:`~saddlemap.TwoLayerNet` stays the fast special case (L = 2, its own closed forms);
:meth:`MLP.from_two_layer` and :meth:`MLP.to_two_layer` convert exactly.

>>> mlp = MLP([[[1.0, 2.0]], [[3.0]], [[-1.0]]], biases=[[0.5], None, [0.1]])
>>> mlp.depth, mlp.widths, mlp.input_dim, mlp.output_dim, mlp.num_params
(3, (1, 1), 2, 1, 6)
>>> mlp.flatten().tolist()
[1.0, 2.0, 0.5, 3.0, -1.0, 0.1]
>>> mlp.unflatten(mlp.flatten()).flatten().tolist() == mlp.flatten().tolist()
True
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..activations import Activation, get_activation
from ..data import as_tensor
from ..errors import DataError, ModelError
from ..network import TwoLayerNet
from ..network import _param as network_param
from . import _interop
from ._interop import Layers

__all__ = ["MLP", "MLPLayout"]


@dataclass(frozen=True)
class MLPLayout:
    """Layer sizes (d, n_1, …, n_{L−1}, K) and bias flags: the positions in the flat vector.

    >>> lay = MLPLayout(sizes=(2, 3, 1), bias=(True, False))
    >>> lay.num_params, lay.weight_slice(1), lay.bias_slice(0)
    (12, slice(9, 12, None), slice(6, 9, None))
    """

    sizes: tuple[int, ...]
    bias: tuple[bool, ...]

    def __post_init__(self) -> None:
        if len(self.sizes) < 3 or len(self.bias) != len(self.sizes) - 1:
            raise ModelError(
                f"an MLP needs sizes (d, n_1, …, K) with at least one hidden layer and one "
                f"bias flag per layer; got sizes {self.sizes}, bias {self.bias}"
            )

    @property
    def depth(self) -> int:
        """L, the number of linear layers."""
        return len(self.bias)

    @functools.cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start of each layer's block in the flat vector, and P last."""
        starts = [0]
        for j in range(self.depth):
            starts.append(starts[-1] + self.sizes[j + 1] * (self.sizes[j] + int(self.bias[j])))
        return tuple(starts)

    @property
    def num_params(self) -> int:
        """P, the length of the flat vector."""
        return self.offsets[-1]

    def weight_slice(self, j: int) -> slice:
        """Positions of W_j (row-major)."""
        start = self.offsets[j]
        return slice(start, start + self.sizes[j + 1] * self.sizes[j])

    def bias_slice(self, j: int) -> slice:
        """Positions of b_j (empty without a bias)."""
        stop = self.weight_slice(j).stop
        return slice(stop, stop + self.sizes[j + 1] * int(self.bias[j]))

    def split(self, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Views (W_j (..., n_{j+1}, n_j), b_j (..., n_{j+1}) or None) of vectors (..., P)."""
        if theta.shape[-1] != self.num_params:
            raise DataError(
                f"vector has length {theta.shape[-1]}, the network has {self.num_params} "
                "parameters"
            )
        batch = theta.shape[:-1]
        out = []
        for j in range(self.depth):
            W = theta[..., self.weight_slice(j)].reshape(*batch, self.sizes[j + 1], self.sizes[j])
            b = theta[..., self.bias_slice(j)] if self.bias[j] else None
            out.append((W, b))
        return out

    def join(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        """Inverse of :meth:`split`."""
        parts = []
        for W, b in layers:
            parts.append(W.flatten(-2))
            if b is not None:
                parts.append(b)
        return torch.cat(parts, dim=-1)


def _param(value: Any, name: str, dtype: torch.dtype | None, device: Any) -> torch.Tensor:
    try:
        return network_param(value, name, dtype, device)
    except DataError as exc:  # a parameter, not data: the model is what is wrong
        raise ModelError(str(exc)) from None


@dataclass(frozen=True, eq=False)
class MLP:
    """The parameters of a multilayer perceptron and its activation.

    Args:
        weights: W_0, …, W_{L−1}, each (n_{j+1}, n_j) as in ``nn.Linear.weight``; L ≥ 2.
        biases: one entry per layer, each (n_{j+1},) or None; None for no biases at all.
        activation: a name from :func:`~saddlemap.available_activations` or an
            :class:`~saddlemap.Activation`, applied after every layer but the last.
        dtype: cast the parameters to this dtype; by default tensors keep theirs (the
            first weight's) and other array-likes become float64.
        device: move the parameters there.

    Raises:
        ModelError: fewer than two layers, layers that do not chain, a hidden layer of
            width 0, biases of the wrong shape or count, NaN/Inf parameters.
    """

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor | None, ...]
    activation: Activation

    def __init__(
        self,
        weights: Sequence[Any],
        biases: Sequence[Any] | None = None,
        activation: str | Activation = "tanh",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(weights, (torch.Tensor, np.ndarray)) or not isinstance(weights, Sequence):
            raise ModelError("weights must be a sequence of matrices, one per layer")
        if len(weights) < 2:
            raise ModelError(
                f"an MLP has at least two layers (one hidden layer), got {len(weights)}"
            )
        first = _param(weights[0], "weights[0]", dtype, device)
        dtype, device = first.dtype, first.device
        Ws = [first, *(_param(w, f"weights[{j}]", dtype, device)
                       for j, w in enumerate(weights) if j)]
        bias_in = [None] * len(Ws) if biases is None else list(biases)
        if len(bias_in) != len(Ws):
            raise ModelError(f"biases must have one entry per layer ({len(Ws)}), "
                             f"got {len(bias_in)}")
        for j, W in enumerate(Ws):
            if W.ndim != 2:
                raise ModelError(f"weights[{j}] must be a matrix, got shape {tuple(W.shape)}")
            if j and W.shape[1] != Ws[j - 1].shape[0]:
                raise ModelError(
                    f"weights[{j}] has shape {tuple(W.shape)}: it takes {W.shape[1]} inputs "
                    f"but layer {j - 1} has {Ws[j - 1].shape[0]} outputs"
                )
            if j < len(Ws) - 1 and W.shape[0] == 0:
                raise ModelError(f"hidden layer {j} has width 0")
        bs: list[torch.Tensor | None] = []
        for j, b in enumerate(bias_in):
            if b is None:
                bs.append(None)
                continue
            bt = _param(b, f"biases[{j}]", dtype, device).reshape(-1)
            if bt.shape[0] != Ws[j].shape[0]:
                raise ModelError(f"biases[{j}] must have shape ({Ws[j].shape[0]},), "
                                 f"got {tuple(bt.shape)}")
            bs.append(bt)
        object.__setattr__(self, "weights", tuple(Ws))
        object.__setattr__(self, "biases", tuple(bs))
        object.__setattr__(self, "activation", get_activation(activation))

    # ----------------------------------------------------------------- shape and layout
    @property
    def depth(self) -> int:
        """L, the number of linear layers (hidden layers + 1)."""
        return len(self.weights)

    @property
    def widths(self) -> tuple[int, ...]:
        """(n_1, …, n_{L−1}), the widths of the hidden layers."""
        return tuple(int(W.shape[0]) for W in self.weights[:-1])

    @property
    def input_dim(self) -> int:
        """The input dimension d."""
        return int(self.weights[0].shape[1])

    @property
    def output_dim(self) -> int:
        """The number of outputs K."""
        return int(self.weights[-1].shape[0])

    @functools.cached_property
    def layout(self) -> MLPLayout:
        """The flat-vector layout (made once: shapes never change)."""
        return MLPLayout((self.input_dim, *self.widths, self.output_dim),
                         tuple(b is not None for b in self.biases))

    @property
    def num_params(self) -> int:
        """The number of parameters P."""
        return self.layout.num_params

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters."""
        return self.weights[0].dtype

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.weights[0].device

    def incoming(self, layer: int) -> torch.Tensor:
        """Augmented incoming weights [W_j, b_j] of hidden layer j, shape (n_{j+1}, D_j)."""
        W, b = self.weights[layer], self.biases[layer]
        return W if b is None else torch.cat([W, b.unsqueeze(1)], dim=1)

    # ------------------------------------------------------------------------ outputs
    def hidden(self, X: Any) -> list[torch.Tensor]:
        """The layer outputs [h_0 = X, h_1, …, h_{L−1}, g]; g is the output z_L, (n, K)."""
        x = X if isinstance(X, torch.Tensor) else as_tensor(X, "X", self.dtype, self.device)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise DataError(
                f"X must have shape (n, {self.input_dim}) for this network, got {tuple(x.shape)}"
            )
        out = [x]
        for j, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = out[-1] @ W.T
            if b is not None:
                z = z + b
            out.append(z if j == self.depth - 1 else self.activation(z))
        return out

    def __call__(self, X: Any) -> torch.Tensor:
        """Outputs g(θ, x_i) for inputs X (n, d), shape (n, K)."""
        return self.hidden(X)[-1]

    # -------------------------------------------------------------------- flat vector
    def flatten(self) -> torch.Tensor:
        """The parameters as one vector in the flat layout."""
        return self.layout.join(list(zip(self.weights, self.biases, strict=True)))

    def unflatten(self, theta: torch.Tensor) -> MLP:
        """An MLP of the same layout and activation with parameters ``theta`` (P,)."""
        return MLP.from_flat(theta, self.layout, self.activation)

    @classmethod
    def from_flat(
        cls, theta: torch.Tensor, layout: MLPLayout, activation: str | Activation
    ) -> MLP:
        """The MLP with flat parameters ``theta`` in ``layout``."""
        parts = layout.split(theta)
        return cls([W for W, _ in parts], [b for _, b in parts], activation)

    def replace(self, **changes: Any) -> MLP:
        """A copy with some of weights, biases, activation replaced.

        >>> MLP([[[1.0]], [[2.0]]]).replace(activation="erf").activation.name
        'erf'
        """
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(changes)
        return MLP(**fields)

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> MLP:
        """The same network with parameters in another dtype or on another device."""
        return MLP(self.weights, self.biases, self.activation, dtype=dtype or self.dtype,
                   device=device)

    # ------------------------------------------------------------------- conversions
    def to_torch(self) -> torch.nn.Sequential:
        """``nn.Sequential(Linear, σ, …, Linear)`` with these parameters (same dtype)."""
        return _interop.to_sequential(Layers(self.weights, self.biases, self.activation))

    @classmethod
    def from_torch(cls, module: torch.nn.Module, dtype: torch.dtype | None = torch.float64) -> MLP:
        """Read a module made of Linear, σ, Linear, σ, …, Linear (one activation throughout).

        Checked by comparing outputs on random probe inputs.  ``dtype=None`` keeps the
        module's dtype; the default casts to float64 for analysis.

        Raises:
            ModelError: other modules (convolutions, dropout, normalisation), layers that do
                not chain, a forward that computes something else.
            ActivationError: an unsupported activation module, or different ones per layer.
        """
        mlp = cls._from_layers(_interop.from_module(module), dtype)
        param = next(module.parameters())
        _interop.check_same_function(
            module, lambda X: mlp(X.to(mlp.dtype).to(mlp.device)), mlp.input_dim,
            param.dtype, param.device,
        )
        return mlp

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        activation: str | Activation,
        dtype: torch.dtype | None = torch.float64,
    ) -> MLP:
        """Read the 2-d ``*weight`` entries of a state dict in key order, with their biases."""
        return cls._from_layers(_interop.from_state_dict(state_dict, activation), dtype)

    @classmethod
    def from_sklearn(cls, estimator: Any) -> MLP:
        """Read a fitted scikit-learn ``MLPRegressor`` or ``MLPClassifier`` (any depth).

        The outputs are those before scikit-learn's output activation (softmax or logistic
        for classifiers); the loss it minimises is :func:`sklearn_loss`.  Checked against
        the estimator's predictions on probe inputs.

        Raises:
            ModelError: another estimator, an unfitted one, a multilabel classifier.
            ActivationError: an activation saddlemap does not know.
        """
        mlp = cls._from_layers(_interop.from_sklearn(estimator), torch.float64)
        X = np.random.default_rng(0).standard_normal((7, mlp.input_dim))
        expected = _interop.sklearn_outputs(estimator, X.astype(estimator.coefs_[0].dtype))
        transform = _interop.output_transform(sklearn_loss(estimator))
        ours = transform(mlp(torch.from_numpy(X))).numpy()
        tol = 1e-10 if estimator.coefs_[0].dtype == np.float64 else 1e-4
        if expected.shape != ours.shape or float(np.abs(expected - ours).max()) > tol * (
            1.0 + float(np.abs(expected).max())
        ):
            raise ModelError(
                f"the {type(estimator).__name__}'s outputs do not match the network read from it"
            )
        return mlp

    @classmethod
    def from_two_layer(cls, net: TwoLayerNet) -> MLP:
        """The same network as an MLP of depth 2: W_0 = W, b_0 = b, W_1 = aᵀ, b_1 = c."""
        return cls([net.W, net.a.T], [net.b, net.c], net.activation)

    def to_two_layer(self) -> TwoLayerNet:
        """This network as a :class:`~saddlemap.TwoLayerNet` (depth 2 only).

        Raises:
            ModelError: depth above 2.
        """
        if self.depth != 2:
            raise ModelError(f"only a depth-2 MLP is a two-layer network; this one has depth "
                             f"{self.depth} (widths {self.widths})")
        return TwoLayerNet(self.weights[1].T, self.weights[0], b=self.biases[0],
                           c=self.biases[1], activation=self.activation)

    @classmethod
    def _from_layers(cls, layers: Layers, dtype: torch.dtype | None) -> MLP:
        return cls(layers.weights, layers.biases, layers.activation, dtype=dtype)

    def __repr__(self) -> str:
        sizes = "-".join(str(s) for s in self.layout.sizes)
        bias = "".join("b" if b else "-" for b in self.layout.bias)
        return (f"MLP({sizes}, bias={bias}, activation={self.activation.name!r}, "
                f"dtype={self.dtype})")


def sklearn_loss(estimator: Any) -> str:
    """The loss a fitted scikit-learn MLP minimises, as a saddlemap loss name.

    ``"mse"`` for a regressor, ``"cross_entropy"`` for a softmax classifier, ``"bce"`` for a
    binary one.

    Raises:
        ModelError: another estimator, an unfitted one, a multilabel classifier.
    """
    return _interop.sklearn_loss(estimator)
