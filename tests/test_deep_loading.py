"""Loading deep MLPs: objects, torch files, safetensors, skops, pickles; safe by default."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import saddlemap as sm
from saddlemap.deep import MLP, LoadedMLP, load_mlp
from saddlemap.verdicts import NoteCode


def deep_module() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4, bias=False), nn.Tanh(),
                         nn.Linear(4, 2)).double()


def same(loaded: LoadedMLP, module: nn.Module) -> None:
    expected = MLP.from_torch(module)
    assert loaded.net.layout == expected.layout
    assert torch.equal(loaded.net.flatten(), expected.flatten())


def test_objects() -> None:
    module = deep_module()
    loaded = load_mlp(module)
    same(loaded, module)
    assert loaded.loss == "mse" and any(n.code is NoteCode.LOSS_ASSUMED for n in loaded.notes)
    same(load_mlp(module.state_dict(), activation="tanh"), module)
    with pytest.raises(sm.ModelError, match="pass activation="):
        load_mlp(module.state_dict())
    with pytest.raises(sm.ModelError, match="cannot be given"):
        load_mlp(module, activation="tanh")
    with pytest.raises(sm.ModelError, match="from a int"):
        load_mlp(3)


def test_float32_modules_are_noted() -> None:
    loaded = load_mlp(deep_module().float())
    assert loaded.net.dtype == torch.float64
    assert any(n.code is NoteCode.DTYPE_CONVERTED for n in loaded.notes)


def test_torch_files(tmp_path: Path) -> None:
    module = deep_module()
    path = tmp_path / "m.pt"
    torch.save(module.state_dict(), path)
    same(load_mlp(path, activation="tanh"), module)
    torch.save({"state_dict": module.state_dict(), "activation": "tanh"}, path)
    same(load_mlp(path), module)
    whole = tmp_path / "whole.pt"
    torch.save(module, whole)
    with pytest.raises(sm.ModelError, match="refused"):
        load_mlp(whole)
    same(load_mlp(whole, trust_pickle=True), module)


def test_safetensors_files_in_any_key_order(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.torch")
    module = deep_module()
    path = tmp_path / "m.safetensors"
    st.save_file(module.state_dict(), str(path), metadata={"activation": "tanh"})
    same(load_mlp(path), module)
    # names that sort against the order of the layers
    sd = module.state_dict()
    renamed = {"z.weight": sd["0.weight"], "z.bias": sd["0.bias"], "m.weight": sd["2.weight"],
               "a.weight": sd["4.weight"], "a.bias": sd["4.bias"]}
    st.save_file(renamed, str(path))
    same(load_mlp(path, activation="tanh"), module)


def _fitted() -> object:
    neural = pytest.importorskip("sklearn.neural_network")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 3)), rng.integers(0, 3, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "did not converge"
        return neural.MLPClassifier(hidden_layer_sizes=(5, 4), max_iter=20,
                                    random_state=0).fit(X, y)


def test_sklearn_objects_skops_and_pickles(tmp_path: Path) -> None:
    est = _fitted()
    loaded = load_mlp(est)
    assert loaded.loss == "cross_entropy" and loaded.net.widths == (5, 4)
    pytest.importorskip("skops.io")
    path = tmp_path / "m.skops"
    sm.save_estimator(est, path)
    from_file = load_mlp(path)
    assert torch.equal(from_file.net.flatten(), loaded.net.flatten())
    pkl = tmp_path / "m.pkl"
    pkl.write_bytes(pickle.dumps(est))
    with pytest.raises(sm.ModelError, match="trust_pickle=True"):
        load_mlp(pkl)
    assert torch.equal(load_mlp(pkl, trust_pickle=True).net.flatten(), loaded.net.flatten())


@pytest.mark.parametrize(("name", "content", "match"), [
    ("m.pt", b"\x00\x01 not a torch file", "cannot read as a torch file"),
    ("m.safetensors", b"garbage", "cannot read as a safetensors"),
    ("m.skops", b"PK garbage", "cannot read as a skops"),
    ("m.onnx", b"x", "unknown model suffix"),
    ("m.pt", b"", "empty"),
])
def test_broken_files_are_refused_in_one_line(tmp_path: Path, name: str, content: bytes,
                                               match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(sm.ModelError, match=match) as info:
        load_mlp(path, activation="tanh" if name.endswith(".pt") else None)
    assert "\n" not in str(info.value)


def test_a_missing_file_and_a_two_layer_file(tmp_path: Path) -> None:
    with pytest.raises(sm.ModelError, match="no such file"):
        load_mlp(tmp_path / "nope.pt")
    path = tmp_path / "two.pt"
    torch.save(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).state_dict(), path)
    assert load_mlp(path, activation="tanh").net.depth == 2  # the special case reads too
