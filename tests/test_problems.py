"""Teacher–student problems: determinism, shapes, the random scheme and argument errors."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import saddlemap as sm
from saddlemap.problems import TeacherStudent, TeacherStudentSettings, teacher_student


def _tensors(prob: TeacherStudent) -> dict[str, torch.Tensor]:
    out = {"X": prob.data.X, "y": prob.data.targets}
    for who, net in (("teacher", prob.teacher), ("student", prob.student)):
        for name in ("a", "W", "b", "c"):
            value = getattr(net, name)
            if value is not None:
                out[f"{who}.{name}"] = value
    return out


@dataclass(frozen=True)
class Shape:
    teacher_width: int
    width: int
    d: int
    n: int
    K: int = 1
    hidden_bias: bool = False
    output_bias: bool = False
    inputs: str = "gaussian"

    @property
    def kwargs(self) -> dict[str, Any]:
        return {
            "teacher_width": self.teacher_width, "width": self.width, "d": self.d, "n": self.n,
            "output_dim": self.K, "hidden_bias": self.hidden_bias,
            "output_bias": self.output_bias, "inputs": self.inputs,
        }


SHAPES = [
    Shape(1, 1, 1, 1),
    Shape(1, 2, 2, 13),
    Shape(2, 4, 10, 7),
    Shape(3, 2, 5, 3, K=3),
    Shape(2, 3, 4, 13, hidden_bias=True),
    Shape(2, 3, 4, 13, K=2, hidden_bias=True, output_bias=True, inputs="uniform"),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_shapes(shape: Shape) -> None:
    prob = teacher_student(**shape.kwargs)
    for net, m in ((prob.teacher, shape.teacher_width), (prob.student, shape.width)):
        assert (net.width, net.input_dim, net.output_dim) == (m, shape.d, shape.K)
        assert (net.b is not None, net.c is not None) == (shape.hidden_bias, shape.output_bias)
        assert net.dtype == torch.float64
    assert tuple(prob.data.X.shape) == (shape.n, shape.d)
    assert tuple(prob.data.targets.shape) == (shape.n, shape.K)
    assert prob.data.loss.name == "mse"
    assert prob.settings.width == shape.width and prob.settings.n == shape.n
    # noise-free labels are the teacher's outputs
    torch.testing.assert_close(prob.data.targets, prob.teacher(prob.data.X), rtol=0, atol=0)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_same_seed_same_problem_other_seed_other_problem(shape: Shape) -> None:
    first = _tensors(teacher_student(**shape.kwargs, seed=3, noise=0.1))
    again = _tensors(teacher_student(**shape.kwargs, seed=3, noise=0.1))
    other = _tensors(teacher_student(**shape.kwargs, seed=4, noise=0.1))
    assert first.keys() == again.keys() == other.keys()
    for name in first:
        assert torch.equal(first[name], again[name]), name
        if name != "student.c":  # the student's output bias starts at 0
            assert not torch.equal(first[name], other[name]), name


def test_no_global_random_state_used() -> None:
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    teacher_student(2, 3, d=4, n=11, noise=0.5)
    assert torch.equal(torch.rand(3), before)


def test_streams_are_independent() -> None:
    base = teacher_student(2, 3, d=4, n=20, seed=5)
    more_data = teacher_student(2, 3, d=4, n=40, seed=5)
    wider = teacher_student(2, 6, d=4, n=20, seed=5)
    noisy = teacher_student(2, 3, d=4, n=20, seed=5, noise=0.3)
    assert torch.equal(base.teacher.W, more_data.teacher.W)
    assert torch.equal(base.student.W, more_data.student.W)
    assert torch.equal(base.data.X, more_data.data.X[:20])
    assert torch.equal(base.data.X, wider.data.X) and torch.equal(base.teacher.a, wider.teacher.a)
    assert torch.equal(base.student.W, noisy.student.W) and torch.equal(base.data.X, noisy.data.X)


@pytest.mark.parametrize(("r", "d", "scale"), [(1, 1, 1.0), (2, 3, 1.0), (3, 3, 1.0),
                                                (4, 10, 1.0), (2, 5, 2.5)])
def test_orthonormal_teacher(r: int, d: int, scale: float) -> None:
    prob = teacher_student(r, 4, d=d, n=5, orthonormal=True, teacher_scale=scale)
    W = prob.teacher.W
    torch.testing.assert_close(W @ W.T, scale**2 * torch.eye(r), rtol=0, atol=1e-14)
    assert torch.equal(prob.teacher.a, torch.ones(r, 1))
    assert prob.settings.orthonormal


def test_noise_level() -> None:
    prob = teacher_student(2, 3, d=3, n=20000, noise=0.2, seed=1)
    eps = prob.data.targets - prob.teacher(prob.data.X)
    assert float(eps.std()) == pytest.approx(0.2, rel=0.03)
    assert abs(float(eps.mean())) < 0.01
    # the teacher's loss is the noise floor σ²/2
    assert sm.loss(prob.teacher, prob.data) == pytest.approx(0.02, rel=0.06)


@pytest.mark.parametrize("inputs", ["gaussian", "uniform"])
def test_inputs_have_unit_variance(inputs: str) -> None:
    X = teacher_student(1, 1, d=4, n=20000, inputs=inputs).data.X  # type: ignore[arg-type]
    torch.testing.assert_close(X.var(0), torch.ones(4), rtol=0.04, atol=0)
    assert float(X.mean(0).abs().max()) < 0.03
    if inputs == "uniform":
        assert float(X.abs().max()) <= math.sqrt(3.0)
        assert float(X.abs().max()) > 0.99 * math.sqrt(3.0)
    else:
        assert float(X.abs().max()) > 2 * math.sqrt(3.0)


def test_student_initial_scale() -> None:
    prob = teacher_student(1, 400, d=25, n=1, init_scale=0.5, hidden_bias=True, output_bias=True)
    net = prob.student
    assert float(net.W.std()) == pytest.approx(0.5 / 5, rel=0.03)
    assert float(net.a.std()) == pytest.approx(0.5 / 20, rel=0.1)
    assert net.b is not None and float(net.b.std()) == pytest.approx(0.5 / 5, rel=0.1)
    assert net.c is not None and torch.equal(net.c, torch.zeros(1))
    zero = teacher_student(1, 3, d=2, n=1, init_scale=0.0).student
    assert not zero.W.any() and not zero.a.any()


def test_random_teacher_scale() -> None:
    teacher = teacher_student(400, 1, d=25, n=1, teacher_scale=2.0).teacher
    assert float(teacher.W.std()) == pytest.approx(2.0 / 5, rel=0.03)
    assert float(teacher.a.std()) == pytest.approx(1.0, rel=0.1)


def test_given_teacher() -> None:
    teacher = sm.TwoLayerNet([1.0, -0.5, 2.0], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                             activation="sin")
    prob = teacher_student(teacher=teacher, width=5, d=2, n=9, activation="tanh")
    assert torch.equal(prob.teacher.W, teacher.W) and prob.teacher.activation.name == "sin"
    assert prob.student.activation.name == "tanh" and prob.student.width == 5
    torch.testing.assert_close(prob.data.targets, teacher(prob.data.X), rtol=0, atol=0)
    assert prob.settings.teacher_given and prob.settings.teacher_width == 3


def test_dtype() -> None:
    prob = teacher_student(1, 2, d=2, n=5, dtype=torch.float32, hidden_bias=True)
    assert {t.dtype for t in _tensors(prob).values()} == {torch.float32}
    assert prob.settings.dtype == "float32"


def test_settings_are_json_and_match_the_arguments() -> None:
    prob = teacher_student(2, 3, d=4, n=6, activation="softplus", seed=7, noise=0.1,
                           inputs="uniform", init_scale=0.3, output_bias=True)
    settings = prob.settings
    assert isinstance(settings, TeacherStudentSettings)
    as_dict = json.loads(json.dumps(settings.to_dict()))
    assert as_dict == settings.to_dict()
    assert as_dict["activation"] == "softplus" and as_dict["seed"] == 7
    assert as_dict["inputs"] == "uniform" and as_dict["teacher_given"] is False
    rebuilt = {k: v for k, v in as_dict.items() if k not in ("dtype", "teacher_given")}
    again = teacher_student(**rebuilt)
    assert torch.equal(again.data.targets, prob.data.targets)
    assert torch.equal(again.student.W, prob.student.W)


@dataclass(frozen=True)
class Bad:
    kwargs: dict[str, Any] = field(hash=False)
    error: type[Exception]
    message: str


_TEACHER_D3 = sm.TwoLayerNet([1.0], [[1.0, 2.0, 3.0]])
_TEACHER_K2 = sm.TwoLayerNet([[1.0, 2.0]], [[1.0, 2.0]])

BAD = [
    Bad({"teacher_width": 0}, sm.ModelError, "teacher_width"),
    Bad({"width": 0}, sm.ModelError, "width"),
    Bad({"width": 1.5}, sm.ModelError, "width"),
    Bad({"width": True}, sm.ModelError, "width"),
    Bad({"output_dim": 0}, sm.ModelError, "output_dim"),
    Bad({"d": 0}, sm.DataError, "d must"),
    Bad({"n": 0}, sm.DataError, "n must"),
    Bad({"n": -3}, sm.DataError, "n must"),
    Bad({"noise": -0.1}, sm.DataError, "noise"),
    Bad({"noise": math.nan}, sm.DataError, "noise"),
    Bad({"inputs": "cauchy"}, sm.DataError, "inputs"),
    Bad({"teacher_scale": -1.0}, sm.ModelError, "teacher_scale"),
    Bad({"init_scale": math.inf}, sm.ModelError, "init_scale"),
    Bad({"teacher_width": 3, "d": 2, "orthonormal": True}, sm.ModelError, "orthonormal"),
    Bad({"d": 2, "teacher": _TEACHER_D3}, sm.ModelError, "d=3"),
    Bad({"d": 2, "teacher": _TEACHER_K2}, sm.ModelError, "output_dim=1"),
    Bad({"d": 3, "teacher": _TEACHER_D3, "orthonormal": True}, sm.ModelError, "given teacher"),
    Bad({"d": 3, "teacher": _TEACHER_D3, "teacher_scale": 2.0}, sm.ModelError, "given teacher"),
    Bad({"teacher": "a teacher"}, sm.ModelError, "TwoLayerNet"),
    Bad({"seed": -1}, ValueError, "seed"),
    Bad({"activation": "no_such"}, sm.ActivationError, "no_such"),
    Bad({"dtype": torch.int64}, sm.DataError, "dtype"),
]


@pytest.mark.parametrize("bad", BAD, ids=[f"{b.kwargs}"[:60] for b in BAD])
def test_argument_errors(bad: Bad) -> None:
    kwargs = {"n": 5, "d": 2, **bad.kwargs}
    with pytest.raises(bad.error, match=bad.message):
        teacher_student(**kwargs)
    assert issubclass(bad.error, ValueError)
