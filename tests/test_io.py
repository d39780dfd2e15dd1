"""Loaders for real models and data (saddlemap.io)."""

from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import saddlemap as sm
from saddlemap.io import LoadedModel, export_model, load_data, load_model, save_model
from saddlemap.io._sklearn import sklearn_penalty
from saddlemap.losses import Penalty
from saddlemap.verdicts import ModelKind, Note, NoteCode

sklearn = pytest.importorskip("sklearn")
pytest.importorskip("safetensors")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402


# ----------------------------------------------------------------------------- fixtures
def trained_module(dtype: torch.dtype = torch.float32, act: nn.Module | None = None) -> nn.Module:
    """A small Linear → activation → Linear module after a few SGD steps."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 5), act or nn.Tanh(), nn.Linear(5, 2)).to(dtype)
    X, y = torch.randn(32, 3, dtype=dtype), torch.randn(32, 2, dtype=dtype)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        ((module(X) - y) ** 2).mean().backward()
        opt.step()
    return module


def fit(estimator: Any, y: np.ndarray) -> Any:
    X = np.random.default_rng(0).standard_normal((len(y), 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def probe(d: int = 3) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((11, d))


@pytest.fixture(scope="module")
def regressor() -> MLPRegressor:
    rng = np.random.default_rng(2)
    estimator = MLPRegressor(
        hidden_layer_sizes=(4,), activation="tanh", max_iter=20, random_state=0)
    return fit(estimator, rng.standard_normal(40))


@pytest.fixture(scope="module")
def binary() -> MLPClassifier:
    y = np.array(["no", "yes"] * 20)
    estimator = MLPClassifier(
        hidden_layer_sizes=(4,), activation="relu", max_iter=20, random_state=0)
    return fit(estimator, y)


@pytest.fixture(scope="module")
def multiclass() -> MLPClassifier:
    y = np.arange(42) % 3
    estimator = MLPClassifier(
        hidden_layer_sizes=(5,), activation="logistic", max_iter=20, random_state=0)
    return fit(estimator, y)


def same_params(a: sm.TwoLayerNet, b: sm.TwoLayerNet) -> bool:
    return (
        a.activation == b.activation
        and a.dtype == b.dtype
        and (a.b is None) == (b.b is None)
        and (a.c is None) == (b.c is None)
        and torch.equal(a.flatten(), b.flatten())
    )


def drop_last_neuron(net: sm.TwoLayerNet) -> sm.TwoLayerNet:
    return net.replace(
        a=net.a[:-1], W=net.W[:-1], b=None if net.b is None else net.b[:-1]
    )


# ------------------------------------------------------------------------------- torch
def test_torch_module() -> None:
    module = trained_module()
    loaded = load_model(module)
    assert isinstance(loaded, LoadedModel)
    assert loaded.kind is ModelKind.TORCH and (loaded.loss, loaded.path) == ("mse", None)
    assert loaded.source is module and loaded.net.dtype == torch.float64
    assert all(isinstance(note, Note) for note in loaded.notes)
    assert [n.code for n in loaded.notes] == [NoteCode.DTYPE_CONVERTED, NoteCode.LOSS_ASSUMED]
    assert any("float32" in str(note) for note in loaded.notes)
    X = torch.randn(9, 3)
    with torch.no_grad():
        expected = module(X.float()).double()
    torch.testing.assert_close(loaded.net(X), expected, rtol=1e-5, atol=1e-6)
    # Conversion from float32 to float64 is exact.
    assert torch.equal(loaded.net.W, module[0].weight.detach().double())


def test_softplus_threshold_note() -> None:
    loaded = load_model(trained_module(torch.float64, nn.Softplus()))
    assert loaded.net.activation.name == "softplus"
    assert [n.code for n in loaded.notes] == [NoteCode.SOFTPLUS_THRESHOLD, NoteCode.LOSS_ASSUMED]
    assert any("threshold" in str(note) for note in loaded.notes)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors", ".npz"])
@pytest.mark.parametrize(
    "activation, biases",
    [("tanh", (True, True)), ("relu", (False, False)), (sm.leaky_relu(0.2), (True, False))],
)
def test_save_and_load_bit_identical(
    tmp_path: Path, suffix: str, activation: Any, biases: tuple[bool, bool]
) -> None:
    gen = torch.Generator().manual_seed(3)
    net = sm.TwoLayerNet(
        torch.randn(4, 2, generator=gen), torch.randn(4, 3, generator=gen),
        b=torch.randn(4, generator=gen) if biases[0] else None,
        c=torch.randn(2, generator=gen) if biases[1] else None,
        activation=activation,
    )
    path = tmp_path / f"net{suffix}"
    save_model(net, path)
    loaded = load_model(path)  # every format saddlemap writes loads without unpickling code
    assert loaded.path == str(path)
    expected = {".pt": ModelKind.STATE_DICT, ".pth": ModelKind.STATE_DICT}.get(suffix)
    assert loaded.kind is (expected or ModelKind(suffix[1:]))
    if suffix in (".pt", ".pth"):  # a checkpoint of tensors and strings
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["activation"] == loaded.net.activation.name or "(" in str(
            checkpoint["activation"])
    # float64 parameters: no conversion note, only the assumed loss.
    assert [n.code for n in loaded.notes] == [NoteCode.LOSS_ASSUMED]
    assert same_params(loaded.net, net)


def test_pt_state_dict(tmp_path: Path) -> None:
    module = trained_module(torch.float64)
    path = tmp_path / "weights.pt"
    torch.save(module.state_dict(), path)
    loaded = load_model(path, activation="tanh")
    assert loaded.kind is ModelKind.STATE_DICT and loaded.source is None
    assert same_params(loaded.net, sm.TwoLayerNet.from_torch(module))
    with pytest.raises(sm.ModelError, match="does not record its activation; pass activation="):
        load_model(path)
    # An in-memory state_dict too.
    assert load_model(module.state_dict(), activation="tanh").kind is ModelKind.STATE_DICT


def test_safetensors_key_order_and_metadata(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    module = trained_module(torch.float64)
    # Names that sort the output layer first: the loader chains the layers instead.
    state = {
        "a_out.weight": module[2].weight.detach(), "a_out.bias": module[2].bias.detach(),
        "b_in.weight": module[0].weight.detach(), "b_in.bias": module[0].bias.detach(),
    }
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    with pytest.raises(sm.ModelError, match="no 'activation' in the file's metadata"):
        load_model(path)
    loaded = load_model(path, activation="tanh")
    assert same_params(loaded.net, sm.TwoLayerNet.from_torch(module))
    save_file(state, str(path), metadata={"activation": "tanh"})
    assert same_params(load_model(path).net, loaded.net)
    assert load_model(path).kind is ModelKind.SAFETENSORS
    overridden = load_model(path, activation="sigmoid")
    assert overridden.net.activation.name == "sigmoid"
    assert [str(n) for n in overridden.notes if n.code is NoteCode.ACTIVATION_DIFFERS] == [
        "activation 'sigmoid' given; the file says 'tanh'"]


def test_export_torch() -> None:
    module = trained_module()
    like = load_model(module)
    exported = export_model(like.net, like)
    assert isinstance(exported, nn.Sequential)
    assert exported[0].weight.dtype == torch.float32
    X = torch.randn(6, 3, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(exported(X), module(X))
    smaller = drop_last_neuron(like.net)
    out = export_model(smaller, like)
    assert isinstance(out, nn.Sequential) and out[0].out_features == 4


DTYPE_NOTE = "parameters converted from float32 to float64"


def float32_models(tmp_path: Path) -> dict[str, Any]:
    """The same float32 network as every reader that converts takes it."""
    from safetensors.torch import save_file

    module = trained_module(torch.float32)
    state = {k: v.detach() for k, v in module.state_dict().items()}
    torch.save(state, tmp_path / "state.pt")
    save_file(state, str(tmp_path / "state.safetensors"), metadata={"activation": "tanh"})
    W, b, a_t, c = (v.numpy() for v in state.values())
    np.savez(tmp_path / "net.npz", a=a_t.T, W=W, b=b, c=c, activation=np.array("tanh"))
    X = np.random.default_rng(0).standard_normal((30, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator = MLPRegressor(hidden_layer_sizes=(3,), max_iter=5, random_state=0).fit(
            X, X[:, 0])
    assert estimator.coefs_[0].dtype == np.float32
    (tmp_path / "mlp.pkl").write_bytes(pickle.dumps(estimator))
    return {
        "module": module, "state_dict": state, "pt_state_dict": tmp_path / "state.pt",
        "safetensors": tmp_path / "state.safetensors", "npz": tmp_path / "net.npz",
        "sklearn": estimator, "pickled_sklearn": tmp_path / "mlp.pkl",
    }


@pytest.mark.parametrize(
    "name",
    ["module", "state_dict", "pt_state_dict", "safetensors", "npz", "sklearn", "pickled_sklearn"],
)
def test_dtype_note_has_one_wording(name: str, tmp_path: Path) -> None:
    model = float32_models(tmp_path)[name]
    needs_activation = name in ("state_dict", "pt_state_dict")
    loaded = load_model(model, activation="tanh" if needs_activation else None,
                        trust_pickle=name == "pickled_sklearn")
    assert loaded.net.dtype == torch.float64
    converted = [n for n in loaded.notes if n.code is NoteCode.DTYPE_CONVERTED]
    assert [str(n) for n in converted] == [DTYPE_NOTE]
    assert all("converted" not in str(n) for n in loaded.notes if n not in converted)


@pytest.mark.parametrize("name", ["module", "state_dict", "pt_state_dict", "safetensors", "npz"])
def test_export_keeps_the_original_dtype(name: str, tmp_path: Path) -> None:
    model = float32_models(tmp_path)[name]
    needs_activation = name in ("state_dict", "pt_state_dict")
    loaded = load_model(model, activation="tanh" if needs_activation else None)
    assert (loaded.dtype, loaded.device) == (torch.float32, torch.device("cpu"))
    assert loaded.net.dtype == torch.float64  # analysed in float64, exported as it came
    smaller = drop_last_neuron(loaded.net)
    exported = export_model(smaller, loaded)
    assert isinstance(exported, nn.Sequential) and exported[0].out_features == 4
    assert {p.dtype for p in exported.parameters()} == {torch.float32}
    X = torch.randn(6, 3, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = exported(X)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), smaller(X.double()).numpy(), rtol=0, atol=1e-5)


def test_loaded_model_dtype_and_device_default_to_float64_on_cpu(
    regressor: MLPRegressor,
) -> None:
    net = sm.TwoLayerNet([1.0], [[2.0]])
    plain = LoadedModel(net, ModelKind.NPZ, "mse", None, None, ())
    assert (plain.dtype, plain.device) == (torch.float64, torch.device("cpu"))
    float64_module = load_model(trained_module(torch.float64))
    assert float64_module.dtype == torch.float64
    assert export_model(float64_module.net, float64_module)[0].weight.dtype == torch.float64
    assert load_model(regressor).dtype == torch.float64  # scikit-learn: the default


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_export_keeps_the_original_device() -> None:
    module = trained_module(torch.float32).cuda()
    loaded = load_model(module)
    assert loaded.device.type == "cuda" and loaded.dtype == torch.float32
    exported = export_model(drop_last_neuron(loaded.net), loaded)
    param = next(exported.parameters())
    assert param.device.type == "cuda" and param.dtype == torch.float32
    with torch.no_grad():
        assert exported(torch.randn(4, 3, device="cuda")).dtype == torch.float32


# ----------------------------------------------------------------------------- sklearn
def pre_activation(estimator: Any, X: np.ndarray) -> np.ndarray:
    """The estimator's output before its output activation, computed from its weights."""
    acts = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0),
            "logistic": lambda z: 1 / (1 + np.exp(-z)), "identity": lambda z: z}
    hidden = acts[estimator.activation](X @ estimator.coefs_[0] + estimator.intercepts_[0])
    return hidden @ estimator.coefs_[1] + estimator.intercepts_[1]


def test_sklearn_regressor(regressor: MLPRegressor) -> None:
    loaded = load_model(regressor)
    assert loaded.kind is ModelKind.SKLEARN
    assert (loaded.loss, loaded.net.activation.name) == ("mse", "tanh")
    assert loaded.source is regressor and loaded.net.width == 4
    assert any("alpha" in str(n) and "not part of R" in str(n) for n in loaded.notes)
    # float64 estimator, loss recorded: neither a dtype nor a loss note.
    assert not any(
        n.code in (NoteCode.DTYPE_CONVERTED, NoteCode.LOSS_ASSUMED) for n in loaded.notes)
    X = probe()
    g = loaded.net(X).numpy()
    np.testing.assert_allclose(g[:, 0], regressor.predict(X), rtol=0, atol=1e-10)
    np.testing.assert_allclose(g, pre_activation(regressor, X), rtol=0, atol=1e-10)


def test_sklearn_binary_classifier(binary: MLPClassifier) -> None:
    loaded = load_model(binary)
    assert (loaded.loss, loaded.net.output_dim, loaded.net.activation.name) == ("bce", 1, "relu")
    X = probe()
    g = loaded.net(X)
    np.testing.assert_allclose(g.numpy(), pre_activation(binary, X), rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        torch.sigmoid(g).numpy()[:, 0], binary.predict_proba(X)[:, 1], rtol=0, atol=1e-12
    )


def test_sklearn_multiclass(multiclass: MLPClassifier) -> None:
    loaded = load_model(multiclass)
    assert (loaded.loss, loaded.net.output_dim, loaded.net.activation.name) == (
        "cross_entropy", 3, "sigmoid")
    X = probe()
    g = loaded.net(X)
    np.testing.assert_allclose(g.numpy(), pre_activation(multiclass, X), rtol=0, atol=1e-10)
    np.testing.assert_allclose(
        torch.softmax(g, 1).numpy(), multiclass.predict_proba(X), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("name", ["regressor", "binary", "multiclass"])
def test_export_sklearn(name: str, request: pytest.FixtureRequest) -> None:
    estimator = request.getfixturevalue(name)
    like = load_model(estimator)
    X = probe()
    same = export_model(like.net, like)
    assert type(same) is type(estimator) and same is not estimator
    if name == "regressor":
        np.testing.assert_allclose(same.predict(X), estimator.predict(X), rtol=0, atol=1e-12)
    else:
        np.testing.assert_array_equal(same.predict(X), estimator.predict(X))
        np.testing.assert_allclose(
            same.predict_proba(X), estimator.predict_proba(X), rtol=0, atol=1e-12
        )
        assert list(same.classes_) == list(estimator.classes_)

    m = like.net.width
    smaller = drop_last_neuron(like.net)
    reduced = export_model(smaller, like)
    assert reduced.hidden_layer_sizes == (m - 1,)
    assert estimator.hidden_layer_sizes == (m,)  # the original is untouched
    g = smaller(X)
    if name == "regressor":
        np.testing.assert_allclose(reduced.predict(X), g.numpy()[:, 0], rtol=0, atol=1e-12)
    elif name == "binary":
        p = torch.sigmoid(g).numpy()[:, 0]
        np.testing.assert_allclose(reduced.predict_proba(X)[:, 1], p, rtol=0, atol=1e-12)
    else:
        p = torch.softmax(g, 1).numpy()
        np.testing.assert_allclose(reduced.predict_proba(X), p, rtol=0, atol=1e-12)
    assert same_params(load_model(reduced).net, smaller)


# -------------------------------------------------------------------------------- data
def test_load_data_npz_and_npy(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((10, 3)), rng.standard_normal(10)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    data = load_data(tmp_path / "d.npz")
    assert (data.n, data.input_dim, data.output_dim, data.loss.name) == (10, 3, 1, "mse")
    assert torch.equal(data.X, torch.from_numpy(X))
    np.save(tmp_path / "X.npy", X)
    labels = np.arange(10) % 4
    np.save(tmp_path / "y.npy", labels)
    data = load_data(tmp_path / "X.npy", tmp_path / "y.npy", loss="cross_entropy")
    assert data.output_dim == 4
    assert torch.equal(data.targets.argmax(1), torch.from_numpy(labels))


def test_load_data_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("x1,label,x2\n0.5,1,2.0\n-1.0,0,3.5\n2.0,2,-1.0\n")
    data = load_data(path, target="label", loss="cross_entropy")
    assert data.output_dim == 3
    assert data.X.tolist() == [[0.5, 2.0], [-1.0, 3.5], [2.0, -1.0]]
    assert data.targets.argmax(1).tolist() == [1, 0, 2]
    assert load_data(path, target=1).targets[:, 0].tolist() == [1.0, 0.0, 2.0]
    last = load_data(path)  # default: last column
    assert last.targets[:, 0].tolist() == [2.0, 3.5, -1.0]
    assert last.X.tolist() == [[0.5, 1.0], [-1.0, 0.0], [2.0, 2.0]]
    assert load_data(path, target=-1).targets.tolist() == last.targets.tolist()


# ------------------------------------------------------------------------------ errors
def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


BAD_MODELS: list[tuple[str, type[Exception], str]] = [
    ("three_layers", sm.ModelError, "not a two-layer network"),
    ("conv", sm.ModelError, "found Conv1d, Tanh, Linear"),
    ("elu", sm.ActivationError, "unsupported activation module ELU"),
    ("corrupt_pt", sm.ModelError, "cannot read as a torch file"),
    ("empty_pt", sm.ModelError, "the file is empty"),
    ("corrupt_safetensors", sm.ModelError, "cannot read as a safetensors file"),
    ("corrupt_npz", sm.ModelError, "cannot read as an .npz file"),
    ("npz_without_W", sm.ModelError, "missing array 'W' (found: a, activation)"),
    ("npz_unknown_activation", sm.ActivationError, "unknown activation 'swoosh'"),
    ("directory", sm.ModelError, "is a directory"),
    ("missing", sm.ModelError, "no such file"),
    ("suffix", sm.ModelError, "unsupported model file suffix '.onnx'"),
    ("pt_list", sm.ModelError, "holds a list, expected an nn.Module or a state_dict"),
    ("unfitted", sm.ModelError, "the MLPRegressor is not fitted"),
    ("two_hidden", sm.ModelError, "has 2 hidden layers"),
    ("other_estimator", sm.ModelError, "unsupported scikit-learn model LinearRegression"),
    ("poisson", sm.ModelError, "loss='poisson'"),
    ("multilabel", sm.ModelError, "multilabel MLPClassifier"),
    ("other_object", sm.ModelError, "cannot load a model from an object of type int"),
    ("state_dict_three", sm.ModelError, "has 2 weight matrices, found 3"),
]


def make_bad_model(kind: str, tmp_path: Path) -> Any:
    if kind == "three_layers":
        return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh(),
                             nn.Linear(3, 1))
    if kind == "conv":
        return nn.Sequential(nn.Conv1d(1, 2, 3), nn.Tanh(), nn.Linear(2, 1))
    if kind == "elu":
        return nn.Sequential(nn.Linear(2, 3), nn.ELU(), nn.Linear(3, 1))
    if kind == "corrupt_pt":
        return write(tmp_path, "bad.pt", b"not a pickle at all")
    if kind == "empty_pt":
        return write(tmp_path, "empty.pt", b"")
    if kind == "corrupt_safetensors":
        return write(tmp_path, "bad.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    if kind == "corrupt_npz":
        return write(tmp_path, "bad.npz", b"PK\x03\x04 truncated")
    if kind == "npz_without_W":
        np.savez(tmp_path / "m.npz", a=np.ones(2), activation=np.array("tanh"))
        return tmp_path / "m.npz"
    if kind == "npz_unknown_activation":
        np.savez(tmp_path / "m.npz", a=np.ones(2), W=np.ones((2, 1)),
                 activation=np.array("swoosh"))
        return tmp_path / "m.npz"
    if kind == "directory":
        return tmp_path
    if kind == "missing":
        return str(tmp_path / "nope.pt")
    if kind == "suffix":
        return write(tmp_path, "m.onnx", b"x")
    if kind == "pt_list":
        torch.save([1, 2], tmp_path / "l.pt")
        return tmp_path / "l.pt"
    if kind == "unfitted":
        return MLPRegressor(hidden_layer_sizes=(3,))
    if kind == "two_hidden":
        return fit(MLPRegressor(hidden_layer_sizes=(3, 2), max_iter=5), np.arange(10.0))
    if kind == "other_estimator":
        return fit(LinearRegression(), np.arange(10.0))
    if kind == "poisson":
        estimator = MLPRegressor(hidden_layer_sizes=(3,), loss="poisson", max_iter=5)
        return fit(estimator, np.arange(10.0))
    if kind == "multilabel":
        y = np.stack([np.arange(12) % 2, np.arange(12) // 6], axis=1)
        return fit(MLPClassifier(hidden_layer_sizes=(3,), max_iter=5), y)
    if kind == "other_object":
        return 3
    if kind == "state_dict_three":
        return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh(),
                             nn.Linear(3, 1)).state_dict()
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, error, fragment", BAD_MODELS, ids=[b[0] for b in BAD_MODELS])
def test_bad_models(kind: str, error: type[Exception], fragment: str, tmp_path: Path) -> None:
    model = make_bad_model(kind, tmp_path)
    activation = "tanh" if kind == "state_dict_three" else None
    with pytest.raises(error) as info:
        load_model(model, activation=activation)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    if isinstance(model, (str, Path)):
        assert str(Path(model)) in message


def test_export_errors(regressor: MLPRegressor) -> None:
    like = load_model(regressor)
    with pytest.raises(sm.ModelError, match="scikit-learn has no activation 'gelu'"):
        export_model(like.net.replace(activation="gelu"), like)
    wrong = sm.TwoLayerNet(np.ones(2), np.ones((2, 5)))
    with pytest.raises(sm.ModelError, match="the sklearn model has d=3, K=1"):
        export_model(wrong, like)


def test_save_errors(tmp_path: Path) -> None:
    custom = sm.custom_activation("tanh_cubed", lambda z: torch.tanh(z) ** 3)
    net = sm.TwoLayerNet([1.0], [[2.0]], activation=custom)
    with pytest.raises(sm.ModelError, match="'tanh_cubed' is not in the registry"):
        save_model(net, tmp_path / "net.npz")
    with pytest.raises(sm.ModelError, match=r"unsupported model file suffix '\.h5'"):
        save_model(net, tmp_path / "net.h5")


def test_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    net = sm.TwoLayerNet([1.0], [[2.0]])
    with pytest.raises(ImportError, match=r"pip install 'saddlemap\[safetensors\]'"):
        save_model(net, tmp_path / "net.safetensors")


BAD_DATA: list[tuple[str, dict[str, Any], str]] = [
    ("missing.npz", {}, "no such file"),
    ("corrupt.npz", {}, "cannot read as an .npz file"),
    ("no_y.npz", {}, "missing array 'y' (found: X)"),
    ("lengths.npz", {}, "X has 4 samples but y has shape (3,)"),
    ("nan.npz", {}, "X contains NaN or Inf"),
    ("cells.csv", {}, "line 3, column 'x2': 'abc' is not a number"),
    ("nan.csv", {}, "y contains NaN or Inf"),
    ("ragged.csv", {}, "line 2 has 2 cells, the header has 3"),
    ("cells.csv", {"target": "nope"}, "no column named 'nope' (columns: x1, x2, y)"),
    ("cells.csv", {"target": 5}, "target column 5 is out of range for 3 columns"),
    ("header.csv", {}, "no data rows after the header"),
    ("X.npy", {}, "a .npy X file needs y_path"),
    ("X.npy", {"y_path": "short.npy"}, "X has 4 samples but y has shape (2,)"),
    ("X.npy", {"y_path": "missing.npy"}, "no such file"),
    ("corrupt.npy", {"y_path": "short.npy"}, "cannot read as a .npy file"),
    ("data.txt", {}, "unsupported data file suffix '.txt'"),
    ("empty.csv", {}, "the file is empty"),
    ("no_y.npz", {"target": "y"}, "target is only used with CSV files"),
    ("float_labels.npz", {"loss": "cross_entropy"}, "cross-entropy targets must be integer"),
]


def make_bad_data(tmp_path: Path) -> None:
    np.savez(tmp_path / "no_y.npz", X=np.ones((3, 2)))
    np.savez(tmp_path / "lengths.npz", X=np.ones((4, 2)), y=np.ones(3))
    np.savez(tmp_path / "nan.npz", X=np.array([[1.0], [np.nan]]), y=np.ones(2))
    np.savez(tmp_path / "float_labels.npz", X=np.ones((2, 1)), y=np.array([0.5, 1.0]))
    write(tmp_path, "corrupt.npz", b"PK\x03\x04 truncated")
    write(tmp_path, "corrupt.npy", b"\x93NUMPY garbage")
    write(tmp_path, "cells.csv", "x1,x2,y\n1,2,3\n4,abc,6\n")
    write(tmp_path, "nan.csv", "x1,x2,y\n1,2,nan\n")
    write(tmp_path, "ragged.csv", "x1,x2,y\n1,2\n")
    write(tmp_path, "header.csv", "x1,x2,y\n")
    write(tmp_path, "empty.csv", "")
    write(tmp_path, "data.txt", "1 2 3\n")
    np.save(tmp_path / "X.npy", np.ones((4, 2)))
    np.save(tmp_path / "short.npy", np.ones(2))


@pytest.mark.parametrize(
    "name, kwargs, fragment", BAD_DATA, ids=[f"{b[0]}-{b[2][:20]}" for b in BAD_DATA]
)
def test_bad_data(name: str, kwargs: dict[str, Any], fragment: str, tmp_path: Path) -> None:
    make_bad_data(tmp_path)
    if "y_path" in kwargs:
        kwargs = {**kwargs, "y_path": tmp_path / kwargs["y_path"]}
    with pytest.raises(sm.DataError) as info:
        load_data(tmp_path / name, **kwargs)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert str(tmp_path) in message


# ------------------------------------------------------------------ scikit-learn's alpha
def fit_converged(estimator: Any, X: np.ndarray, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a fit that stops early fails here
        return estimator.fit(X, y)


def test_sklearn_penalty_makes_the_lbfgs_fit_stationary() -> None:
    rng = np.random.default_rng(1)
    n, alpha = 30, 3.0
    X = rng.standard_normal((n, 2))
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2
    estimator = fit_converged(MLPRegressor(
        hidden_layer_sizes=(3,), activation="tanh", solver="lbfgs", alpha=alpha, tol=1e-15,
        max_iter=100_000, max_fun=1_000_000, random_state=1), X, y)
    penalty = sklearn_penalty(estimator, n)
    assert penalty == Penalty(alpha / n, "weights")
    net, data = load_model(estimator).net, sm.Dataset(X, y)
    grad_R = float(sm.gradient(net, data).norm())
    assert grad_R > 1e-2  # the penalty holds the fit away from a critical point of R
    grad_L = float(sm.gradient(net, data.with_penalty(penalty)).norm())
    assert grad_L <= 1e-3 * grad_R
    # scikit-learn's own objective value is saddlemap's R + P (one output)
    assert sm.loss(net, data.with_penalty(penalty)) == pytest.approx(estimator.loss_, rel=1e-12)
    # the other conventions leave a gradient of the size of ∇R
    for wrong in (Penalty(alpha / n, "all"), Penalty(alpha / (2 * n), "weights")):
        assert float(sm.gradient(net, data.with_penalty(wrong)).norm()) > 0.1 * grad_R


def test_sklearn_penalty_classifier_log_loss() -> None:
    rng = np.random.default_rng(0)
    n, alpha = 40, 0.5
    X = rng.standard_normal((n, 3))
    labels = rng.integers(0, 3, n)
    estimator = fit_converged(MLPClassifier(
        hidden_layer_sizes=(4,), activation="tanh", solver="lbfgs", alpha=alpha, tol=1e-15,
        max_iter=100_000, max_fun=1_000_000, random_state=0), X, labels)
    loaded = load_model(estimator)
    data = sm.Dataset(X, labels, loss=loaded.loss, num_outputs=3)
    penalty = sklearn_penalty(estimator, n)
    grad_R = float(sm.gradient(loaded.net, data).norm())
    grad_L = float(sm.gradient(loaded.net, data.with_penalty(penalty)).norm())
    assert grad_R > 1e-2 and grad_L <= 1e-3 * grad_R
    assert sm.loss(loaded.net, data.with_penalty(penalty)) == pytest.approx(
        estimator.loss_, rel=1e-12)


def test_sklearn_penalty_follows_the_solver_blocks() -> None:
    def lam(n: int, **params: Any) -> float:
        penalty = sklearn_penalty(MLPRegressor(alpha=0.2, **params), n)
        assert penalty is not None and penalty.scope == "weights"
        return penalty.weight_decay

    assert lam(35, solver="lbfgs", batch_size=10) == pytest.approx(0.2 / 35)
    assert lam(30, solver="adam") == pytest.approx(0.2 / 30)  # "auto": min(200, n)
    assert lam(1000, solver="sgd") == pytest.approx(0.2 / 200)
    assert lam(35, solver="adam", batch_size=10) == pytest.approx(0.2 * (3 / 10 + 1 / 5) / 4)
    assert lam(35, solver="sgd", batch_size=100) == pytest.approx(0.2 / 35)  # clipped to n
    # early stopping trains on n − ⌈0.1 n⌉ samples
    assert lam(50, solver="adam", early_stopping=True) == pytest.approx(0.2 / 45)
    assert sklearn_penalty(MLPRegressor(alpha=0.0), 30) is None
    assert sklearn_penalty(MLPRegressor(alpha=1e-4), 100) == Penalty(1e-6, "weights")
    for bad in (0, -3, 2.5):
        with pytest.raises(sm.OptionError, match="n_samples"):
            sklearn_penalty(MLPRegressor(), bad)  # type: ignore[arg-type]
