"""The two-layer network g(θ, x) = Σ_k a_k σ(w_kᵀx + b_k) + c.

Parameters live in an explicit container, :class:`TwoLayerNet`, with output weights
``a`` (m × K), input weights ``W`` (m × d), optional hidden biases ``b`` (m,) and optional
output bias ``c`` (K,).  Hidden biases are absorbed into augmented weights w̃_k = (w_k, b_k)
acting on augmented inputs x̃ = (x, 1) (docs/theory.md §1); :attr:`TwoLayerNet.W_aug` is that matrix.

**Flat layout** (stable, used by every Hessian and vector in the library): neuron by
neuron, each block ``[a_k (K), w_k (d), b_k (1, if hidden bias)]``, then ``c (K)`` last if
there is an output bias.  So P = m (K + d + [b]) + [c] K.

>>> import torch
>>> net = TwoLayerNet([1.0, -2.0], [[0.5], [1.5]], activation="tanh")
>>> net.width, net.input_dim, net.output_dim, net.num_params
(2, 1, 1, 4)
>>> net.flatten().tolist()
[1.0, 0.5, -2.0, 1.5]
>>> net.unflatten(net.flatten()).flatten().tolist()
[1.0, 0.5, -2.0, 1.5]
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ._torch_interop import Parts, check_same_function, from_module, from_state_dict, to_sequential
from .activations import Activation, get_activation
from .data import as_tensor
from .errors import DataError, ModelError

__all__ = ["ParamLayout", "TwoLayerNet"]


@dataclass(frozen=True)
class ParamLayout:
    """Positions of the parameters in the flat vector (see the module docstring).

    >>> lay = ParamLayout(width=3, input_dim=2, output_dim=1, hidden_bias=True, output_bias=True)
    >>> lay.neuron_size, lay.num_params, lay.neuron_slice(1)
    (4, 13, slice(4, 8, None))
    """

    width: int
    input_dim: int
    output_dim: int
    hidden_bias: bool = False
    output_bias: bool = False

    @property
    def aug_dim(self) -> int:
        """D = d + 1 with a hidden bias, else d: the length of w̃_k."""
        return self.input_dim + int(self.hidden_bias)

    @property
    def neuron_size(self) -> int:
        """K + D: parameters of one neuron (a_k, w̃_k)."""
        return self.output_dim + self.aug_dim

    @property
    def num_params(self) -> int:
        """P, the length of the flat vector."""
        return self.width * self.neuron_size + self.output_dim * int(self.output_bias)

    def neuron_slice(self, k: int) -> slice:
        """Slice of neuron k's block (a_k, w_k, b_k) in the flat vector."""
        q = self.neuron_size
        return slice(k * q, (k + 1) * q)

    def split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split vectors (..., P) into a (..., m, K), W̃ (..., m, D) and c (..., K) views.

        c has size 0 in its last axis when there is no output bias.
        """
        if theta.shape[-1] != self.num_params:
            raise DataError(
                f"vector has length {theta.shape[-1]}, the network has {self.num_params} "
                "parameters"
            )
        m, q, k = self.width, self.neuron_size, self.output_dim
        blocks = theta[..., : m * q].reshape(*theta.shape[:-1], m, q)
        return blocks[..., :k], blocks[..., k:], theta[..., m * q :]

    def join(self, a: torch.Tensor, w_aug: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`split`: (..., m, K), (..., m, D), (..., K or 0) → (..., P)."""
        blocks = torch.cat([a, w_aug], dim=-1)
        return torch.cat([blocks.flatten(-2), c], dim=-1)


def _param(value: Any, name: str, dtype: torch.dtype | None, device: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor) and dtype is None:
        tensor = value.detach()
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.float64)
    else:
        tensor = as_tensor(value, name, dtype or torch.float64, device)
    if device is not None:
        tensor = tensor.to(device)
    if not bool(torch.isfinite(tensor).all()):
        raise ModelError(f"parameter {name} contains NaN or Inf")
    return tensor


@dataclass(frozen=True, eq=False)
class TwoLayerNet:
    """Parameters of a two-layer network and its activation.

    Args:
        a: output weights, (m,) for one output or (m, K).
        W: input weights, (m, d).
        b: hidden biases (m,), or None.
        c: output bias (K,), or None.
        activation: a name from :func:`~saddlemap.available_activations` or an
            :class:`~saddlemap.Activation`.
        dtype: cast the parameters to this dtype; by default tensors keep theirs and
            other array-likes become float64.
        device: move the parameters there.

    Raises:
        ModelError: shapes that do not fit together, or NaN/Inf parameters.
    """

    a: torch.Tensor
    W: torch.Tensor
    b: torch.Tensor | None
    c: torch.Tensor | None
    activation: Activation

    def __init__(
        self,
        a: Any,
        W: Any,
        b: Any = None,
        c: Any = None,
        activation: str | Activation = "tanh",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        w_t = _param(W, "W", dtype, device)
        if w_t.ndim != 2:
            raise ModelError(f"W must have shape (m, d), got {tuple(w_t.shape)}")
        dtype, device = w_t.dtype, w_t.device
        a_t = _param(a, "a", dtype, device)
        if a_t.ndim == 1:
            a_t = a_t.unsqueeze(1)
        if a_t.ndim != 2 or a_t.shape[0] != w_t.shape[0]:
            raise ModelError(
                f"a must have shape ({w_t.shape[0]},) or ({w_t.shape[0]}, K) to match W of "
                f"shape {tuple(w_t.shape)}, got {tuple(a_t.shape)}"
            )
        b_t = None if b is None else _param(b, "b", dtype, device).reshape(-1)
        if b_t is not None and b_t.shape[0] != w_t.shape[0]:
            raise ModelError(f"b must have shape ({w_t.shape[0]},), got {tuple(b_t.shape)}")
        c_t = None if c is None else _param(c, "c", dtype, device).reshape(-1)
        if c_t is not None and c_t.shape[0] != a_t.shape[1]:
            raise ModelError(f"c must have shape ({a_t.shape[1]},), got {tuple(c_t.shape)}")
        object.__setattr__(self, "a", a_t)
        object.__setattr__(self, "W", w_t)
        object.__setattr__(self, "b", b_t)
        object.__setattr__(self, "c", c_t)
        object.__setattr__(self, "activation", get_activation(activation))

    # ----------------------------------------------------------------- shape and layout
    @property
    def width(self) -> int:
        """m, the number of hidden neurons."""
        return int(self.W.shape[0])

    @property
    def input_dim(self) -> int:
        """d, the input dimension."""
        return int(self.W.shape[1])

    @property
    def output_dim(self) -> int:
        """K, the number of outputs."""
        return int(self.a.shape[1])

    @functools.cached_property
    def layout(self) -> ParamLayout:
        """The flat-vector layout of this network (made once: shapes never change)."""
        return ParamLayout(
            self.width, self.input_dim, self.output_dim, self.b is not None, self.c is not None
        )

    @property
    def num_params(self) -> int:
        """P, the number of parameters."""
        return self.layout.num_params

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters."""
        return self.W.dtype

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.W.device

    @property
    def W_aug(self) -> torch.Tensor:
        """Augmented input weights W̃ = [W, b], shape (m, D)."""
        if self.b is None:
            return self.W
        return torch.cat([self.W, self.b.unsqueeze(1)], dim=1)

    def augment(self, X: torch.Tensor) -> torch.Tensor:
        """Augmented inputs X̃ = [X, 1] when there is a hidden bias, else X."""
        if self.b is None:
            return X
        return torch.cat([X, torch.ones_like(X[:, :1])], dim=1)

    # ------------------------------------------------------------------------ outputs
    def __call__(self, X: Any) -> torch.Tensor:
        """Outputs g(θ, x_i) for inputs X (n, d), shape (n, K)."""
        x = X if isinstance(X, torch.Tensor) else as_tensor(X, "X", self.dtype, self.device)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise DataError(
                f"X must have shape (n, {self.input_dim}) for this network, got {tuple(x.shape)}"
            )
        g = self.activation(x @ self.W.T + (0.0 if self.b is None else self.b)) @ self.a
        return g if self.c is None else g + self.c

    # -------------------------------------------------------------------- flat vector
    def flatten(self) -> torch.Tensor:
        """The parameters as one vector in the documented flat layout."""
        c = self.c if self.c is not None else self.a.new_zeros(0)
        return self.layout.join(self.a, self.W_aug, c)

    def unflatten(self, theta: torch.Tensor) -> TwoLayerNet:
        """A network of the same layout and activation with parameters ``theta`` (P,)."""
        return TwoLayerNet.from_flat(theta, self.layout, self.activation)

    @classmethod
    def from_flat(
        cls, theta: torch.Tensor, layout: ParamLayout, activation: str | Activation
    ) -> TwoLayerNet:
        """The network with flat parameters ``theta`` in ``layout``."""
        a, w_aug, c = layout.split(theta)
        d = layout.input_dim
        return cls(
            a, w_aug[:, :d],
            b=w_aug[:, d] if layout.hidden_bias else None,
            c=c if layout.output_bias else None,
            activation=activation,
        )

    def replace(self, **changes: Any) -> TwoLayerNet:
        """A copy with some of a, W, b, c, activation replaced.

        >>> TwoLayerNet([1.0], [[2.0]]).replace(activation="erf").activation.name
        'erf'
        """
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(changes)
        return TwoLayerNet(**fields)

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> TwoLayerNet:
        """The same network with parameters in another dtype or on another device."""
        return TwoLayerNet(
            self.a, self.W, self.b, self.c, self.activation,
            dtype=dtype or self.dtype, device=device,
        )

    # ------------------------------------------------------------------- torch interop
    def to_torch(self) -> torch.nn.Sequential:
        """``nn.Sequential(Linear(d, m), activation, Linear(m, K))`` with these parameters."""
        return to_sequential(Parts(self.a, self.W, self.b, self.c, self.activation))

    @classmethod
    def from_torch(
        cls, module: torch.nn.Module, dtype: torch.dtype | None = torch.float64
    ) -> TwoLayerNet:
        """Read a module made of exactly Linear → activation → Linear.

        The conversion is checked by comparing outputs on random probe inputs.  ``dtype=None``
        keeps the module's dtype; the default casts to float64 for analysis.
        """
        net = cls._from_parts(from_module(module), dtype)
        check_same_function(module, lambda X: net(X.to(net.dtype).to(net.device)), net.input_dim)
        return net

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        activation: str | Activation,
        dtype: torch.dtype | None = torch.float64,
    ) -> TwoLayerNet:
        """Read the two Linear layers of a ``state_dict`` (their weights in key order)."""
        return cls._from_parts(from_state_dict(state_dict, activation), dtype)

    @classmethod
    def _from_parts(cls, parts: Parts, dtype: torch.dtype | None) -> TwoLayerNet:
        return cls(parts.a, parts.W, b=parts.b, c=parts.c, activation=parts.activation,
                   dtype=dtype)

    def __repr__(self) -> str:
        extras = "".join(
            f", {name}=True" for name, t in (("hidden_bias", self.b), ("output_bias", self.c))
            if t is not None
        )
        return (
            f"TwoLayerNet(m={self.width}, d={self.input_dim}, K={self.output_dim}, "
            f"activation={self.activation.name!r}{extras}, dtype={self.dtype})"
        )
