"""Model writers: :func:`save_model` and its suffix → writer registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from ..network import TwoLayerNet
from ._common import PathLike, activation_to_str, one_line, require

__all__ = ["MODEL_WRITERS", "save_model"]

#: A model file writer: the network and the file to write.
ModelWriter = Callable[[TwoLayerNet, Path], None]


def _write_npz(net: TwoLayerNet, path: Path) -> None:
    """Arrays ``a``, ``W``, ``b`` and ``c`` (when present) and the string ``activation``."""
    arrays: dict[str, Any] = {
        key: t.detach().cpu().numpy()
        for key, t in (("a", net.a), ("W", net.W), ("b", net.b), ("c", net.c))
        if t is not None
    }
    arrays["activation"] = np.array(activation_to_str(net.activation))
    np.savez(path, **arrays)


def _write_torch(net: TwoLayerNet, path: Path) -> None:
    """``torch.save`` of ``{"state_dict": ..., "activation": name}``: tensors and strings only.

    ``torch.load(path, weights_only=True)`` reads it without unpickling code, and
    ``net.to_torch()``-shaped modules take ``load_state_dict(checkpoint["state_dict"])``.
    """
    state = {k: v.detach().cpu() for k, v in net.to_torch().state_dict().items()}
    try:
        torch.save({"state_dict": state, "activation": activation_to_str(net.activation)}, path)
    except Exception as exc:
        raise ModelError(f"{path}: cannot save the model: {one_line(exc)}") from exc


def _write_safetensors(net: TwoLayerNet, path: Path) -> None:
    """The state_dict of ``net.to_torch()``, the activation in the metadata."""
    st_torch = require("safetensors.torch", "safetensors")
    name = activation_to_str(net.activation)
    state = {k: v.detach().cpu().contiguous() for k, v in net.to_torch().state_dict().items()}
    st_torch.save_file(state, str(path), metadata={"activation": name, "format": "pt"})


#: The model file writers, by lower-case suffix.
MODEL_WRITERS: dict[str, ModelWriter] = {
    ".npz": _write_npz,
    ".pt": _write_torch,
    ".pth": _write_torch,
    ".safetensors": _write_safetensors,
}


def save_model(net: TwoLayerNet, path: PathLike) -> None:
    """Write ``net`` to a file that :func:`load_model` reads back with identical parameters.

    The format follows the suffix:

    * ``.npz``: arrays ``a``, ``W``, ``b`` and ``c`` (when present) and the string
      ``activation``;
    * ``.pt``/``.pth``: ``torch.save`` of ``{"state_dict": ..., "activation": name}``, the
      state_dict of ``net.to_torch()``: tensors and strings, read with
      ``torch.load(weights_only=True)`` (no code runs);
    * ``.safetensors``: the state_dict of ``net.to_torch()``, the activation in the
      metadata key ``"activation"``.

    A leaky ReLU is named with its slope, e.g. ``"leaky_relu(0.2)"``.

    Args:
        net: the network.
        path: the file to write (overwritten if it exists).

    Raises:
        ModelError: an unsupported suffix, or an activation that a file cannot name
            (a custom activation outside the registry, for ``.npz`` and ``.safetensors``).
    """
    path = Path(path)
    writer = MODEL_WRITERS.get(path.suffix.lower())
    if writer is None:
        raise ModelError(
            f"{path}: unsupported model file suffix {path.suffix!r}; "
            "expected .npz, .pt, .pth or .safetensors"
        )
    writer(net, path)
