"""TwoLayerNet: layout, outputs, torch round trips and the errors of bad parameters."""

from __future__ import annotations

import pytest
import torch
from conftest import ACTIVATIONS, BIASES, Case, make_problem
from torch import nn

import saddlemap as sm


def _name(act: str | sm.Activation) -> str:
    return act if isinstance(act, str) else act.name


@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("K", [1, 3])
def test_flat_layout_is_neuron_by_neuron(bias: str, K: int) -> None:
    net, _ = make_problem(Case("tanh", bias, K, 3))
    theta = net.flatten()
    lay = net.layout
    assert theta.shape == (lay.num_params,)
    for k in range(net.width):
        block = theta[lay.neuron_slice(k)]
        assert torch.equal(block[:K], net.a[k])
        assert torch.equal(block[K : K + net.input_dim], net.W[k])
        if net.b is not None:
            assert block[-1] == net.b[k]
    if net.c is not None:
        assert torch.equal(theta[-K:], net.c)
    assert torch.equal(net.unflatten(theta).flatten(), theta)


def test_outputs_formula() -> None:
    net, data = make_problem(Case("sigmoid", "both_biases", 3, 7))
    assert net.b is not None and net.c is not None
    expected = torch.sigmoid(data.X @ net.W.T + net.b) @ net.a + net.c
    torch.testing.assert_close(net(data.X), expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=_name)
@pytest.mark.parametrize("bias", BIASES)
def test_torch_round_trip_is_exact(activation: str | sm.Activation, bias: str) -> None:
    net, data = make_problem(Case(activation, bias, 3, 7))
    module = net.to_torch()
    assert isinstance(module, nn.Sequential) and len(module) == 3
    back = sm.TwoLayerNet.from_torch(module)
    assert torch.equal(back.flatten(), net.flatten())
    assert back.activation == net.activation
    with torch.no_grad():
        # torch's kernels (GELU's, Softplus's linear tail) round differently from ours.
        torch.testing.assert_close(module(data.X), net(data.X), rtol=1e-12, atol=1e-12)
    state = sm.TwoLayerNet.from_state_dict(module.state_dict(), activation=net.activation)
    assert torch.equal(state.flatten(), net.flatten())


def test_from_torch_float32_module_and_dtype_choice() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 2)).float()
    net = sm.TwoLayerNet.from_torch(module)
    assert net.dtype == torch.float64 and net.activation.name == "gelu"
    assert sm.TwoLayerNet.from_torch(module, dtype=None).dtype == torch.float32
    assert sm.TwoLayerNet.from_torch(
        nn.Sequential(nn.Linear(2, 3), nn.LeakyReLU(0.3), nn.Linear(3, 1))
    ).activation.params == (("negative_slope", 0.3),)


class _Swapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.sigmoid(self.fc1(x)))  # not the registered activation


@pytest.mark.parametrize(
    ("module", "error", "match"),
    [
        (nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)),
         sm.ModelError, "not a two-layer network"),
        (nn.Sequential(nn.Conv1d(1, 1, 1), nn.Tanh(), nn.Linear(3, 1)),
         sm.ModelError, "Conv1d"),
        (nn.Sequential(nn.Linear(2, 3), nn.ELU(), nn.Linear(3, 1)),
         sm.ActivationError, "unsupported activation module ELU"),
        (nn.Sequential(nn.Linear(2, 3), nn.GELU("tanh"), nn.Linear(3, 1)),
         sm.ActivationError, "approximate='tanh'"),
        (nn.Sequential(nn.Linear(2, 3), nn.Softplus(beta=2.0), nn.Linear(3, 1)),
         sm.ActivationError, "beta=2"),
        (nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(4, 1)),
         sm.ModelError, "do not chain"),
        (_Swapped(), sm.ModelError, "does not compute"),
    ],
)
def test_from_torch_refuses_what_is_not_a_two_layer_network(
    module: nn.Module, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        sm.TwoLayerNet.from_torch(module)


def test_state_dict_errors() -> None:
    three = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1))
    with pytest.raises(sm.ModelError, match="2 weight matrices, found 3"):
        sm.TwoLayerNet.from_state_dict(three.state_dict(), activation="tanh")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"a": torch.ones(3), "W": torch.ones(2, 2)}, r"a must have shape \(2,\)"),
        ({"a": torch.ones(2), "W": torch.ones(2)}, r"W must have shape \(m, d\)"),
        ({"a": torch.ones(2), "W": torch.ones(2, 2), "b": torch.ones(3)}, "b must have"),
        ({"a": torch.ones(2, 2), "W": torch.ones(2, 2), "c": torch.ones(3)}, "c must have"),
        ({"a": torch.tensor([1.0, float("nan")]), "W": torch.ones(2, 2)}, "a contains NaN"),
        ({"a": torch.ones(2), "W": [["x", "y"], ["z", "w"]]}, "W must be real"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(sm.SaddlemapError, match=match):
        sm.TwoLayerNet(**kwargs)  # type: ignore[arg-type]


def test_dtype_and_device_follow_tensors() -> None:
    net = sm.TwoLayerNet(torch.ones(2, dtype=torch.float32), torch.ones(2, 3, dtype=torch.float32))
    assert net.dtype == torch.float32
    assert sm.TwoLayerNet([1.0], [[1.0]]).dtype == torch.float64
    assert net.to(torch.float64).dtype == torch.float64
    assert net.replace(activation="erf").activation.name == "erf"
    assert "m=2" in repr(net)


def test_wrong_input_shape_for_outputs() -> None:
    net = sm.TwoLayerNet([1.0], [[1.0, 2.0]])
    with pytest.raises(sm.DataError, match=r"shape \(n, 2\)"):
        net(torch.ones(3, 3))
    with pytest.raises(sm.DataError, match="length 5"):
        net.unflatten(torch.ones(5))
