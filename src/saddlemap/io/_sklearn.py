"""The scikit-learn adapter, both ways: a fitted one-hidden-layer MLP in, a network out.

scikit-learn is optional: it is imported when a function here needs it, and its absence
raises an ImportError naming the ``sklearn`` extra.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..activations import get_activation
from ..errors import ActivationError, ModelError, OptionError, SaddlemapError
from ..losses import Penalty
from ..network import TwoLayerNet
from ..verdicts import ModelKind, Note, NoteCode
from ._common import LoadedModel, PathLike, dtype_note, one_line, refusal, require, with_path

__all__ = [
    "export_sklearn", "from_sklearn", "is_sklearn", "read_pickled_estimator",
    "read_skops_estimator", "save_estimator", "sklearn_penalty",
]

#: The estimators a ``.skops`` file may hold, by ``module.class`` name.
SKOPS_MODELS = (
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
)
#: The types inside a fitted MLP that skops does not trust by default (its optimisers).
SKOPS_MLP_PARTS = (
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
)
#: The suffixes :func:`save_estimator` writes as pickles.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")

# sklearn's activation names ↔ saddlemap's.
_SKLEARN_TO_SADDLEMAP = {
    "identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
}
_SADDLEMAP_TO_SKLEARN = {v: k for k, v in _SKLEARN_TO_SADDLEMAP.items()}


def is_sklearn(obj: object) -> bool:
    """Whether ``obj`` is a scikit-learn object (told by its module, without importing it)."""
    return type(obj).__module__.startswith("sklearn.")


def _sklearn_classes() -> tuple[Any, Any]:
    neural = require("sklearn.neural_network", "sklearn")
    return neural.MLPRegressor, neural.MLPClassifier


def _loss_of(estimator: Any, name: str, is_classifier: bool) -> str:
    """The loss a fitted MLP minimises, read from its output activation."""
    out = estimator.out_activation_
    if is_classifier:
        y_type = getattr(getattr(estimator, "_label_binarizer", None), "y_type_", None)
        if out == "softmax":
            return "cross_entropy"
        if out == "logistic" and estimator.n_outputs_ == 1:
            return "bce"
        raise ModelError(f"multilabel {name} (y type {y_type!r}) is not supported")
    if out == "identity":
        return "mse"
    raise ModelError(
        f"{name} with loss={estimator.loss!r} (output activation {out!r}) is not supported; "
        "only squared_error"
    )


def fitted_mlp_loss(estimator: Any) -> str:
    """The loss a fitted ``MLPRegressor``/``MLPClassifier`` (any depth) minimises.

    Returns ``"mse"``, ``"cross_entropy"`` or ``"bce"``; shared by the two-layer and the deep
    readers.

    Raises:
        ModelError: another estimator, an unfitted one, a multilabel classifier or a loss
            other than the squared error.
        ImportError: scikit-learn is not installed.
    """
    regressor_cls, classifier_cls = _sklearn_classes()
    name = type(estimator).__name__
    if not isinstance(estimator, (regressor_cls, classifier_cls)):
        raise ModelError(
            f"unsupported scikit-learn model {name}; expected MLPRegressor or MLPClassifier"
        )
    if not hasattr(estimator, "coefs_"):
        raise ModelError(f"the {name} is not fitted; call fit first")
    return _loss_of(estimator, name, isinstance(estimator, classifier_cls))


def from_sklearn(estimator: Any) -> LoadedModel:
    """Read a fitted ``MLPRegressor`` or ``MLPClassifier`` with one hidden layer.

    Args:
        estimator: the fitted estimator.

    Returns:
        The :class:`LoadedModel`, of kind :attr:`ModelKind.SKLEARN`, with the loss the
        estimator minimises.

    Raises:
        ModelError: another estimator, an unfitted one, more than one hidden layer, a
            multilabel classifier, a Poisson regressor, or outputs that do not match.
        ActivationError: an activation saddlemap does not know.
    """
    loss = fitted_mlp_loss(estimator)
    name = type(estimator).__name__
    hidden = len(estimator.coefs_) - 1
    if hidden != 1:
        raise ModelError(
            f"the {name} has {hidden} hidden layers "
            f"(hidden_layer_sizes={estimator.hidden_layer_sizes}); saddlemap reads exactly one"
        )
    act_name = _SKLEARN_TO_SADDLEMAP.get(estimator.activation)
    if act_name is None:
        raise ActivationError(f"unsupported scikit-learn activation {estimator.activation!r}")
    coefs, intercepts = estimator.coefs_, estimator.intercepts_
    net = TwoLayerNet(
        np.asarray(coefs[1]), np.asarray(coefs[0]).T, b=np.asarray(intercepts[0]),
        c=np.asarray(intercepts[1]), activation=act_name, dtype=torch.float64,
    )
    _check_outputs(estimator, net, loss)
    objective = "½·mean squared error" if loss == "mse" else "mean log-loss"
    notes = [
        Note(
            NoteCode.PENALTY,
            f"scikit-learn minimises {objective} + alpha·‖W‖²/(2n) with alpha={estimator.alpha}; "
            "the L2 penalty is not part of R unless the data carry "
            "sklearn_penalty(estimator, n) = Penalty(alpha/n, 'weights')",
        )
    ]
    converted = dtype_note([coefs[0].dtype])
    if converted is not None:
        notes.append(converted)
    return LoadedModel(net, ModelKind.SKLEARN, loss, estimator, None, tuple(notes))


def _epoch_batch_sizes(estimator: Any, n_samples: int) -> list[int]:
    """The sizes of the blocks one pass of the estimator's solver over the data uses."""
    if estimator.solver == "lbfgs":
        return [n_samples]  # full batch
    n = n_samples
    if getattr(estimator, "early_stopping", False):  # train_test_split's training part
        n -= math.ceil(float(estimator.validation_fraction) * n_samples)
        if n < 1:
            raise OptionError(
                f"with early_stopping and validation_fraction={estimator.validation_fraction}, "
                f"{n_samples} samples leave none to train on"
            )
    if estimator.batch_size == "auto":
        size = min(200, n)
    else:
        size = min(max(int(estimator.batch_size), 1), n)
    sizes = [size] * (n // size)
    if n % size:
        sizes.append(n % size)
    return sizes


def sklearn_penalty(estimator: Any, n_samples: int) -> Penalty | None:
    """The weight decay a fitted scikit-learn MLP was trained with, in saddlemap's units.

    scikit-learn's ``_backprop`` on a block of B samples returns the loss
    ℓ_sk + (alpha / (2B)) Σ_l ‖coefs_[l]‖² and the gradient
    (Σ_i ∇ℓ_i + alpha · coefs_) / B for the coefficient matrices, Σ_i ∇ℓ_i / B for the
    intercepts, where ∇ℓ_i is the gradient of saddlemap's per-sample loss (ℓ = ½‖g − y‖² for
    ``squared_error``, the log-loss of the softmax or logistic output for a classifier).  So
    its gradient is ∇R_B + (alpha / B) M θ with M the mask of a and W: saddlemap's
    ``Penalty(alpha / B, "weights")`` on R = (1/n) Σ ℓ.  For ``solver="lbfgs"`` the block is
    the whole data, so λ = alpha / n, exactly.  For ``"sgd"`` and ``"adam"`` a pass over the
    data takes blocks B_1, …, B_J of ``batch_size`` (``"auto"`` is min(200, n)) and the
    expected sum of their gradients over a shuffle is J ∇R + alpha Σ_j (1/B_j) M θ, so
    λ = alpha · mean_j (1/B_j) (alpha / B when B divides n); with ``early_stopping`` the
    blocks cover the training part, n − ⌈validation_fraction · n⌉ samples.

    With K > 1 outputs scikit-learn's ``squared_error`` *value* averages over outputs too,
    (1/K)·R + P, while its gradient is that of R + P: the penalty here follows the gradient,
    which is what the optimiser follows.  Fits with ``sample_weight`` divide by the sum of
    the weights instead of n; saddlemap has no sample weights.

    Args:
        estimator: a fitted ``MLPRegressor`` or ``MLPClassifier``.
        n_samples: the number of samples passed to ``fit``.

    Returns:
        ``Penalty(λ, "weights")``, or None when ``alpha`` is 0.

    Raises:
        OptionError: n_samples < 1, or no samples left to train on.
    """
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
        raise OptionError(f"n_samples must be a positive integer, got {n_samples!r}")
    alpha = float(estimator.alpha)
    if alpha == 0.0:
        return None
    sizes = _epoch_batch_sizes(estimator, int(n_samples))
    return Penalty(math.fsum(alpha / b for b in sizes) / len(sizes), "weights")


def _no_activation(path: Path, activation: str | None) -> None:
    """Refuse an activation for a scikit-learn file: the estimator records its own."""
    if activation is not None:
        raise ModelError(
            f"{path}: activation cannot be given for a scikit-learn model; it records its own"
        )


def _from_file_estimator(path: Path, obj: object) -> LoadedModel:
    """The :class:`LoadedModel` of an estimator read from ``path`` (errors name the file)."""
    if not is_sklearn(obj):
        raise ModelError(f"{path}: holds a {type(obj).__name__}, expected a scikit-learn MLP")
    try:
        loaded = from_sklearn(obj)
    except SaddlemapError as exc:
        raise with_path(path, exc) from exc
    return dataclasses.replace(loaded, path=str(path))


def _unpickle(path: Path) -> object:
    """The object of a trusted pickle: ``joblib.load`` for ``.joblib`` when installed."""
    if path.suffix.lower() == ".joblib":
        try:
            import joblib
        except ImportError:
            pass
        else:
            return joblib.load(path)
    return pickle.loads(path.read_bytes())


def read_pickled_estimator(path: Path, activation: str | None, trust_pickle: bool) -> LoadedModel:
    """A pickled fitted scikit-learn MLP, read only when the caller trusts the file.

    The rule: unpickling runs code from the file, so without ``trust_pickle`` the file is
    not read at all; the error points to ``trust_pickle`` and to skops (``.skops``), the
    safe format.  ``activation`` is refused: the estimator names its own.

    Raises:
        ModelError: an activation given, an untrusted file, a file that does not unpickle,
            or one that holds no one-hidden-layer scikit-learn MLP.
    """
    _no_activation(path, activation)
    if not trust_pickle:
        raise refusal(path, "a pickle", "skops (.skops: skops.io.dump(estimator, path))")
    try:
        obj = _unpickle(path)
    except Exception as exc:
        raise ModelError(f"{path}: cannot unpickle: {one_line(exc)}") from exc
    return _from_file_estimator(path, obj)


def _skops_top_type(path: Path) -> str:
    """The ``module.class`` name of the object a ``.skops`` file holds (read from its schema)."""
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
        return f"{schema['__module__']}.{schema['__class__']}"
    except Exception as exc:
        raise ModelError(f"{path}: cannot read as a skops file: {one_line(exc)}") from exc


def load_skops_mlp(path: Path, trust_pickle: bool) -> object:
    """The estimator of a ``.skops`` file holding an MLPRegressor or MLPClassifier.

    Only the types an MLP has are constructed unless ``trust_pickle``; shared by the
    two-layer and the deep loaders.

    Raises:
        ModelError: not a skops archive, another estimator, or untrusted types.
        ImportError: skops is not installed (the ``sklearn`` extra).
    """
    top = _skops_top_type(path)
    if top not in SKOPS_MODELS:
        raise ModelError(f"{path}: holds a {top}, expected a scikit-learn MLPRegressor or "
                         "MLPClassifier")
    sio = require("skops.io", "sklearn")
    try:
        found = list(sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read as a skops file: {one_line(exc)}") from exc
    unexpected = [name for name in found if name not in SKOPS_MLP_PARTS]
    if unexpected and not trust_pickle:
        raise ModelError(
            f"{path}: refused: the file names types a scikit-learn MLP does not have "
            f"({', '.join(unexpected)}), and making them can run code; if you trust it, pass "
            "--trust-pickle (trust_pickle=True)"
        )
    try:
        return sio.load(path, trusted=found)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read as a skops file: {one_line(exc)}") from exc


def read_skops_estimator(path: Path, activation: str | None, trust_pickle: bool) -> LoadedModel:
    """A fitted scikit-learn MLP saved with skops, constructing only the types an MLP has.

    The rule: the file must hold an ``MLPRegressor`` or ``MLPClassifier``, and every type
    it names must be one skops trusts by default or an MLP optimiser
    (:data:`SKOPS_MLP_PARTS`); anything else is refused before any object is made, unless
    ``trust_pickle`` (then every type in the file is trusted).  ``activation`` is refused:
    the estimator names its own.

    Raises:
        ModelError: an activation given, a file that is not a skops archive, another
            estimator, types outside an MLP in an untrusted file, or no one-hidden-layer MLP.
        ImportError: skops is not installed (the ``sklearn`` extra).
    """
    _no_activation(path, activation)
    return _from_file_estimator(path, load_skops_mlp(path, trust_pickle))


def save_estimator(estimator: object, path: PathLike) -> None:
    """Write a fitted estimator: skops for ``.skops``, a pickle for ``.pkl`` and the like.

    The rule: a pickle is written only when the path asks for one (reading it back needs
    ``trust_pickle=True``); ``.skops`` is the format :func:`load_model` reads safely.

    Raises:
        ModelError: another suffix.
        ImportError: ``.skops`` without skops installed (the ``sklearn`` extra).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".skops":
        require("skops.io", "sklearn").dump(estimator, path)
    elif suffix in PICKLE_SUFFIXES:
        path.write_bytes(pickle.dumps(estimator))
    else:
        raise ModelError(f"{path}: a scikit-learn model is written as .skops (or a pickle: "
                         f"{', '.join(PICKLE_SUFFIXES)}), not {path.suffix!r}")


def _sklearn_outputs(estimator: Any, X: np.ndarray, loss: str) -> np.ndarray:
    """The estimator's outputs after its output activation, shape (n, K)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "X does not have valid feature names"
        if loss == "mse":
            return np.asarray(estimator.predict(X)).reshape(len(X), -1)
        proba = np.asarray(estimator.predict_proba(X))
    return proba[:, 1:] if loss == "bce" else proba


def _net_outputs_like_sklearn(net: TwoLayerNet, X: np.ndarray, loss: str) -> np.ndarray:
    """The network's outputs through the output activation the estimator applies."""
    g = net(torch.from_numpy(X).to(net.dtype))
    if loss == "bce":
        g = torch.sigmoid(g)
    elif loss == "cross_entropy":
        g = torch.softmax(g, dim=1)
    result: np.ndarray = g.detach().cpu().numpy()
    return result


def _check_outputs(estimator: Any, net: TwoLayerNet, loss: str) -> None:
    """Raise ModelError unless ``net`` computes the estimator's outputs on probe inputs."""
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


def export_sklearn(net: TwoLayerNet, like: LoadedModel) -> Any:
    """A copy of ``like``'s estimator that computes ``net`` (``hidden_layer_sizes=(m,)``).

    Args:
        net: the network, with ``like.net``'s input and output dimensions.
        like: a model of kind :attr:`ModelKind.SKLEARN`.

    Returns:
        The fitted estimator, in the original's dtype; the original is untouched.

    Raises:
        ModelError: an activation scikit-learn does not have.
    """
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
