"""Model readers: :func:`load_model`, its suffix → reader registry, and :func:`export_model`.

A torch module or state_dict in memory is read directly; a file is read by the reader its
suffix names in :data:`MODEL_READERS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, SaddlemapError
from ..network import TwoLayerNet
from ..verdicts import ModelKind, Note, NoteCode
from ._common import (
    CPU,
    NO_LOSS_NOTE,
    LoadedModel,
    PathLike,
    activation_from_str,
    check_file,
    choose_activation,
    dtype_note,
    one_line,
    original_dtype,
    read_npz,
    require,
    with_path,
)
from ._sklearn import export_sklearn, from_sklearn, is_sklearn, read_pickled_estimator

__all__ = ["MODEL_READERS", "export_model", "load_model"]

#: A model file reader: the path and the activation the caller gave (or None).
ModelReader = Callable[[Path, str | None], LoadedModel]


def load_model(model: object | PathLike, activation: str | None = None) -> LoadedModel:
    """Read a two-layer model into a float64 :class:`~saddlemap.TwoLayerNet`.

    Accepted models:

    * a ``torch.nn.Module`` whose children are exactly ``Linear``, an activation, ``Linear``
      (checked by comparing outputs on probe inputs);
    * a torch ``state_dict`` (a mapping of tensors with two weight matrices, first layer
      first); ``activation`` is then required;
    * a fitted scikit-learn ``MLPRegressor`` or ``MLPClassifier`` with one hidden layer;
    * a file: ``.pt``/``.pth`` holding a whole module or a state_dict, ``.safetensors``
      (a state_dict; the activation from the metadata key ``"activation"`` unless given),
      ``.npz`` (arrays ``a``, ``W``, optional ``b``, ``c`` and the string
      ``activation``), as written by :func:`~saddlemap.io.save_model`, or a pickled
      scikit-learn MLP (``.pkl``, ``.pickle``, ``.joblib`` written with ``pickle``).

    Warning:
        ``.pt``/``.pth`` files are read with ``torch.load(weights_only=False)`` and ``.pkl``
        files with ``pickle``: both unpickle arbitrary Python objects and can run code, so
        use them only on trusted files.

    Args:
        model: the model object or a path to a model file.
        activation: activation name; needed for a state_dict, and overrides the name stored
            in a ``.safetensors`` or ``.npz`` file.

    Returns:
        The :class:`~saddlemap.io.LoadedModel`.

    Raises:
        ModelError: not a two-layer network, an unfitted or unsupported estimator, a
            missing, empty, corrupt or unsupported file, a state_dict without an activation.
        ActivationError: an activation saddlemap does not know (e.g. ``nn.ELU``).

    >>> import torch
    >>> module = torch.nn.Sequential(
    ...     torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    >>> loaded = load_model(module)
    >>> loaded.kind.value, loaded.net.width, loaded.net.dtype, loaded.loss
    ('torch', 3, torch.float64, 'mse')
    """
    if isinstance(model, (str, os.PathLike)):
        return _load_model_file(Path(model), activation)
    if isinstance(model, nn.Module):
        return _from_module(model, None, activation)
    if is_sklearn(model):
        if activation is not None:
            raise ModelError("activation cannot be given for a scikit-learn model")
        return from_sklearn(model)
    if isinstance(model, Mapping):
        return _from_state_dict(model, activation, ModelKind.STATE_DICT, None, ())
    raise ModelError(
        f"cannot load a model from an object of type {type(model).__name__}; expected a torch "
        "module, a state_dict, a fitted MLPRegressor/MLPClassifier or a file path"
    )


# ------------------------------------------------------------------ torch in memory
def _torch_notes(module: nn.Module) -> list[Note]:
    """The dtype conversion and Softplus threshold notes of a torch module."""
    notes = []
    converted = dtype_note(p.dtype for p in module.parameters())
    if converted is not None:
        notes.append(converted)
    for child in module.children():
        if isinstance(child, nn.Softplus):
            notes.append(Note(
                NoteCode.SOFTPLUS_THRESHOLD,
                f"torch's Softplus returns z above threshold={child.threshold}; saddlemap "
                "uses the exact softplus (they differ by < exp(-threshold) there)",
            ))
    return notes


def _from_module(module: nn.Module, path: Path | None, activation: str | None) -> LoadedModel:
    if activation is not None:
        raise with_path(
            path, ModelError("activation cannot be given for a torch module; it has its own")
        )
    try:
        net = TwoLayerNet.from_torch(module)
    except SaddlemapError as exc:
        raise with_path(path, exc) from exc
    notes = (*_torch_notes(module), NO_LOSS_NOTE)
    first = next(module.parameters(), None)
    return LoadedModel(
        net, ModelKind.TORCH, "mse", module, None if path is None else str(path), notes,
        original_dtype(p.dtype for p in module.parameters()),
        CPU if first is None else first.device,
    )


def _ordered_weights(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state_dict as tensors, its two weights put in chaining order when keys lost it.

    When both orders chain (d = K), the key order decides.
    """
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelError(
                f"a state_dict maps names to tensors; entry {key!r} is a {type(value).__name__}"
            )
        tensors[key] = value
    weights = [k for k, v in tensors.items() if k.endswith("weight") and v.ndim == 2]
    if len(weights) == 2:
        first, second = (tensors[k] for k in weights)
        if second.shape[1] != first.shape[0] and first.shape[1] == second.shape[0]:
            # Key order was lost (safetensors sorts names): put the first layer first.
            tensors = {weights[1]: second, weights[0]: first} | {
                k: v for k, v in tensors.items() if k not in weights
            }
    return tensors


def _from_state_dict(
    state_dict: Mapping[str, Any],
    activation: str | None,
    kind: ModelKind,
    path: Path | None,
    extra_notes: tuple[Note, ...],
) -> LoadedModel:
    if activation is None:
        raise with_path(
            path, ModelError("a state_dict does not record its activation; pass activation=")
        )
    try:
        tensors = _ordered_weights(state_dict)
        net = TwoLayerNet.from_state_dict(tensors, activation_from_str(activation))
    except SaddlemapError as exc:
        raise with_path(path, exc) from exc
    converted = dtype_note(t.dtype for t in tensors.values())
    notes = (*extra_notes, *(() if converted is None else (converted,)), NO_LOSS_NOTE)
    first = next(iter(tensors.values()), None)
    return LoadedModel(
        net, kind, "mse", None, None if path is None else str(path), notes,
        original_dtype(t.dtype for t in tensors.values()),
        CPU if first is None else first.device,
    )


# ----------------------------------------------------------------------- file readers
def _read_torch_file(path: Path, activation: str | None) -> LoadedModel:
    """A ``.pt``/``.pth`` file holding a whole module or a state_dict (trusted files only)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read as a torch file: {one_line(exc)}") from exc
    if isinstance(obj, nn.Module):
        return _from_module(obj, path, activation)
    if isinstance(obj, Mapping):
        return _from_state_dict(obj, activation, ModelKind.STATE_DICT, path, ())
    raise ModelError(f"{path}: holds a {type(obj).__name__}, expected an nn.Module or a state_dict")


def _read_safetensors(path: Path, activation: str | None) -> LoadedModel:
    """A ``.safetensors`` state_dict, the activation from its metadata unless given."""
    st_torch = require("safetensors.torch", "safetensors")
    safetensors = require("safetensors", "safetensors")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = st_torch.load_file(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read as a safetensors file: {one_line(exc)}") from exc
    chosen, notes = choose_activation(
        path, activation, metadata.get("activation"), "in the file's metadata"
    )
    return _from_state_dict(tensors, chosen, ModelKind.SAFETENSORS, path, notes)


def _read_npz_model(path: Path, activation: str | None) -> LoadedModel:
    """An ``.npz`` archive as written by :func:`~saddlemap.io.save_model`."""
    arrays = read_npz(path, ModelError)
    missing = [key for key in ("a", "W") if key not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "nothing"
        raise ModelError(f"{path}: missing array {missing[0]!r} (found: {found})")
    stored = None
    if "activation" in arrays:
        value = arrays["activation"]
        if value.dtype.kind != "U" or value.ndim != 0:
            raise ModelError(f"{path}: 'activation' must be a string, got {value.dtype}")
        stored = str(value)
    chosen, notes = choose_activation(path, activation, stored, "array in the file")
    params = [key for key in ("a", "W", "b", "c") if key in arrays]
    try:
        for key in params:
            if arrays[key].dtype.kind not in "fiu":
                raise ModelError(f"{key} must be real numbers, got dtype {arrays[key].dtype}")
        net = TwoLayerNet(
            arrays["a"], arrays["W"], b=arrays.get("b"), c=arrays.get("c"),
            activation=activation_from_str(chosen), dtype=torch.float64,
        )
    except SaddlemapError as exc:
        raise with_path(path, exc) from exc
    converted = dtype_note(arrays[key].dtype for key in params)
    notes = (*notes, *(() if converted is None else (converted,)), NO_LOSS_NOTE)
    return LoadedModel(
        net, ModelKind.NPZ, "mse", None, str(path), notes,
        original_dtype(arrays[key].dtype for key in params),
    )


#: The model file readers, by lower-case suffix.
MODEL_READERS: dict[str, ModelReader] = {
    ".pt": _read_torch_file,
    ".pth": _read_torch_file,
    ".safetensors": _read_safetensors,
    ".npz": _read_npz_model,
    ".pkl": read_pickled_estimator,
    ".pickle": read_pickled_estimator,
    ".joblib": read_pickled_estimator,
}


def _load_model_file(path: Path, activation: str | None) -> LoadedModel:
    check_file(path, ModelError)
    reader = MODEL_READERS.get(path.suffix.lower())
    if reader is None:
        raise ModelError(
            f"{path}: unsupported model file suffix {path.suffix!r}; "
            "expected .pt, .pth, .safetensors, .npz or a pickled scikit-learn model (.pkl)"
        )
    return reader(path, activation)


# ---------------------------------------------------------------------- export_model
def export_model(net: TwoLayerNet, like: LoadedModel) -> object:
    """The network ``net`` (e.g. a reduced one) as the same kind of model ``like`` came from.

    For a scikit-learn model: a fitted estimator of the same class and settings, with
    ``hidden_layer_sizes=(m,)`` and ``net``'s weights, whose ``predict`` /
    ``predict_proba`` compute ``net``'s outputs (through the output activation).  Training
    history attributes (``loss_curve_``, ``n_iter_``, ...) are the original's.
    For every other kind: ``nn.Sequential(Linear, activation, Linear)`` in the original
    model's dtype and on its device (``like.dtype``, ``like.device``): a float32 model
    comes back float32 and runs on float32 inputs.

    Args:
        net: the network to export; same input and output dimensions as ``like.net``.
        like: the loaded model whose type to produce.

    Returns:
        The exported model.

    Raises:
        ModelError: dimensions that do not match ``like``, or an activation scikit-learn
            does not have.

    >>> import torch
    >>> like = load_model(torch.nn.Sequential(
    ...     torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)))
    >>> smaller = like.net.replace(a=like.net.a[:2], W=like.net.W[:2], b=like.net.b[:2])
    >>> export_model(smaller, like)[0]
    Linear(in_features=2, out_features=2, bias=True)
    """
    if (net.input_dim, net.output_dim) != (like.net.input_dim, like.net.output_dim):
        raise ModelError(
            f"the network has d={net.input_dim}, K={net.output_dim}; the {like.kind.value} "
            f"model has d={like.net.input_dim}, K={like.net.output_dim}"
        )
    if like.kind is ModelKind.SKLEARN:
        return export_sklearn(net, like)
    return net.to_torch().to(dtype=like.dtype, device=like.device)
