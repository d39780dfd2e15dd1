"""Teacher–student problems: a random teacher network, its data and a random student.

A teacher f* = g(θ*, ·) of width r* labels inputs x_i, y_i = f*(x_i) + noise · ε_i with
ε_i ~ N(0, I_K); a student of width m ≥ r* is trained on (x_i, y_i).  With m > r* the
student is overparameterised and its critical points include the embedded critical points
of narrower networks (docs/theory.md §5, §6); with the erf activation and ``orthonormal=True`` this
is the soft committee machine of Saad & Solla, whose plateaus sit near such branches
(docs/theory.md §9).

**Random scheme** (everything drawn from ``torch.Generator`` streams seeded from ``seed``;
the teacher, the inputs, the label noise and the student each have their own stream, so
changing ``n`` keeps the teacher and the student, and changing ``width`` keeps the data):

* teacher: rows of W* ~ teacher_scale · N(0, I_d / d) (so w*ᵀx has variance ≈
  teacher_scale² on unit-variance inputs), output weights a* ~ N(0, 1) entrywise; with
  ``orthonormal=True`` the rows of W* are teacher_scale times orthonormal vectors (a
  Haar-random frame) and a* = 1.  Hidden biases b* ~ teacher_scale · N(0, 1/d), output
  bias c* ~ N(0, 1), when the problem has them.
* inputs: N(0, I_d) or uniform on [−√3, √3]^d (both mean 0, unit variance per coordinate).
* student: W ~ init_scale · N(0, 1/d) and b ~ init_scale · N(0, 1/d) entrywise,
  a ~ init_scale · N(0, 1/m) entrywise, c = 0.

>>> prob = teacher_student(teacher_width=1, width=3, d=2, n=13, activation="tanh", seed=0)
>>> prob.teacher.width, prob.student.width, prob.data.n, prob.data.input_dim
(1, 3, 13, 2)
>>> prob.settings.to_dict()["activation"]
'tanh'
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .activations import Activation, get_activation
from .data import Dataset
from .errors import DataError, ModelError, OptionError
from .network import TwoLayerNet

__all__ = ["TeacherStudent", "TeacherStudentSettings", "teacher_student"]

Inputs = Literal["gaussian", "uniform"]
_INPUTS = ("gaussian", "uniform")
# Independent random streams, in this order, spawned from the seed.
_STREAMS = ("teacher", "inputs", "noise", "student")


@dataclass(frozen=True)
class TeacherStudentSettings:
    """The arguments a :class:`TeacherStudent` was built with, JSON-serialisable.

    The fields are the keyword arguments of :func:`teacher_student`, with the activation
    by name, the dtype as a string (``"float64"``) and ``teacher_given`` in place of the
    teacher itself.  ``teacher_width`` is the width of the teacher actually used.
    """

    teacher_width: int
    width: int
    d: int
    n: int
    activation: str
    seed: int
    noise: float
    inputs: str
    orthonormal: bool
    teacher_scale: float
    init_scale: float
    hidden_bias: bool
    output_bias: bool
    output_dim: int
    dtype: str
    teacher_given: bool

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict of JSON types.

        >>> import json
        >>> s = teacher_student(1, 2, d=2, n=5).settings
        >>> json.loads(json.dumps(s.to_dict())) == s.to_dict()
        True
        """
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)
class TeacherStudent:
    """A teacher–student problem: the teacher, the data it labels and an initial student.

    Attributes:
        teacher: the network that generated the labels (noise aside).
        student: the initial point for training, of width ``settings.width``.
        data: inputs X (n, d) and labels y = teacher(X) + noise · ε, squared loss.
        settings: how the problem was built (:class:`TeacherStudentSettings`).
    """

    teacher: TwoLayerNet
    student: TwoLayerNet
    data: Dataset
    settings: TeacherStudentSettings


# ---------------------------------------------------------------------------- validation
def _count(value: Any, name: str, error: type[ValueError]) -> int:
    """An integer ≥ 1, or ``error`` naming the argument."""
    try:
        count = operator.index(value)
    except TypeError:
        count = 0
    if isinstance(value, bool) or count < 1:
        raise error(f"{name} must be an integer ≥ 1, got {value!r}")
    return count


def _nonnegative(value: Any, name: str, error: type[ValueError]) -> float:
    """A finite real ≥ 0, or ``error`` naming the argument."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number >= 0.0):
        raise error(f"{name} must be a finite number ≥ 0, got {value!r}")
    return number


def _check_teacher(teacher: Any, d: int, output_dim: int) -> TwoLayerNet:
    if not isinstance(teacher, TwoLayerNet):
        raise ModelError(f"teacher must be a TwoLayerNet, got {type(teacher).__name__}")
    if teacher.input_dim != d:
        raise ModelError(f"teacher has input dimension d={teacher.input_dim}, but d={d}")
    if teacher.output_dim != output_dim:
        raise ModelError(
            f"teacher has K={teacher.output_dim} outputs, but output_dim={output_dim}"
        )
    return teacher


# ----------------------------------------------------------------------------- sampling
def _generators(seed: int) -> dict[str, torch.Generator]:
    """One independent CPU generator per stream, all determined by ``seed``."""
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {
        name: torch.Generator().manual_seed(int(child.generate_state(1, dtype=np.uint64)[0]))
        for name, child in zip(_STREAMS, children, strict=True)
    }


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _orthonormal_rows(gen: torch.Generator, r: int, d: int) -> torch.Tensor:
    """Orthonormal rows, r of them in R^d (Haar-random: QR of a Gaussian matrix, signs fixed)."""
    q, upper = torch.linalg.qr(_randn(gen, d, r))
    signs = torch.sign(torch.diagonal(upper))
    signs[signs == 0] = 1.0
    return (q * signs).T


def _random_teacher(
    gen: torch.Generator, r: int, d: int, K: int, activation: Activation, *,
    orthonormal: bool, scale: float, hidden_bias: bool, output_bias: bool,
) -> TwoLayerNet:
    if orthonormal:
        W = scale * _orthonormal_rows(gen, r, d)
        a = torch.ones(r, K, dtype=torch.float64)
    else:
        W = scale * _randn(gen, r, d) / math.sqrt(d)
        a = _randn(gen, r, K)
    b = scale * _randn(gen, r) / math.sqrt(d) if hidden_bias else None
    c = _randn(gen, K) if output_bias else None
    return TwoLayerNet(a, W, b, c, activation)


def _inputs(gen: torch.Generator, n: int, d: int, inputs: str) -> torch.Tensor:
    if inputs == "gaussian":
        return _randn(gen, n, d)
    return math.sqrt(3.0) * (2.0 * torch.rand(n, d, generator=gen, dtype=torch.float64) - 1.0)


def _random_student(
    gen: torch.Generator, m: int, d: int, K: int, activation: Activation, *,
    scale: float, hidden_bias: bool, output_bias: bool,
) -> TwoLayerNet:
    W = scale * _randn(gen, m, d) / math.sqrt(d)
    a = scale * _randn(gen, m, K) / math.sqrt(m)
    b = scale * _randn(gen, m) / math.sqrt(d) if hidden_bias else None
    c = torch.zeros(K, dtype=torch.float64) if output_bias else None
    return TwoLayerNet(a, W, b, c, activation)


# --------------------------------------------------------------------------------- main
def teacher_student(
    teacher_width: int = 2,
    width: int = 4,
    d: int = 10,
    n: int = 2000,
    activation: str | Activation = "erf",
    seed: int = 0,
    *,
    noise: float = 0.0,
    inputs: Inputs = "gaussian",
    teacher: TwoLayerNet | None = None,
    orthonormal: bool = False,
    teacher_scale: float = 1.0,
    init_scale: float = 0.5,
    hidden_bias: bool = False,
    output_bias: bool = False,
    output_dim: int = 1,
    dtype: torch.dtype = torch.float64,
) -> TeacherStudent:
    """A teacher–student problem, fully determined by its arguments and ``seed``.

    Labels are y_i = f*(x_i) + noise · ε_i with ε_i ~ N(0, I_K), and the loss is the squared
    loss R = (1/2n) Σ ‖g(θ, x_i) − y_i‖².  The random scheme is in the module docstring.

    Args:
        teacher_width: r*, the width of a random teacher (ignored when ``teacher`` is given).
        width: m, the width of the student.
        d: input dimension.
        n: number of samples.
        activation: the student's activation, and a random teacher's.
        seed: seeds every random draw (a non-negative integer); no global RNG is used.
        noise: standard deviation of the label noise.
        inputs: ``"gaussian"`` (N(0, I_d)) or ``"uniform"`` (on [−√3, √3]^d, unit variance).
        teacher: use this teacher (its own activation and biases) instead of a random one.
        orthonormal: a random teacher with orthonormal input weight rows and unit output
            weights (Saad–Solla soft committee machine); needs teacher_width ≤ d.
        teacher_scale: scale of a random teacher's input weights and hidden biases.
        init_scale: scale of the student's initial weights.
        hidden_bias: whether the student (and a random teacher) have hidden biases b.
        output_bias: whether the student (and a random teacher) have an output bias c.
        output_dim: K, the number of outputs.
        dtype: floating dtype of the networks and the data.

    Returns:
        The :class:`TeacherStudent` with the teacher, the initial student, the data and the
        settings.

    Raises:
        ModelError: a width or output_dim below 1, a negative or non-finite scale,
            ``orthonormal`` with teacher_width > d, or a given teacher whose d or K differs
            (or combined with ``orthonormal``/``teacher_scale``).
        DataError: d or n below 1, negative noise, unknown ``inputs``, a non-floating dtype.
        OptionError: a negative seed.

    >>> prob = teacher_student(teacher_width=2, width=2, d=3, n=7, orthonormal=True)
    >>> W = prob.teacher.W
    >>> bool(torch.allclose(W @ W.T, torch.eye(2, dtype=W.dtype)))
    True
    """
    r = _count(teacher_width, "teacher_width", ModelError)
    m = _count(width, "width", ModelError)
    K = _count(output_dim, "output_dim", ModelError)
    d = _count(d, "d", DataError)
    n = _count(n, "n", DataError)
    noise = _nonnegative(noise, "noise", DataError)
    teacher_scale = _nonnegative(teacher_scale, "teacher_scale", ModelError)
    init_scale = _nonnegative(init_scale, "init_scale", ModelError)
    if inputs not in _INPUTS:
        raise DataError(f"inputs must be 'gaussian' or 'uniform', got {inputs!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise DataError(f"dtype must be a floating torch dtype, got {dtype!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OptionError(f"seed must be an integer ≥ 0, got {seed!r}")
    act = get_activation(activation)
    gens = _generators(int(seed))

    if teacher is not None:
        if orthonormal or teacher_scale != 1.0:
            raise ModelError(
                "orthonormal and teacher_scale shape a random teacher; do not combine them "
                "with a given teacher"
            )
        net_t = _check_teacher(teacher, d, K).to(dtype=torch.float64, device="cpu")
        r = net_t.width
    else:
        if orthonormal and r > d:
            raise ModelError(
                f"orthonormal needs teacher_width ≤ d, got teacher_width={r} and d={d}"
            )
        net_t = _random_teacher(
            gens["teacher"], r, d, K, act, orthonormal=orthonormal, scale=teacher_scale,
            hidden_bias=hidden_bias, output_bias=output_bias,
        )

    X = _inputs(gens["inputs"], n, d, inputs)
    y = net_t(X)
    if noise > 0.0:
        y = y + noise * _randn(gens["noise"], n, K)
    student = _random_student(
        gens["student"], m, d, K, act, scale=init_scale, hidden_bias=hidden_bias,
        output_bias=output_bias,
    )
    settings = TeacherStudentSettings(
        teacher_width=r, width=m, d=d, n=n, activation=act.name, seed=int(seed), noise=noise,
        inputs=inputs, orthonormal=bool(orthonormal), teacher_scale=teacher_scale,
        init_scale=init_scale, hidden_bias=bool(hidden_bias), output_bias=bool(output_bias),
        output_dim=K, dtype=str(dtype).removeprefix("torch."), teacher_given=teacher is not None,
    )
    return TeacherStudent(
        teacher=net_t.to(dtype=dtype), student=student.to(dtype=dtype),
        data=Dataset(X, y, dtype=dtype), settings=settings,
    )
