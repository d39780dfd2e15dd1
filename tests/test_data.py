"""Dataset validation: every bad input is refused with an error that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import Case, make_problem

import saddlemap as sm


@pytest.mark.parametrize(
    ("X", "y", "kwargs", "match"),
    [
        (np.array([[np.nan, 1.0]]), np.ones(1), {}, "X contains NaN or Inf"),
        (np.ones((2, 1)), np.array([1.0, np.inf]), {}, "y contains NaN or Inf"),
        (np.ones((3, 2)), np.ones(2), {}, "X has 3 samples but y has shape"),
        (np.ones((0, 2)), np.ones(0), {}, "X is empty"),
        (np.ones((2, 2, 2)), np.ones(2), {}, r"X must have shape \(n, d\)"),
        (np.array([["a", "b"]]), np.ones(1), {}, "X must be real numbers"),
        (np.ones((2, 1)) * 1j, np.ones(2), {}, "X must be real numbers"),
        (np.ones((2, 1)), np.array(["a", "b"]), {}, "y must be real numbers"),
        (np.ones((2, 1)), 1.0, {}, "y has shape ()"),
        (np.ones((2, 1)), np.ones((2, 1, 1)), {}, r"y must have shape \(n,\) or \(n, K\)"),
        (np.ones((2, 1)), np.array([0.5, 1.0]), {"loss": "ce"}, "cross-entropy targets"),
        (np.ones((2, 1)), np.array([0, 5]), {"loss": "ce", "num_outputs": 3}, "out of range"),
        (np.ones((2, 1)), np.ones(2), {"loss": "nope"}, "unknown loss"),
        (np.ones((2, 1)), np.ones(2), {"dtype": torch.int64}, "floating dtype"),
    ],
)
def test_bad_data_is_refused(X: object, y: object, kwargs: dict, match: str) -> None:
    with pytest.raises(sm.SaddlemapError, match=match):
        sm.Dataset(X, y, **kwargs)


def test_accepted_forms() -> None:
    data = sm.Dataset([1.0, 2.0, 3.0], [0, 1, 1], loss="ce")
    assert (data.n, data.input_dim, data.output_dim) == (3, 1, 2)
    assert data.targets.dtype == torch.float64
    data32 = sm.Dataset(np.ones((4, 2), dtype=np.int32), np.ones(4), dtype=torch.float32)
    assert data32.X.dtype == torch.float32
    assert "n=4" in repr(data32)
    assert data32.subset(slice(0, 2)).n == 2


def test_data_and_network_must_agree() -> None:
    net, _ = make_problem(Case("tanh", "no_bias", 1, 3))
    with pytest.raises(sm.DataError, match="d=3, the network d=2"):
        sm.gradient(net, sm.Dataset(np.ones((3, 3)), np.ones(3)))
    with pytest.raises(sm.DataError, match="K=2 columns, the network K=1"):
        sm.hessian(net, sm.Dataset(np.ones((3, 2)), np.ones((3, 2))))
