"""Load an MLP of any depth: torch modules and files, state dicts, scikit-learn estimators.

:func:`load_mlp` is :func:`saddlemap.load_model` for deep networks, with the same safety
rule: nothing is unpickled unless the caller passes ``trust_pickle=True``.  Torch files are
read with ``torch.load(weights_only=True)`` (a state dict, or saddlemap's checkpoint
``{"state_dict": ..., "activation": name}``), ``.safetensors`` files name their activation
in the metadata (key ``activation``) or take ``activation=``, ``.skops`` files are read
trusting only the types a scikit-learn MLP is made of, and pickles (``.pkl``, ``.pickle``,
``.joblib``, a whole pickled module in a ``.pt``) only when trusted.

>>> import os, tempfile, torch
>>> from saddlemap.deep import MLP
>>> mlp = MLP([[[1.0, 2.0]], [[3.0]], [[-1.0]]], activation="erf")
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "mlp.pt")
...     torch.save(mlp.to_torch().state_dict(), path)
...     loaded = load_mlp(path, activation="erf")
>>> loaded.net.widths, loaded.loss, loaded.net.flatten().tolist() == mlp.flatten().tolist()
((1, 1), 'mse', True)
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, SaddlemapError
from ..io._common import NO_LOSS_NOTE, check_file, dtype_note, one_line, require, with_path
from ..io._sklearn import PICKLE_SUFFIXES, is_sklearn, load_skops_mlp
from ..verdicts import Note
from .mlp import MLP, sklearn_loss

__all__ = ["LoadedMLP", "load_mlp"]

_SAFE = "a state dict (torch.save(module.state_dict(), ...)), .safetensors or .skops"


@dataclass(frozen=True, eq=False)
class LoadedMLP:
    """An MLP read by :func:`load_mlp`.

    Attributes:
        net: the network, in float64.
        loss: the loss it was trained with: read from a scikit-learn estimator, else
            ``"mse"`` (noted).
        source: the torch module or estimator it came from, if any.
        path: the file, if any.
        notes: what is worth knowing (a float32 original, an assumed loss).
    """

    net: MLP
    loss: str
    source: object | None
    path: str | None
    notes: tuple[Note, ...]


def _from_module(module: nn.Module, path: Path | None, activation: str | None) -> LoadedMLP:
    if activation is not None:
        raise with_path(path, ModelError("activation cannot be given for a torch module"))
    try:
        net = MLP.from_torch(module)
    except SaddlemapError as exc:
        raise with_path(path, exc) from exc
    notes = [n for n in (dtype_note(p.dtype for p in module.parameters()),) if n is not None]
    return LoadedMLP(net, "mse", module, None if path is None else str(path),
                     (*notes, NO_LOSS_NOTE))


def _from_state_dict(sd: Mapping[str, Any], activation: str | None,
                     path: Path | None) -> LoadedMLP:
    if activation is None:
        raise with_path(path, ModelError(
            "a state_dict does not record its activation; pass activation="))
    try:
        net = MLP.from_state_dict(sd, activation)
    except SaddlemapError as exc:
        raise with_path(path, exc) from exc
    except (RuntimeError, TypeError, IndexError) as exc:  # torch on odd shapes
        raise with_path(path, ModelError(f"not an MLP state_dict: {one_line(exc)}")) from exc
    notes = [n for n in (dtype_note(v.dtype for v in sd.values()),) if n is not None]
    return LoadedMLP(net, "mse", None, None if path is None else str(path),
                     (*notes, NO_LOSS_NOTE))


def _from_estimator(estimator: Any, path: Path | None) -> LoadedMLP:
    try:
        net, loss = MLP.from_sklearn(estimator), sklearn_loss(estimator)
    except SaddlemapError as exc:
        raise with_path(path, exc) from exc
    notes = [n for n in (dtype_note([estimator.coefs_[0].dtype]),) if n is not None]
    return LoadedMLP(net, loss, estimator, None if path is None else str(path), tuple(notes))


def _torch_file(path: Path, activation: str | None, trust_pickle: bool) -> LoadedMLP:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if not trust_pickle and found:  # a class the pickle names: Python objects inside
            raise ModelError(f"{path}: refused: the file holds pickled Python objects "
                             f"({found.group(1)}), and unpickling can run code; if you trust "
                             f"it, pass trust_pickle=True; else save {_SAFE}") from exc
        raise ModelError(f"{path}: cannot read as a torch file: not a torch checkpoint") from exc
    except Exception as exc:
        raise ModelError(f"{path}: cannot read as a torch file: {one_line(exc)}") from exc
    if isinstance(obj, nn.Module):
        return _from_module(obj, path, activation)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        stored = obj.get("activation")
        chosen = activation or (stored if isinstance(stored, str) else None)
        return _from_state_dict(obj["state_dict"], chosen, path)
    if isinstance(obj, Mapping):
        return _from_state_dict(obj, activation, path)
    raise ModelError(f"{path}: holds a {type(obj).__name__}, expected a module or a state_dict")


def _safetensors_file(path: Path, activation: str | None) -> LoadedMLP:
    st_torch = require("safetensors.torch", "safetensors")
    safetensors = require("safetensors", "safetensors")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = st_torch.load_file(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read as a safetensors file: {one_line(exc)}") from exc
    # safetensors sorts names: put the layers back in the order they chain
    return _from_state_dict(_chained(tensors), activation or metadata.get("activation"), path)


def _chained(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The 2-d weights put in an order in which they chain, the other entries after them.

    The first layer takes an input size no layer gives (else the first key); each next one
    takes the previous one's outputs (the first such key).  Key order breaks ties.
    """
    left = [k for k, v in tensors.items() if k.endswith("weight") and v.ndim == 2]
    outs = {tensors[k].shape[0] for k in left}
    order = [next((k for k in left if tensors[k].shape[1] not in outs), left[0])] if left else []
    left = [k for k in left if k not in order]
    while left:
        last = tensors[order[-1]].shape[0]
        pick = next((k for k in left if tensors[k].shape[1] == last), left[0])
        order.append(pick)
        left.remove(pick)
    return {**{k: tensors[k] for k in order},
            **{k: v for k, v in tensors.items() if k not in order}}


def _skops_file(path: Path, trust_pickle: bool) -> LoadedMLP:
    return _from_estimator(load_skops_mlp(path, trust_pickle), path)


def _pickle_file(path: Path, activation: str | None, trust_pickle: bool) -> LoadedMLP:
    if not trust_pickle:
        raise ModelError(f"{path}: refused: a pickle is read only with trust_pickle=True "
                         f"(unpickling runs code from the file); else save {_SAFE}")
    try:
        obj = pickle.loads(path.read_bytes())
    except Exception as exc:
        raise ModelError(f"{path}: cannot unpickle: {one_line(exc)}") from exc
    if isinstance(obj, nn.Module):
        return _from_module(obj, path, activation)
    if is_sklearn(obj):
        return _from_estimator(obj, path)
    raise ModelError(f"{path}: holds a {type(obj).__name__}, expected an MLP")


def load_mlp(model: Any, activation: str | None = None, *,
             trust_pickle: bool = False) -> LoadedMLP:
    """Read an MLP of any depth from an object or a file (module docstring).

    Args:
        model: an ``nn.Module``, a state dict, a fitted ``MLPRegressor``/``MLPClassifier``,
            or a path (``.pt``, ``.pth``, ``.safetensors``, ``.skops``, or a trusted pickle).
        activation: the activation of a state dict (required there unless the file names
            it); refused for modules and estimators, which have their own.
        trust_pickle: allow unpickling (runs code from the file: only for files you trust).

    Raises:
        ModelError: an unknown suffix, a missing, empty or corrupt file, an untrusted
            pickle, a state dict without an activation, anything that is not an MLP.
    """
    if isinstance(model, nn.Module):
        return _from_module(model, None, activation)
    if isinstance(model, Mapping):
        return _from_state_dict(model, activation, None)
    if is_sklearn(model):
        if activation is not None:
            raise ModelError("activation cannot be given for a scikit-learn model")
        return _from_estimator(model, None)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(f"cannot load an MLP from a {type(model).__name__}")
    path = Path(model)
    check_file(path, ModelError)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return _torch_file(path, activation, trust_pickle)
    if suffix == ".safetensors":
        return _safetensors_file(path, activation)
    if suffix == ".skops":
        if activation is not None:
            raise ModelError(f"{path}: activation cannot be given for a scikit-learn model")
        return _skops_file(path, trust_pickle)
    if suffix in PICKLE_SUFFIXES:
        return _pickle_file(path, activation, trust_pickle)
    raise ModelError(f"{path}: unknown model suffix {path.suffix!r}; use .pt, .pth, "
                     ".safetensors, .skops (or a trusted pickle)")
