"""The MLP container: layout, outputs, torch / state dict / scikit-learn / two-layer interop."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import saddlemap as sm
from saddlemap.deep import MLP, MLPLayout, sklearn_loss

EPS = torch.finfo(torch.float64).eps


def random_mlp(sizes: tuple[int, ...], bias: tuple[bool, ...], activation: str = "tanh",
               seed: int = 0) -> MLP:
    gen = torch.Generator().manual_seed(seed)
    L = len(sizes) - 1
    return MLP([torch.randn(sizes[j + 1], sizes[j], generator=gen) for j in range(L)],
               [torch.randn(sizes[j + 1], generator=gen) if bias[j] else None for j in range(L)],
               activation=activation)


SHAPES = [((2, 3, 1), (True, True)), ((2, 3, 4, 2), (True, False, True)),
          ((3, 2, 2, 2, 3), (False, False, False, False)), ((1, 5, 1), (False, True))]
TORCH_ACTIVATIONS = ["tanh", "sigmoid", "softplus", "gelu", "silu", "relu", "identity", "erf"]


def _manual_forward(mlp: MLP, X: torch.Tensor) -> torch.Tensor:
    h = X
    for j in range(mlp.depth):
        h = h @ mlp.weights[j].T + (0.0 if mlp.biases[j] is None else mlp.biases[j])
        if j < mlp.depth - 1:
            h = mlp.activation(h)
    return h


@pytest.mark.parametrize(("sizes", "bias"), SHAPES)
def test_layout_and_flat_round_trip(sizes: tuple[int, ...], bias: tuple[bool, ...]) -> None:
    mlp = random_mlp(sizes, bias)
    P = sum(sizes[j + 1] * (sizes[j] + int(bias[j])) for j in range(len(bias)))
    assert mlp.num_params == P == mlp.flatten().numel()
    assert mlp.widths == sizes[1:-1] and mlp.depth == len(bias)
    assert (mlp.input_dim, mlp.output_dim) == (sizes[0], sizes[-1])
    theta = torch.arange(P, dtype=torch.float64)
    assert torch.equal(mlp.unflatten(theta).flatten(), theta)
    # the flat layout is torch's parameter order
    flat = nn.utils.parameters_to_vector(mlp.to_torch().parameters())
    assert torch.equal(flat, mlp.flatten())
    X = torch.randn(5, sizes[0], generator=torch.Generator().manual_seed(1))
    assert torch.equal(mlp(X), _manual_forward(mlp, X))
    hidden = mlp.hidden(X)
    assert [tuple(h.shape) for h in hidden] == [(5, s) for s in sizes]


@pytest.mark.parametrize(("activation", "shape"), list(itertools.product(TORCH_ACTIVATIONS,
                                                                        SHAPES)))
def test_torch_round_trip_is_exact(activation: str, shape: tuple) -> None:
    mlp = random_mlp(*shape, activation=activation)
    module = mlp.to_torch()
    back = MLP.from_torch(module)
    assert torch.equal(back.flatten(), mlp.flatten())
    assert back.layout == mlp.layout and back.activation == mlp.activation
    X = torch.randn(4, mlp.input_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = module(X)
    # torch's Linear fuses the bias (addmm) and its Softplus is another formula: a few ulps
    atol = 16 * EPS * (1.0 + float(expected.abs().max()))
    torch.testing.assert_close(mlp(X), expected, rtol=0, atol=atol)
    sd = MLP.from_state_dict(module.state_dict(), activation)
    assert torch.equal(sd.flatten(), mlp.flatten())


def test_float32_modules_are_read_in_float64_or_kept() -> None:
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(),
                           nn.Linear(4, 2)).float()
    mlp = MLP.from_torch(module)
    assert mlp.dtype == torch.float64
    assert MLP.from_torch(module, dtype=None).dtype == torch.float32
    X = torch.randn(6, 3, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(mlp(X.double()).float(), module(X), rtol=1e-6, atol=1e-6)


def test_state_dict_of_a_custom_module() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(2, 5)
            self.mid = nn.Linear(5, 3, bias=False)
            self.out = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.sigmoid(self.mid(torch.sigmoid(self.inp(x)))))

    net = Net().double()
    mlp = MLP.from_state_dict(net.state_dict(), "sigmoid")
    assert mlp.layout.bias == (True, False, True)
    X = torch.randn(7, 2)
    with torch.no_grad():
        torch.testing.assert_close(mlp(X), net(X), rtol=1e-14, atol=1e-14)


SKLEARN = [("MLPRegressor", act) for act in ("identity", "tanh", "logistic", "relu")] + [
    ("MLPClassifier", "tanh"), ("MLPClassifier-binary", "logistic")]


@pytest.mark.parametrize(("kind", "activation"), SKLEARN)
def test_sklearn_mlps_with_several_hidden_layers(kind: str, activation: str) -> None:
    neural = pytest.importorskip("sklearn.neural_network")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    if kind == "MLPRegressor":
        est = neural.MLPRegressor(hidden_layer_sizes=(5, 4, 3), activation=activation,
                                  max_iter=30, random_state=0)
        y = rng.standard_normal((40, 2))
        loss = "mse"
    else:
        est = neural.MLPClassifier(hidden_layer_sizes=(6, 4), activation=activation,
                                   max_iter=30, random_state=0)
        classes = 2 if kind.endswith("binary") else 3
        y = rng.integers(0, classes, 40)
        loss = "bce" if classes == 2 else "cross_entropy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "did not converge"
        est.fit(X, y)
    mlp = MLP.from_sklearn(est)
    assert mlp.widths == tuple(est.hidden_layer_sizes)
    assert mlp.activation.name == {"logistic": "sigmoid"}.get(activation, activation)
    assert sklearn_loss(est) == loss
    g = mlp(torch.from_numpy(X))
    if loss == "mse":
        np.testing.assert_allclose(g.numpy(), est.predict(X), rtol=1e-12, atol=1e-12)
    elif loss == "cross_entropy":
        np.testing.assert_allclose(torch.softmax(g, 1).numpy(), est.predict_proba(X), atol=1e-12)
    else:
        np.testing.assert_allclose(torch.sigmoid(g).numpy()[:, 0], est.predict_proba(X)[:, 1],
                                   atol=1e-12)
    # the data for that loss fit the network
    data = sm.Dataset(X, y, loss=loss, num_outputs=mlp.output_dim)
    assert np.isfinite(sm.deep.mlp_loss(mlp, data))


def test_two_layer_conversion_both_ways() -> None:
    gen = torch.Generator().manual_seed(4)
    net = sm.TwoLayerNet(torch.randn(4, 2, generator=gen), torch.randn(4, 3, generator=gen),
                         b=torch.randn(4, generator=gen), activation="erf")
    mlp = MLP.from_two_layer(net)
    assert mlp.depth == 2 and mlp.widths == (4,) and mlp.layout.bias == (True, False)
    X = torch.randn(5, 3, generator=gen)
    torch.testing.assert_close(mlp(X), net(X), rtol=0, atol=0)
    back = mlp.to_two_layer()
    assert torch.equal(back.flatten(), net.flatten()) and back.activation == net.activation
    with pytest.raises(sm.ModelError, match="depth 3"):
        random_mlp((2, 3, 3, 1), (True, True, True)).to_two_layer()


def test_replace_and_to() -> None:
    mlp = random_mlp((2, 3, 1), (True, False))
    assert mlp.replace(activation="sin").activation.name == "sin"
    assert mlp.to(torch.float32).dtype == torch.float32
    assert "MLP(2-3-1, bias=b-" in repr(mlp)


class _Odd(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


BAD_MODULES = [
    (nn.Sequential(nn.Linear(2, 3)), sm.ModelError, "at least one hidden layer"),
    (nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(4, 1)), sm.ModelError, "do not chain"),
    (nn.Sequential(nn.Linear(2, 3), nn.Dropout(), nn.Tanh(), nn.Linear(3, 1)), sm.ModelError,
     "Dropout"),
    (nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)),
     sm.ActivationError, "same activation"),
    (nn.Sequential(nn.Linear(2, 3), nn.ELU(), nn.Linear(3, 1)), sm.ActivationError, "ELU"),
    (nn.Sequential(nn.Conv1d(2, 3, 1), nn.Tanh(), nn.Linear(3, 1)), sm.ModelError, "Conv1d"),
]


@pytest.mark.parametrize(("module", "error", "match"), BAD_MODULES)
def test_unsupported_modules_are_refused(module: nn.Module, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        MLP.from_torch(module)


def test_a_module_that_computes_something_else_is_refused() -> None:
    class Skip(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 1.0

    module = Skip(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    with pytest.raises(sm.ModelError, match="does not compute"):
        MLP.from_torch(module)


BAD_PARAMETERS = [
    (dict(weights=[[[1.0]]]), "at least two layers"),
    (dict(weights=[[[1.0, 2.0]], [[1.0, 2.0]]]), "takes 2 inputs"),
    (dict(weights=[[[float("nan")]], [[1.0]]]), "NaN"),
    (dict(weights=[[[1.0]], [[1.0]]], biases=[None]), "one entry per layer"),
    (dict(weights=[[[1.0]], [[1.0]]], biases=[[1.0, 2.0], None]), r"biases\[0\]"),
    (dict(weights=[[1.0], [[1.0]]]), "must be a matrix"),
    (dict(weights=np.zeros((2, 2))), "sequence of matrices"),
    (dict(weights=[np.zeros((0, 2)), np.zeros((1, 0))]), "width 0"),
    (dict(weights=[[["a"]], [[1.0]]]), "real numbers"),
]


@pytest.mark.parametrize(("kwargs", "match"), BAD_PARAMETERS)
def test_bad_parameters_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(sm.ModelError, match=match):
        MLP(**kwargs)


def test_bad_state_dicts_and_activations() -> None:
    sd = random_mlp((2, 3, 1), (True, True)).to_torch().state_dict()
    with pytest.raises(sm.ModelError, match="at least 2 weight"):
        MLP.from_state_dict({"0.weight": sd["0.weight"]}, "tanh")
    with pytest.raises(sm.ModelError, match="maps names to tensors"):
        MLP.from_state_dict({**sd, "x": 3}, "tanh")
    with pytest.raises(sm.ModelError, match="do not chain"):
        MLP.from_state_dict({"a.weight": torch.zeros(3, 2), "b.weight": torch.zeros(1, 4)},
                            "tanh")
    with pytest.raises(sm.ModelError, match="bias has shape"):
        MLP.from_state_dict({**sd, "0.bias": torch.zeros(5)}, "tanh")
    with pytest.raises(sm.ActivationError, match="unknown activation"):
        MLP.from_state_dict(sd, "elu")
    with pytest.raises(sm.DataError, match=r"shape \(n, 2\)"):
        random_mlp((2, 3, 1), (True, True))(torch.zeros(4, 3))
    with pytest.raises(sm.ModelError):
        MLPLayout((2, 1), (True,))


def test_bad_sklearn_estimators() -> None:
    neural = pytest.importorskip("sklearn.neural_network")
    linear = pytest.importorskip("sklearn.linear_model")
    with pytest.raises(sm.ModelError, match="not fitted"):
        MLP.from_sklearn(neural.MLPRegressor(hidden_layer_sizes=(3, 3)))
    with pytest.raises(sm.ModelError, match="LinearRegression"):
        MLP.from_sklearn(linear.LinearRegression())
