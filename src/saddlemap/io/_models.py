"""Model readers: :func:`load_model`, its suffix → reader registry, and :func:`export_model`.

A torch module or state_dict in memory is read directly; a file is read by the reader its
suffix names in :data:`MODEL_READERS`.
"""

from __future__ import annotations

import os
import pickle
import re
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
    check_width,
    choose_activation,
    dtype_note,
    one_line,
    original_dtype,
    read_npz,
    refusal,
    require,
    with_path,
)
from ._sklearn import (
    export_sklearn,
    from_sklearn,
    is_sklearn,
    read_pickled_estimator,
    read_skops_estimator,
)

__all__ = ["MODEL_READERS", "export_model", "load_model"]

#: A model file reader: the path, the activation the caller gave (or None), and whether
#: the caller trusts the file enough to unpickle it.
ModelReader = Callable[[Path, str | None, bool], LoadedModel]

#: Where a refused torch file can go instead.
TORCH_SAFE_FORMATS = "a state dict (torch.save(module.state_dict(), ...)) or .safetensors"


def load_model(
    model: object | PathLike, activation: str | None = None, *, trust_pickle: bool = False
) -> LoadedModel:
    """Read a two-layer model into a float64 :class:`~saddlemap.TwoLayerNet`.

    Accepted models:

    * a ``torch.nn.Module`` whose children are exactly ``Linear``, an activation, ``Linear``
      (checked by comparing outputs on probe inputs);
    * a torch ``state_dict`` (a mapping of tensors with two weight matrices, first layer
      first); ``activation`` is then required;
    * a fitted scikit-learn ``MLPRegressor`` or ``MLPClassifier`` with one hidden layer;
    * a file: ``.pt``/``.pth`` holding a state_dict (or, trusted, a whole module),
      ``.safetensors`` (a state_dict; the activation from the metadata key ``"activation"``
      unless given), ``.npz`` (arrays ``a``, ``W``, optional ``b``, ``c`` and the string
      ``activation``), as written by :func:`~saddlemap.io.save_model`, a scikit-learn MLP
      saved with skops (``.skops``) or, trusted, pickled (``.pkl``, ``.pickle``,
      ``.joblib``).

    Loading a file never runs code from it unless ``trust_pickle=True``: ``.pt``/``.pth``
    files are read with ``torch.load(weights_only=True)`` (tensors and containers only, so
    a state dict), ``.skops`` files with ``skops.io.load`` trusting only the types a
    scikit-learn MLP is made of, ``.npz`` files without unpickling, and ``.pkl`` files not
    at all.  A file that needs unpickling is refused with a :class:`ModelError` naming the
    two ways forward: ``trust_pickle=True`` (the command line's ``--trust-pickle``), or a
    safe format (a state dict or ``.safetensors`` for torch, ``.skops`` for scikit-learn).

    Args:
        model: the model object or a path to a model file.
        activation: activation name; needed for a state_dict, and overrides the name stored
            in a ``.safetensors`` or ``.npz`` file.  Refused for scikit-learn models and
            whole torch modules, which record their own.
        trust_pickle: unpickle the file (a whole torch module in ``.pt``/``.pth``, a
            ``.pkl``/``.pickle``/``.joblib`` estimator; any type in a ``.skops`` file).
            Unpickling runs code from the file: pass True only for files you trust.
            Objects in memory are not files, and ignore it.

    Returns:
        The :class:`~saddlemap.io.LoadedModel`.

    Raises:
        ModelError: not a two-layer network, an unfitted or unsupported estimator, a
            missing, empty, corrupt or unsupported file, a state_dict without an activation,
            width 0, a file that needs unpickling and is not trusted.
        ActivationError: an activation saddlemap does not know (e.g. ``nn.ELU``).

    >>> import torch
    >>> module = torch.nn.Sequential(
    ...     torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    >>> loaded = load_model(module)
    >>> loaded.kind.value, loaded.net.width, loaded.net.dtype, loaded.loss
    ('torch', 3, torch.float64, 'mse')
    """
    if isinstance(model, (str, os.PathLike)):
        return _load_model_file(Path(model), activation, trust_pickle)
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
    check_width(path, net)
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


def _check_state_dict_width(path: Path | None, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse a first layer without rows (width 0) before torch builds modules from it."""
    weights = [v for k, v in tensors.items() if k.endswith("weight") and v.ndim == 2]
    if weights and weights[0].shape[0] == 0:
        raise with_path(path, ModelError(
            f"the network has width 0 (W has shape {tuple(weights[0].shape)}): no hidden neurons"
        ))


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
        _check_state_dict_width(path, tensors)
        net = TwoLayerNet.from_state_dict(tensors, activation_from_str(activation))
    except SaddlemapError as exc:
        raise with_path(path, exc) from exc
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # torch on odd shapes
        raise with_path(path, ModelError(f"not a two-layer state_dict: {one_line(exc)}")) from exc
    check_width(path, net)
    converted = dtype_note(t.dtype for t in tensors.values())
    notes = (*extra_notes, *(() if converted is None else (converted,)), NO_LOSS_NOTE)
    first = next(iter(tensors.values()), None)
    return LoadedModel(
        net, kind, "mse", None, None if path is None else str(path), notes,
        original_dtype(t.dtype for t in tensors.values()),
        CPU if first is None else first.device,
    )


# ----------------------------------------------------------------------- file readers
def _weights_only_failure(path: Path, exc: pickle.UnpicklingError) -> ModelError:
    """The error for a file ``torch.load(weights_only=True)`` would not read.

    A global it refused (a class or function the pickle names, such as a module's class)
    means the file holds pickled Python objects: refused, with the ways forward.  Any other
    failure is a file that is not a torch checkpoint.  torch's own advice (retry with
    ``weights_only=False``) is never passed on: that runs code from the file.
    """
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        holds = f"a pickle of Python objects ({found.group(1)})"
        return refusal(path, holds, TORCH_SAFE_FORMATS)
    after = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler" in text else ""
    reason = next((line.strip() for line in after.splitlines() if line.strip()), "")
    detail = f" ({reason})" if reason and not reason.startswith("Check the documentation") else ""
    return ModelError(f"{path}: cannot read as a torch file: not a torch checkpoint{detail}")


def _torch_load(path: Path, trust_pickle: bool) -> object:
    """``torch.load`` of the file: tensors and containers only unless the file is trusted."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if not trust_pickle and "Weights only load failed" in str(exc):
            raise _weights_only_failure(path, exc) from exc
        raise ModelError(f"{path}: cannot read as a torch file: {one_line(exc)}") from exc
    except Exception as exc:
        raise ModelError(f"{path}: cannot read as a torch file: {one_line(exc)}") from exc


def _read_torch_file(path: Path, activation: str | None, trust_pickle: bool) -> LoadedModel:
    """A ``.pt``/``.pth`` file holding a state_dict, or (trusted) a whole module."""
    obj = _torch_load(path, trust_pickle)
    if isinstance(obj, nn.Module):
        return _from_module(obj, path, activation)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        # saddlemap's own checkpoint: the state_dict and the activation's name
        stored = obj.get("activation")
        chosen, notes = choose_activation(path, activation,
                                          stored if isinstance(stored, str) else None,
                                          "in the checkpoint")
        return _from_state_dict(obj["state_dict"], chosen, ModelKind.STATE_DICT, path, notes)
    if isinstance(obj, Mapping):
        return _from_state_dict(obj, activation, ModelKind.STATE_DICT, path, ())
    raise ModelError(f"{path}: holds a {type(obj).__name__}, expected an nn.Module or a state_dict")


def _read_safetensors(path: Path, activation: str | None, trust_pickle: bool) -> LoadedModel:
    """A ``.safetensors`` state_dict, the activation from its metadata unless given.

    The format holds tensors and strings only: ``trust_pickle`` does not change anything.
    """
    del trust_pickle
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


def _read_npz_model(path: Path, activation: str | None, trust_pickle: bool) -> LoadedModel:
    """An ``.npz`` archive as written by :func:`~saddlemap.io.save_model`.

    Object arrays are never unpickled, trusted or not: saddlemap's ``.npz`` holds numbers
    and one string.
    """
    del trust_pickle
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
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # torch on odd shapes
        raise ModelError(f"{path}: not a two-layer network: {one_line(exc)}") from exc
    check_width(path, net)
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
    ".skops": read_skops_estimator,
}


def _load_model_file(path: Path, activation: str | None, trust_pickle: bool) -> LoadedModel:
    check_file(path, ModelError)
    reader = MODEL_READERS.get(path.suffix.lower())
    if reader is None:
        raise ModelError(
            f"{path}: unsupported model file suffix {path.suffix!r}; expected .pt, .pth, "
            ".safetensors, .npz, or a scikit-learn model (.skops, or a pickle: .pkl)"
        )
    return reader(path, activation, trust_pickle)


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
