"""Hostile model and data files, in process: loading never runs a file's code by default.

Every hostile file here carries a payload that creates a marker file when the file is
unpickled (or, for skops, when its objects are made); each test first checks that the
payload is live (the unsafe way of reading the file does create the marker), so a refusal
is a real one.
"""

from __future__ import annotations

import importlib
import pathlib
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

import saddlemap as sm
from saddlemap.io import load_data, load_model, save_estimator

sio = pytest.importorskip("skops.io")

BOOM_MODULE = '''
import pathlib

class Boom:
    """Touches the file its state names when it is made from a file."""

    def __setstate__(self, state):
        pathlib.Path(state["marker"]).touch()
'''


class Touch:
    """A pickle payload: unpickling it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def fitted_mlp(classifier: bool = False) -> Any:
    X = np.random.default_rng(0).standard_normal((30, 2))
    y = (X[:, 0] > 0).astype(int) if classifier else np.tanh(X[:, 0])
    estimator = (MLPClassifier if classifier else MLPRegressor)(
        hidden_layer_sizes=(3,), activation="tanh", max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def boom_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A class whose ``__setstate__`` touches a file, in an importable module under tmp_path."""
    name = f"saddlemap_boom_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(BOOM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name).Boom


def skops_with_boom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: Path,
                    nested: bool) -> Path:
    """A .skops file holding a Boom: inside a real MLP (nested) or as the whole file."""
    boom = boom_class(tmp_path, monkeypatch)()
    boom.marker = str(marker)
    path = tmp_path / ("nested.skops" if nested else "top.skops")
    if nested:
        estimator = fitted_mlp()
        estimator.extra_ = boom
        sio.dump(estimator, path)
    else:
        sio.dump(boom, path)
    return path


def write_hostile(suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  marker: Path) -> Path:
    """A file of the given suffix whose payload touches ``marker`` when unpickled."""
    if suffix == ".skops":
        return skops_with_boom(tmp_path, monkeypatch, marker, nested=True)
    path = tmp_path / f"hostile{suffix}"
    if suffix in (".pt", ".pth"):
        torch.save({"0.weight": torch.ones(2, 1), "payload": Touch(marker)}, path)
    elif suffix == ".npz":
        np.savez(path, a=np.ones(2), W=np.ones((2, 1)),
                 activation=np.array([Touch(marker)], dtype=object))
    else:
        path.write_bytes(pickle.dumps(Touch(marker)))
    return path


def read_unsafely(path: Path) -> None:
    """Read the file the way that runs its code (to show its payload is live)."""
    suffix = path.suffix
    if suffix in (".pt", ".pth"):
        torch.load(path, weights_only=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=True) as archive:
            archive["activation"]
    elif suffix == ".skops":
        sio.load(path, trusted=sio.get_untrusted_types(file=path))
    else:
        pickle.loads(path.read_bytes())


HOSTILE_SUFFIXES = [".pt", ".pth", ".pkl", ".pickle", ".joblib", ".skops", ".npz"]


@pytest.mark.parametrize("suffix", HOSTILE_SUFFIXES)
def test_a_hostile_file_is_refused_without_running(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    path = write_hostile(suffix, tmp_path, monkeypatch, marker)
    with pytest.raises(sm.ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert not marker.exists(), "loading ran the file's code"
    assert str(path) in message and "\n" not in message
    if suffix != ".npz":
        assert "refused" in message and "--trust-pickle" in message
    else:
        assert "never loaded" in message and "allow_pickle" not in message
    read_unsafely(path)  # the payload is live: reading it the unsafe way runs it
    assert marker.exists()


def test_a_whole_skops_payload_is_refused_by_its_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    path = skops_with_boom(tmp_path, monkeypatch, marker, nested=False)
    with pytest.raises(sm.ModelError, match="expected a scikit-learn MLPRegressor"):
        load_model(path, trust_pickle=True)
    assert not marker.exists()


def test_skops_refusal_does_not_import_the_named_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    path = skops_with_boom(tmp_path, monkeypatch, marker, nested=True)
    imported = tmp_path / "imported"
    module = next(p.stem for p in tmp_path.glob("saddlemap_boom_*.py"))
    (tmp_path / f"{module}.py").write_text(
        f"import pathlib\npathlib.Path({str(imported)!r}).touch()\n" + BOOM_MODULE)
    monkeypatch.delitem(sys.modules, module)
    with pytest.raises(sm.ModelError, match="types a scikit-learn MLP does not have"):
        load_model(path)
    assert not imported.exists() and not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_a_whole_torch_module_loads_only_when_trusted(suffix: str, tmp_path: Path) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    path = tmp_path / f"module{suffix}"
    torch.save(module, path)
    with pytest.raises(sm.ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert "torch.nn.modules.container.Sequential" in message
    assert "state dict" in message and ".safetensors" in message
    assert "weights_only=False" not in message
    loaded = load_model(path, trust_pickle=True)
    assert loaded.kind is sm.ModelKind.TORCH and loaded.net.width == 3
    torch.save(module.state_dict(), path)  # a state dict needs no trust
    assert load_model(path, activation="tanh").net.width == 3


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib"])
def test_a_pickled_estimator_loads_only_when_trusted(suffix: str, tmp_path: Path) -> None:
    estimator = fitted_mlp(classifier=True)
    path = tmp_path / f"mlp{suffix}"
    if suffix == ".joblib":
        import joblib

        joblib.dump(estimator, path)
    else:
        path.write_bytes(pickle.dumps(estimator))
    with pytest.raises(sm.ModelError, match=r"refused: the file is a pickle.*\.skops"):
        load_model(path)
    loaded = load_model(path, trust_pickle=True)
    assert loaded.kind is sm.ModelKind.SKLEARN and loaded.loss == "bce"
    assert loaded.path == str(path)


def test_skops_is_the_safe_scikit_learn_format(tmp_path: Path) -> None:
    for classifier in (False, True):
        estimator = fitted_mlp(classifier)
        path = tmp_path / "mlp.skops"
        save_estimator(estimator, path)
        loaded = load_model(path)  # no trust needed
        assert loaded.kind is sm.ModelKind.SKLEARN and loaded.net.width == 3
        X = np.random.default_rng(1).standard_normal((5, 2))
        again = sio.load(path, trusted=sio.get_untrusted_types(file=path))
        np.testing.assert_array_equal(again.predict(X), estimator.predict(X))
    with pytest.raises(sm.ModelError, match=r"not '\.txt'"):
        save_estimator(estimator, tmp_path / "mlp.txt")


def test_a_skops_mlp_with_two_hidden_layers_names_the_file(tmp_path: Path) -> None:
    X = np.random.default_rng(0).standard_normal((20, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        deep = MLPRegressor(hidden_layer_sizes=(3, 2), max_iter=5).fit(X, X[:, 0])
    save_estimator(deep, tmp_path / "deep.skops")
    with pytest.raises(sm.ModelError, match=r"deep\.skops: the MLPRegressor has 2 hidden"):
        load_model(tmp_path / "deep.skops")


@pytest.mark.parametrize("suffix", [".pkl", ".skops"])
def test_an_activation_for_a_scikit_learn_file_is_refused(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"mlp{suffix}"
    save_estimator(fitted_mlp(), path)
    with pytest.raises(sm.ModelError, match="cannot be given for a scikit-learn model"):
        load_model(path, activation="relu", trust_pickle=True)


# --------------------------------------------------------------------------- messages
def test_a_width_zero_npz_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty_net.npz"
    np.savez(path, a=np.zeros((0, 1)), W=np.zeros((0, 2)), activation=np.array("tanh"))
    with pytest.raises(sm.ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and "width 0" in message and "reshape" not in message


def test_a_width_zero_state_dict_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    torch.save({"0.weight": torch.zeros(0, 2), "0.bias": torch.zeros(0),
                "2.weight": torch.zeros(1, 0), "2.bias": torch.zeros(1)}, path)
    with pytest.raises(sm.ModelError, match=r"empty\.pt: the network has width 0"):
        load_model(path, activation="tanh")


@pytest.mark.parametrize("name", ["model.npz", "data.npz", "X.npy"])
def test_random_bytes_in_numpy_files_never_suggest_allow_pickle(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(3).bytes(256))
    np.save(tmp_path / "y.npy", np.ones(3))
    with pytest.raises(sm.SaddlemapError) as info:
        if name == "model.npz":
            load_model(path)
        else:
            load_data(path, tmp_path / "y.npy" if name.endswith(".npy") else None)
    message = str(info.value)
    assert str(path) in message and "allow_pickle" not in message and "pickled" not in message


def test_an_object_array_in_npy_data_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    np.save(tmp_path / "X.npy", np.array([Touch(marker)], dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.ones(1))
    with pytest.raises(sm.DataError) as info:
        load_data(tmp_path / "X.npy", tmp_path / "y.npy")
    assert "never loaded" in str(info.value) and "allow_pickle" not in str(info.value)
    assert not marker.exists()


def test_a_utf8_bom_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffx1,x2,label\n0.5,1.0,0\n-1.0,2.0,1\n".encode())
    data = load_data(path, target="label", loss="cross_entropy")
    assert data.n == 2
    # the first column is found by its name, without the mark in front
    by_first = load_data(path, target="x1")
    np.testing.assert_array_equal(by_first.targets.flatten().numpy(), [0.5, -1.0])


def test_a_csv_without_a_header_row_is_refused_not_shortened(tmp_path: Path) -> None:
    path = tmp_path / "headless.csv"
    path.write_text("0.5,1.0,0\n-1.0,2.0,1\n3.0,4.0,0\n")
    with pytest.raises(sm.DataError) as info:
        load_data(path)
    message = str(info.value)
    assert str(path) in message and "header" in message and "0.5" in message


def test_a_corrupt_torch_file_never_suggests_weights_only_false(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(sm.ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and "weights_only" not in message and "\n" not in message


def test_a_compressed_scikit_learn_model_in_a_report_is_skops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saddlemap.report import _save_estimator_or_net

    estimator = fitted_mlp()
    net = load_model(estimator).net
    path = _save_estimator_or_net(estimator, net, tmp_path)
    assert path.name == "compressed.skops" and load_model(path).net.width == 3
    assert zipfile.is_zipfile(path)
    monkeypatch.setitem(sys.modules, "skops.io", None)  # skops missing: the network, as .npz
    path = _save_estimator_or_net(estimator, net, tmp_path)
    assert path.name == "compressed.npz" and load_model(path).net.width == 3
