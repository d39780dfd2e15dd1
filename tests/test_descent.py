"""A way down from the model as it is: negative curvature measured and taken."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import saddlemap as sm
from saddlemap.descent import negative_curvature_step

WORKED = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
A, W = 0.610515537972, 1.433931221329


def _torch_trained(seed: int, steps: int) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    """A tanh model trained briefly by plain torch Adam on scikit-learn's diabetes data."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X = (X[:, :3] - X[:, :3].mean(0)) / X[:, :3].std(0)
    y = (y - y.mean()) / y.std()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1))
    model = model.float()  # as a user trains it (the tests default to float64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(steps):
        opt.zero_grad()
        loss = 0.5 * ((model(Xt)[:, 0] - yt) ** 2).mean()
        loss.backward()
        opt.step()
    return sm.TwoLayerNet.from_torch(model), sm.Dataset(X, y)


def test_split_saddle_step_goes_down_along_v_and_up_along_the_top_direction() -> None:
    out = negative_curvature_step(sm.TwoLayerNet([2 * A, -A], [[W], [W]]), WORKED)
    assert out.lambda_min < -out.zero_tol and out.negative == 1
    assert out.curvature == pytest.approx(out.lambda_min, rel=1e-8)
    assert out.improved and out.loss_after_step == pytest.approx(sm.loss(out.net, WORKED))
    assert out.path_loss.min() < out.loss_before  # down along v ...
    centre = int(np.flatnonzero(out.up_t == 0.0)[0])
    assert (out.up_loss >= out.up_loss[centre]).all()  # ... up along the top eigenvector


def test_no_negative_curvature_takes_no_step() -> None:
    out = negative_curvature_step(sm.TwoLayerNet([A], [[W]]), WORKED)
    assert out.direction is None and out.step == 0.0 and not out.improved
    assert out.net is not None and "no negative curvature" in out.summary()


@pytest.mark.parametrize("seed", [0, 3])
def test_step_lowers_the_loss_of_a_model_trained_with_torch(seed: int) -> None:
    net, data = _torch_trained(seed, steps=60)
    out = negative_curvature_step(net, data)
    if out.direction is None:
        pytest.skip("this short run left no negative curvature")
    assert out.improved and out.loss_after_step < out.loss_before
    assert float(out.direction @ sm.gradient(net, data)) <= 0.0  # oriented downhill
