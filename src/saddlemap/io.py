"""Load real models and data: torch modules and files, scikit-learn MLPs, ``.npz`` and CSV.

:func:`load_model` turns a two-layer model (a torch module, a ``.pt``/``.pth``,
``.safetensors`` or ``.npz`` file, or a fitted scikit-learn ``MLPRegressor`` /
``MLPClassifier`` with one hidden layer) into a float64 :class:`~saddlemap.TwoLayerNet`,
together with the loss it was trained with.  :func:`export_model` gives a (reduced) network
back as the same kind of object; :func:`save_model` writes a network to a file that
:func:`load_model` reads back bit for bit; :func:`load_data` reads a :class:`~saddlemap.Dataset`
from ``.npz``, a pair of ``.npy`` files or a CSV file.

Every bad input raises a :class:`~saddlemap.SaddlemapError` subclass with a one-line message
naming the file (when there is one) and the problem.

>>> import os, tempfile
>>> net = TwoLayerNet([1.0, -2.0], [[0.5], [1.5]], b=[0.1, 0.2], activation="tanh")
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "net.npz")
...     save_model(net, path)
...     loaded = load_model(path)
>>> loaded.kind, loaded.net.activation.name, loaded.net.flatten().tolist() == net.flatten().tolist()
('npz', 'tanh', True)
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .activations import Activation, get_activation, leaky_relu
from .data import Dataset
from .errors import ActivationError, DataError, LossError, ModelError, SaddlemapError
from .losses import get_loss
from .network import TwoLayerNet

__all__ = ["LoadedModel", "export_model", "load_data", "load_model", "save_model"]

PathLike = str | os.PathLike[str]

# sklearn's activation names ↔ saddlemap's.
_SKLEARN_TO_SADDLEMAP = {
    "identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
}
_SADDLEMAP_TO_SKLEARN = {v: k for k, v in _SKLEARN_TO_SADDLEMAP.items()}
_TORCH_SUFFIXES = (".pt", ".pth")
_NO_LOSS_NOTE = "the model does not record its training loss; 'mse' is assumed"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model read by :func:`load_model`.

    Attributes:
        net: the network, in float64.
        kind: where it came from: ``"torch"``, ``"state_dict"``, ``"safetensors"``,
            ``"sklearn"`` or ``"npz"``.
        loss: the loss the model was trained with (``"mse"``, ``"cross_entropy"`` or
            ``"bce"``); for torch and file models, which do not record it, ``"mse"``.
        source: the original torch module or scikit-learn estimator, when there is one.
        path: the file it was read from, if any.
        notes: differences between the model and ``net`` worth knowing (a regulariser that
            is not part of R, a float32 original, torch's Softplus threshold, ...).
    """

    net: TwoLayerNet
    kind: str
    loss: str
    source: object | None
    path: str | None
    notes: tuple[str, ...]


# --------------------------------------------------------------------------- helpers
def _one_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type's name)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def _require(module: str, extra: str) -> Any:
    """Import an optional dependency, or an ImportError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is needed for this; install it with: pip install 'saddlemap[{extra}]'"
        ) from exc


def _check_file(path: Path, error: type[SaddlemapError]) -> None:
    if not path.exists():
        raise error(f"{path}: no such file")
    if path.is_dir():
        raise error(f"{path}: is a directory, not a file")
    if path.stat().st_size == 0:
        raise error(f"{path}: the file is empty")


def _activation_to_str(activation: Activation) -> str:
    """A name :func:`_activation_from_str` reads back to the same activation.

    >>> _activation_to_str(leaky_relu(0.2)), _activation_to_str(get_activation("tanh"))
    ('leaky_relu(0.2)', 'tanh')
    """
    if activation.name == "leaky_relu" and activation.params:
        slope = dict(activation.params)["negative_slope"]
        return f"leaky_relu({slope!r})"
    try:
        registered = get_activation(activation.name)
    except ActivationError:
        registered = None
    if registered is None or registered != activation:
        raise ModelError(
            f"activation {activation.name!r} is not in the registry, so a file cannot name it; "
            "register it with register_activation or save to .pt"
        )
    return activation.name


def _activation_from_str(name: str) -> Activation:
    """Inverse of :func:`_activation_to_str`.

    >>> _activation_from_str("leaky_relu(0.2)").params
    (('negative_slope', 0.2),)
    """
    match = re.fullmatch(r"\s*leaky_relu\(\s*([^)]*)\)\s*", name)
    if match:
        try:
            return leaky_relu(float(match.group(1)))
        except ValueError:
            raise ActivationError(f"bad leaky_relu slope in {name!r}") from None
    return get_activation(name)


def _model_error(path: Path | None, exc: SaddlemapError) -> SaddlemapError:
    """The same error class with the file name in front of the message."""
    if path is None:
        return exc
    return type(exc)(f"{path}: {exc}")


# ------------------------------------------------------------------------ load_model
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
      ``activation``), as written by :func:`save_model`, or a pickled scikit-learn MLP
      (``.pkl``, ``.pickle``, ``.joblib`` written with ``pickle``).

    Warning:
        ``.pt``/``.pth`` files are read with ``torch.load(weights_only=False)`` and ``.pkl``
        files with ``pickle``: both unpickle arbitrary Python objects and can run code, so
        use them only on trusted files.

    Args:
        model: the model object or a path to a model file.
        activation: activation name; needed for a state_dict, and overrides the name stored
            in a ``.safetensors`` or ``.npz`` file.

    Returns:
        The :class:`LoadedModel`.

    Raises:
        ModelError: not a two-layer network, an unfitted or unsupported estimator, a
            missing, empty, corrupt or unsupported file, a state_dict without an activation.
        ActivationError: an activation saddlemap does not know (e.g. ``nn.ELU``).

    >>> import torch
    >>> module = torch.nn.Sequential(
    ...     torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    >>> loaded = load_model(module)
    >>> loaded.kind, loaded.net.width, loaded.net.dtype, loaded.loss
    ('torch', 3, torch.float64, 'mse')
    """
    if isinstance(model, (str, os.PathLike)):
        return _load_model_file(Path(model), activation)
    if isinstance(model, nn.Module):
        return _from_module(model, None, activation)
    if type(model).__module__.startswith("sklearn."):
        if activation is not None:
            raise ModelError("activation cannot be given for a scikit-learn model")
        return _from_sklearn(model)
    if isinstance(model, Mapping):
        return _from_state_dict(model, activation, "state_dict", None, ())
    raise ModelError(
        f"cannot load a model from an object of type {type(model).__name__}; expected a torch "
        "module, a state_dict, a fitted MLPRegressor/MLPClassifier or a file path"
    )


def _torch_notes(module: nn.Module) -> list[str]:
    notes = []
    dtypes = sorted({str(p.dtype) for p in module.parameters()})
    if dtypes and dtypes != ["torch.float64"]:
        notes.append(f"parameters converted from {', '.join(dtypes)} to torch.float64")
    for child in module.children():
        if isinstance(child, nn.Softplus):
            notes.append(
                f"torch's Softplus returns z above threshold={child.threshold}; saddlemap "
                "uses the exact softplus (they differ by < exp(-threshold) there)"
            )
    return notes


def _from_module(module: nn.Module, path: Path | None, activation: str | None) -> LoadedModel:
    if activation is not None:
        raise _model_error(
            path, ModelError("activation cannot be given for a torch module; it has its own")
        )
    try:
        net = TwoLayerNet.from_torch(module)
    except SaddlemapError as exc:
        raise _model_error(path, exc) from exc
    notes = [*_torch_notes(module), _NO_LOSS_NOTE]
    return LoadedModel(
        net, "torch", "mse", module, None if path is None else str(path), tuple(notes)
    )


def _ordered_weights(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
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
    return tensors, []


def _from_state_dict(
    state_dict: Mapping[str, Any],
    activation: str | None,
    kind: str,
    path: Path | None,
    extra_notes: tuple[str, ...],
) -> LoadedModel:
    if activation is None:
        raise _model_error(
            path, ModelError("a state_dict does not record its activation; pass activation=")
        )
    try:
        tensors, notes = _ordered_weights(state_dict)
        dtypes = sorted({str(t.dtype) for t in tensors.values()})
        net = TwoLayerNet.from_state_dict(tensors, _activation_from_str(activation))
    except SaddlemapError as exc:
        raise _model_error(path, exc) from exc
    if dtypes and dtypes != ["torch.float64"]:
        notes.append(f"parameters converted from {', '.join(dtypes)} to torch.float64")
    return LoadedModel(
        net, kind, "mse", None, None if path is None else str(path),
        (*extra_notes, *notes, _NO_LOSS_NOTE),
    )


def _load_model_file(path: Path, activation: str | None) -> LoadedModel:
    _check_file(path, ModelError)
    suffix = path.suffix.lower()
    if suffix in _TORCH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelError(f"{path}: cannot read as a torch file: {_one_line(exc)}") from exc
        if isinstance(obj, nn.Module):
            loaded = _from_module(obj, path, activation)
            return loaded
        if isinstance(obj, Mapping):
            return _from_state_dict(obj, activation, "state_dict", path, ())
        raise ModelError(
            f"{path}: holds a {type(obj).__name__}, expected an nn.Module or a state_dict"
        )
    if suffix == ".safetensors":
        return _load_safetensors(path, activation)
    if suffix == ".npz":
        return _load_npz_model(path, activation)
    if suffix in (".pkl", ".pickle", ".joblib"):
        return _load_pickled_estimator(path)
    raise ModelError(
        f"{path}: unsupported model file suffix {path.suffix!r}; "
        "expected .pt, .pth, .safetensors, .npz or a pickled scikit-learn model (.pkl)"
    )


def _load_pickled_estimator(path: Path) -> LoadedModel:
    """A pickled fitted scikit-learn MLP (unpickling runs code: trusted files only)."""
    import pickle

    try:
        obj = pickle.loads(path.read_bytes())
    except Exception as exc:
        raise ModelError(f"{path}: cannot unpickle: {_one_line(exc)}") from exc
    if not type(obj).__module__.startswith("sklearn."):
        raise ModelError(f"{path}: holds a {type(obj).__name__}, expected a scikit-learn MLP")
    return dataclasses.replace(_from_sklearn(obj), path=str(path))


def _load_safetensors(path: Path, activation: str | None) -> LoadedModel:
    st_torch = _require("safetensors.torch", "safetensors")
    safetensors = _require("safetensors", "safetensors")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = st_torch.load_file(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read as a safetensors file: {_one_line(exc)}") from exc
    stored = metadata.get("activation")
    notes: tuple[str, ...] = ()
    if activation is not None and stored is not None and activation != stored:
        notes = (f"activation {activation!r} given; the file says {stored!r}",)
    chosen = activation if activation is not None else stored
    if chosen is None:
        raise ModelError(f"{path}: no 'activation' in the file's metadata; pass activation=")
    return _from_state_dict(tensors, chosen, "safetensors", path, notes)


def _load_npz_model(path: Path, activation: str | None) -> LoadedModel:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:
        raise ModelError(f"{path}: cannot read as an .npz file: {_one_line(exc)}") from exc
    missing = [key for key in ("a", "W") if key not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "nothing"
        raise ModelError(f"{path}: missing array {missing[0]!r} (found: {found})")
    notes: tuple[str, ...] = ()
    stored = None
    if "activation" in arrays:
        value = arrays["activation"]
        if value.dtype.kind != "U" or value.ndim != 0:
            raise ModelError(f"{path}: 'activation' must be a string, got {value.dtype}")
        stored = str(value)
    if activation is not None and stored is not None and activation != stored:
        notes = (f"activation {activation!r} given; the file says {stored!r}",)
    chosen = activation if activation is not None else stored
    if chosen is None:
        raise ModelError(f"{path}: no 'activation' array in the file; pass activation=")
    try:
        for key in ("a", "W", "b", "c"):
            if key in arrays and arrays[key].dtype.kind not in "fiu":
                raise ModelError(f"{key} must be real numbers, got dtype {arrays[key].dtype}")
        net = TwoLayerNet(
            arrays["a"], arrays["W"], b=arrays.get("b"), c=arrays.get("c"),
            activation=_activation_from_str(chosen), dtype=torch.float64,
        )
    except SaddlemapError as exc:
        raise _model_error(path, exc) from exc
    dtypes = sorted({str(arrays[k].dtype) for k in ("a", "W", "b", "c") if k in arrays})
    if dtypes != ["float64"]:
        notes = (*notes, f"parameters converted from {', '.join(dtypes)} to float64")
    return LoadedModel(net, "npz", "mse", None, str(path), (*notes, _NO_LOSS_NOTE))


# -------------------------------------------------------------------------- sklearn
def _sklearn_classes() -> tuple[Any, Any]:
    neural = _require("sklearn.neural_network", "sklearn")
    return neural.MLPRegressor, neural.MLPClassifier


def _from_sklearn(estimator: Any) -> LoadedModel:
    regressor_cls, classifier_cls = _sklearn_classes()
    name = type(estimator).__name__
    if not isinstance(estimator, (regressor_cls, classifier_cls)):
        raise ModelError(
            f"unsupported scikit-learn model {name}; expected MLPRegressor or MLPClassifier"
        )
    if not hasattr(estimator, "coefs_"):
        raise ModelError(f"the {name} is not fitted; call fit first")
    hidden = len(estimator.coefs_) - 1
    if hidden != 1:
        raise ModelError(
            f"the {name} has {hidden} hidden layers "
            f"(hidden_layer_sizes={estimator.hidden_layer_sizes}); saddlemap reads exactly one"
        )
    out = estimator.out_activation_
    is_classifier = isinstance(estimator, classifier_cls)
    if is_classifier:
        y_type = getattr(getattr(estimator, "_label_binarizer", None), "y_type_", None)
        if out == "softmax":
            loss = "cross_entropy"
        elif out == "logistic" and estimator.n_outputs_ == 1:
            loss = "bce"
        else:
            raise ModelError(f"multilabel {name} (y type {y_type!r}) is not supported")
    elif out == "identity":
        loss = "mse"
    else:
        raise ModelError(
            f"{name} with loss={estimator.loss!r} (output activation {out!r}) is not supported; "
            "only squared_error"
        )
    act_name = _SKLEARN_TO_SADDLEMAP.get(estimator.activation)
    if act_name is None:
        raise ActivationError(f"unsupported scikit-learn activation {estimator.activation!r}")
    coefs, intercepts = estimator.coefs_, estimator.intercepts_
    net = TwoLayerNet(
        np.asarray(coefs[1]), np.asarray(coefs[0]).T, b=np.asarray(intercepts[0]),
        c=np.asarray(intercepts[1]), activation=act_name, dtype=torch.float64,
    )
    _check_sklearn_outputs(estimator, net, loss)
    objective = "½·mean squared error" if loss == "mse" else "mean log-loss"
    notes = [
        f"scikit-learn minimises {objective} + alpha·‖W‖²/(2n) with alpha={estimator.alpha}; "
        "the L2 penalty is not part of R",
    ]
    if coefs[0].dtype != np.float64:
        notes.append(f"parameters converted from {coefs[0].dtype} to float64")
    return LoadedModel(net, "sklearn", loss, estimator, None, tuple(notes))


def _sklearn_outputs(estimator: Any, X: np.ndarray, loss: str) -> np.ndarray:
    """The estimator's outputs after its output activation, shape (n, K)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "X does not have valid feature names"
        if loss == "mse":
            return np.asarray(estimator.predict(X)).reshape(len(X), -1)
        proba = np.asarray(estimator.predict_proba(X))
    return proba[:, 1:] if loss == "bce" else proba


def _net_outputs_like_sklearn(net: TwoLayerNet, X: np.ndarray, loss: str) -> np.ndarray:
    g = net(torch.from_numpy(X).to(net.dtype))
    if loss == "bce":
        g = torch.sigmoid(g)
    elif loss == "cross_entropy":
        g = torch.softmax(g, dim=1)
    return g.detach().cpu().numpy()


def _check_sklearn_outputs(estimator: Any, net: TwoLayerNet, loss: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, net.input_dim))
    expected = _sklearn_outputs(estimator, X.astype(estimator.coefs_[0].dtype), loss)
    ours = _net_outputs_like_sklearn(net, X, loss)
    tol = 1e-10 if estimator.coefs_[0].dtype == np.float64 else 1e-4
    scale = 1.0 + float(np.abs(expected).max())
    if expected.shape != ours.shape or float(np.abs(expected - ours).max()) > tol * scale:
        raise ModelError(
            f"the {type(estimator).__name__}'s outputs do not match the network read from it"
        )


def _export_sklearn(net: TwoLayerNet, like: LoadedModel) -> Any:
    estimator: Any = like.source
    sk_activation = _SADDLEMAP_TO_SKLEARN.get(net.activation.name)
    if sk_activation is None or net.activation != get_activation(net.activation.name):
        raise ModelError(
            f"scikit-learn has no activation {net.activation.name!r}; "
            f"it has {', '.join(sorted(_SADDLEMAP_TO_SKLEARN))}"
        )
    dtype = estimator.coefs_[0].dtype
    m = net.width

    def array(t: torch.Tensor | None, size: int) -> np.ndarray:
        if t is None:
            return np.zeros(size, dtype=dtype)
        return np.array(t.detach().cpu().numpy(), dtype=dtype, copy=True)

    new = copy.deepcopy(estimator)
    new.set_params(hidden_layer_sizes=(m,), activation=sk_activation)
    new.coefs_ = [np.ascontiguousarray(array(net.W, 0).T), array(net.a, 0)]
    new.intercepts_ = [array(net.b, m), array(net.c, net.output_dim)]
    # Optimiser state has the old shapes; a later partial_fit starts a fresh optimiser.
    for stale in ("_optimizer", "_best_coefs", "_best_intercepts"):
        if hasattr(new, stale):
            delattr(new, stale)
    return new


# ------------------------------------------------------------------------ export_model
def export_model(net: TwoLayerNet, like: LoadedModel) -> object:
    """The network ``net`` (e.g. a reduced one) as the same kind of model ``like`` came from.

    For a scikit-learn model: a fitted estimator of the same class and settings, with
    ``hidden_layer_sizes=(m,)`` and ``net``'s weights, whose ``predict`` /
    ``predict_proba`` compute ``net``'s outputs (through the output activation).  Training
    history attributes (``loss_curve_``, ``n_iter_``, ...) are the original's.
    For every other kind: ``nn.Sequential(Linear, activation, Linear)``, in the original
    module's dtype when there is one, else in ``net``'s dtype.

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
            f"the network has d={net.input_dim}, K={net.output_dim}; the {like.kind} model "
            f"has d={like.net.input_dim}, K={like.net.output_dim}"
        )
    if like.kind == "sklearn":
        return _export_sklearn(net, like)
    module = net.to_torch()
    if isinstance(like.source, nn.Module):
        param = next(like.source.parameters(), None)
        if param is not None:
            module = module.to(dtype=param.dtype)
    return module


# -------------------------------------------------------------------------- save_model
def save_model(net: TwoLayerNet, path: PathLike) -> None:
    """Write ``net`` to a file that :func:`load_model` reads back with identical parameters.

    The format follows the suffix:

    * ``.npz``: arrays ``a``, ``W``, ``b`` and ``c`` (when present) and the string
      ``activation``;
    * ``.pt``/``.pth``: ``torch.save`` of ``net.to_torch()`` (a whole module);
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
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays: dict[str, Any] = {
            key: t.detach().cpu().numpy()
            for key, t in (("a", net.a), ("W", net.W), ("b", net.b), ("c", net.c))
            if t is not None
        }
        arrays["activation"] = np.array(_activation_to_str(net.activation))
        np.savez(path, **arrays)
    elif suffix in _TORCH_SUFFIXES:
        try:
            torch.save(net.to_torch().cpu(), path)
        except Exception as exc:
            raise ModelError(f"{path}: cannot save the module: {_one_line(exc)}") from exc
    elif suffix == ".safetensors":
        st_torch = _require("safetensors.torch", "safetensors")
        name = _activation_to_str(net.activation)
        state = {k: v.detach().cpu().contiguous() for k, v in net.to_torch().state_dict().items()}
        st_torch.save_file(state, str(path), metadata={"activation": name, "format": "pt"})
    else:
        raise ModelError(
            f"{path}: unsupported model file suffix {path.suffix!r}; "
            "expected .npz, .pt, .pth or .safetensors"
        )


# --------------------------------------------------------------------------- load_data
def load_data(
    path: PathLike,
    y_path: PathLike | None = None,
    *,
    target: str | int | None = None,
    loss: str = "mse",
) -> Dataset:
    r"""Read a :class:`~saddlemap.Dataset` from a file.

    * ``.npz``: arrays ``X`` and ``y``;
    * ``.npy``: the inputs X, with the targets in the ``.npy`` file ``y_path``;
    * ``.csv``: a header row, then numbers; y is the column ``target`` (a column name or
      index), by default the last one, and X is every other column.

    For ``loss="cross_entropy"`` whole-number float labels (as CSV gives them) become
    integer class labels.

    Args:
        path: the data file.
        y_path: the targets, for a ``.npy`` X file only.
        target: the CSV column holding y (name or index); CSV only.
        loss: the loss the data is for (``"mse"``, ``"cross_entropy"``, ``"bce"``).

    Returns:
        The validated :class:`~saddlemap.Dataset`.

    Raises:
        DataError: a missing, empty, corrupt or unsupported file, missing arrays or columns,
            non-numeric CSV cells, NaN or Inf, X and y of different lengths.

    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "data.csv")
    ...     with open(path, "w") as f:
    ...         _ = f.write("x1,x2,label\n0.5,1.0,0\n-1.0,2.0,2\n0.0,0.0,1\n")
    ...     data = load_data(path, loss="cross_entropy")
    >>> data.n, data.input_dim, data.output_dim
    (3, 2, 3)
    """
    path = Path(path)
    _check_file(path, DataError)
    suffix = path.suffix.lower()
    if y_path is not None and suffix != ".npy":
        raise DataError(f"{path}: y_path is only used with a .npy X file")
    if target is not None and suffix != ".csv":
        raise DataError(f"{path}: target is only used with CSV files")
    if suffix == ".npz":
        arrays = _read_npz(path, DataError)
        for key in ("X", "y"):
            if key not in arrays:
                found = ", ".join(sorted(arrays)) or "nothing"
                raise DataError(f"{path}: missing array {key!r} (found: {found})")
        X, y = arrays["X"], arrays["y"]
    elif suffix == ".npy":
        if y_path is None:
            raise DataError(f"{path}: a .npy X file needs y_path, the .npy file of targets")
        y_file = Path(y_path)
        _check_file(y_file, DataError)
        if y_file.suffix.lower() != ".npy":
            raise DataError(f"{y_file}: y_path must be a .npy file")
        X, y = _read_npy(path), _read_npy(y_file)
    elif suffix == ".csv":
        X, y = _read_csv(path, target)
    else:
        raise DataError(
            f"{path}: unsupported data file suffix {path.suffix!r}; expected .npz, .npy or .csv"
        )
    try:
        loss_obj = get_loss(loss)
        if loss_obj.name == "cross_entropy":
            y = _as_labels(y)
        return Dataset(X, y, loss=loss_obj)
    except (DataError, LossError) as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def _read_npz(path: Path, error: type[SaddlemapError]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            return {key: archive[key] for key in archive.files}
    except Exception as exc:
        raise error(f"{path}: cannot read as an .npz file: {_one_line(exc)}") from exc


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as a .npy file: {_one_line(exc)}") from exc
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: cannot read as a .npy file: it is an .npz archive")
    return array


def _as_labels(y: np.ndarray) -> np.ndarray:
    """Whole-number float labels (n,) → int64; anything else unchanged."""
    y = np.asarray(y)
    if y.ndim == 1 and y.dtype.kind == "f" and bool(np.isfinite(y).all()):
        if bool((y == np.round(y)).all()):
            return y.astype(np.int64)
    return y


def _read_csv(path: Path, target: str | int | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as a CSV file: {_one_line(exc)}") from exc
    rows = [row for row in rows if row]
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header = [name.strip() for name in rows[0]]
    body = rows[1:]
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    if len(header) < 2:
        raise DataError(f"{path}: needs at least 2 columns (inputs and a target), found 1")
    if isinstance(target, str):
        if target not in header:
            raise DataError(
                f"{path}: no column named {target!r} (columns: {', '.join(header)})"
            )
        column = header.index(target)
    elif target is None:
        column = len(header) - 1
    else:
        if not -len(header) <= target < len(header):
            raise DataError(
                f"{path}: target column {target} is out of range for {len(header)} columns"
            )
        column = target % len(header)
    values = np.empty((len(body), len(header)), dtype=np.float64)
    for i, row in enumerate(body):
        line = i + 2
        if len(row) != len(header):
            raise DataError(
                f"{path}: line {line} has {len(row)} cells, the header has {len(header)}"
            )
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise DataError(
                    f"{path}: line {line}, column {header[j]!r}: {cell!r} is not a number"
                ) from None
    # NaN or Inf cells parse; Dataset reports them with their row.
    return np.delete(values, column, axis=1), values[:, column]
