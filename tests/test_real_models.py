"""diagnose and compress on models trained in the test with plain torch and scikit-learn."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

import saddlemap as sm
from saddlemap.verdicts import NoteCode


@functools.cache
def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X = (X[:, :4] - X[:, :4].mean(0)) / X[:, :4].std(0)
    return X, (y - y.mean()) / y.std()


@functools.cache
def _torch_model(width: int, steps: int, weight_decay: float = 0.0) -> torch.nn.Module:
    """Linear → tanh → Linear in float32, trained by torch.optim.Adam as a user would."""
    X, y = _diabetes()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Tanh(),
                                torch.nn.Linear(width, 1)).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((model(Xt)[:, 0] - yt) ** 2).mean()).backward()
        opt.step()
    return model


@functools.cache
def _blobs_classifier() -> tuple[object, np.ndarray, np.ndarray]:
    from sklearn.datasets import make_blobs
    from sklearn.neural_network import MLPClassifier

    X, y = make_blobs(150, centers=3, cluster_std=0.7, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((4,), activation="tanh", max_iter=3000, random_state=0).fit(X, y)
    return clf, X, y


def test_torch_model_gets_three_quantified_answers() -> None:
    model = _torch_model(12, 400)
    X, y = _diabetes()
    rep = sm.diagnose(model, X, y, escape_steps=0)
    lines = rep.summary().splitlines()
    assert [line[:2] for line in lines[:3]] == ["1.", "2.", "3."]
    assert rep.loss == pytest.approx(sm.loss(sm.TwoLayerNet.from_torch(model), sm.Dataset(X, y)))
    # a way down, measured: the step is taken only when it lowers R
    d = rep.descent
    assert d.loss_after_step <= d.loss_before
    if d.direction is not None:
        assert d.improved and "negative eigenvalue" in lines[2]
    # never describes another network as the model
    assert rep.describes_model == (rep.point is rep.start or rep.point.moved <= 0.1)
    if rep.refined is not None and not rep.refined.converged:
        assert rep.point is rep.start and "still training" in str(rep.notes[-1])
    # the smaller model is a torch module in the model's own dtype, within the budget
    small = rep.compression.model
    assert isinstance(small, torch.nn.Module)
    assert next(small.parameters()).dtype == torch.float32
    assert small(torch.tensor(X[:5], dtype=torch.float32)).dtype == torch.float32
    assert rep.compression.loss_after <= rep.compression.loss_before * 1.01 + 1e-12
    record = rep.to_dict()
    assert record["compression"]["width"] == rep.compression.width <= 12
    assert record["descent"]["lambda_min"] == pytest.approx(d.lambda_min)


def test_separable_classifier_heads_to_infinity_and_is_never_critical() -> None:
    clf, X, y = _blobs_classifier()
    rep = sm.diagnose(clf, X, y, escape_steps=0)
    assert rep.start.at_infinity and not rep.point.converged
    assert rep.verdict is sm.Kind.NOT_CRITICAL
    assert "critical point at infinity" in rep.summary()
    assert rep.to_dict()["critical_point"]["at_infinity"] is True


def test_scikit_learn_alpha_is_analysed_and_said() -> None:
    clf, X, y = _blobs_classifier()
    rep = sm.diagnose(clf, X, y, escape_steps=0)
    assert rep.penalty is not None and rep.penalty.scope == "weights"
    assert rep.penalty.weight_decay == pytest.approx(clf.alpha / len(X))
    assert "assumes no penalty" in rep.summary()
    assert "compression budget compares R alone" in rep.summary()
    # the loader's "not part of R" caveat is gone: here the penalty is part of it
    assert NoteCode.PENALTY in {note.code for note in sm.load_model(clf).notes}
    assert NoteCode.PENALTY not in {note.code for note in rep.notes}


def test_weight_decay_objective_is_the_penalised_one() -> None:
    model = _torch_model(6, 300, weight_decay=1e-2)
    X, y = _diabetes()
    rep = sm.diagnose(model, X, y, weight_decay=1e-2, escape_steps=0)
    net = sm.TwoLayerNet.from_torch(model)
    plain = sm.loss(net, sm.Dataset(X, y))
    assert rep.loss == pytest.approx(plain + 0.5e-2 * float(net.flatten() @ net.flatten()))
    assert rep.to_dict()["penalty"]["weight_decay"] == 1e-2


def test_compressing_a_wide_student_finds_the_teacher_width() -> None:
    prob = sm.teacher_student(2, 8, d=3, n=200, activation="tanh", seed=0)
    run = sm.train(prob.student, prob.data, optimizer="lbfgs", steps=300)
    out = sm.compress(run.net, prob.data, finetune_steps=100)
    assert out.width <= 4  # at most twice the teacher's width
    assert out.loss_after <= out.loss_before * 1.01 + 1e-12


@pytest.mark.parametrize("bad", [float("nan"), -0.5, float("inf")])
def test_bad_budget_or_decay_is_refused_before_work(bad: float) -> None:
    net = sm.TwoLayerNet([0.3], [[1.0]])
    with pytest.raises(sm.OptionError):
        sm.diagnose(net, [[1.0], [2.0]], [0.0, 1.0], max_loss_increase=bad)
    with pytest.raises(sm.OptionError):
        sm.diagnose(net, [[1.0], [2.0]], [0.0, 1.0], weight_decay=bad)
