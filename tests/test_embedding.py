"""Critical embedding operators (docs/theory.md §5): outputs, Hessian, criticality, inertia."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import assert_close_scaled

import saddlemap as sm
from saddlemap.critical_points import CriticalPoint, certify, find_critical_point
from saddlemap.embedding import (
    Embedding,
    add_null_neuron,
    add_zero_sum_group,
    compose,
    null_copy,
    split,
    three_fold_split,
)
from saddlemap.spectral import Inertia, inertia
from saddlemap.verdicts import Verdict

X_WORKED = [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0]
Y_WORKED = [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0]
WORKED = sm.Dataset(X_WORKED, Y_WORKED)
A_STAR, W_STAR = 0.610515537972, 1.433931221329  # docs/theory.md §8, 12 digits
MU_STAR = 0.0080687568  # a* G(w*): the splitting curvature of docs/theory.md §8

# one activation per symmetry class of docs/theory.md §3
ACTIVATIONS = ["tanh", "erf", "softplus", "sigmoid", "exp"]
BIASES = {"no_bias": (False, False), "hidden_bias": (True, False), "both_biases": (True, True)}


@functools.cache
def _worked_point() -> sm.TwoLayerNet:
    """The width-1 critical point of docs/theory.md §8, refined to machine precision."""
    cp = find_critical_point(sm.TwoLayerNet([A_STAR], [[W_STAR]]), WORKED)
    assert cp.converged
    return cp.net


def _random_problem(
    act: str, bias: str, K: int, seed: int = 0
) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    gen = torch.Generator().manual_seed(seed)
    hidden, output = BIASES[bias]

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    net = sm.TwoLayerNet(
        randn(2, K), 0.8 * randn(2, 2), b=0.5 * randn(2) if hidden else None,
        c=randn(K) if output else None, activation=act,
    )
    return net, sm.Dataset(randn(7, 2), randn(7, K))


def _some_point(net: sm.TwoLayerNet) -> torch.Tensor:
    """A fixed input weight of length D, off every neuron of the random networks."""
    return torch.linspace(-0.7, 0.9, net.layout.aug_dim)


# -------------------------------------------------- output preservation, Hessian identity
MAKERS: dict[str, Callable[[sm.TwoLayerNet], Embedding]] = {
    "split_half": lambda net: split(net, 0, (0.5, 0.5)),
    "split_three": lambda net: split(net, net.width - 1, (2.0, -1.5, 0.5)),
    "null_copy": lambda net: null_copy(net, 0),
    "null_at_zero": lambda net: add_null_neuron(net),
    "null_at_w": lambda net: add_null_neuron(net, w=_some_point(net)),
    "null_at_w_no_bias_given": lambda net: add_null_neuron(net, w=torch.tensor([0.4, -0.3])),
    "zero_sum": lambda net: add_zero_sum_group(net, _some_point(net), (0.3, -0.3)),
    "zero_sum_three": lambda net: add_zero_sum_group(net, _some_point(net), (0.1, 0.2, -0.3)),
    "three_fold": three_fold_split,
    "composed": lambda net: _chain(split(net, 0, (0.3, 0.7)), three_fold_split),
    "composed_affine": lambda net: _chain(
        add_zero_sum_group(net, _some_point(net), (1.0, -1.0)), lambda n: split(n, 2, (3.0, -2.0))
    ),
}


def _chain(first: Embedding, then: Callable[[sm.TwoLayerNet], Embedding]) -> Embedding:
    return compose(first, then(first.net))


@pytest.mark.parametrize(
    ("act", "bias", "K", "name"), list(itertools.product(ACTIVATIONS, BIASES, [1, 2], MAKERS))
)
def test_embedding_preserves_outputs_and_the_hessian(
    act: str, bias: str, K: int, name: str
) -> None:
    net, data = _random_problem(act, bias, K)
    emb = MAKERS[name](net)
    P_new, P_old = emb.net.num_params, net.num_params
    assert emb.matrix.shape == (P_new, P_old) and emb.offset.shape == (P_new,)
    assert emb.source_layout == net.layout
    assert emb.is_linear is not bool(emb.offset.any())
    torch.testing.assert_close(emb.net.flatten(), emb.apply(net.flatten()), rtol=0, atol=0)
    # the same outputs on the data and on random inputs (exp outputs reach 1e6: rtol too)
    X = torch.cat([data.X, 3 * torch.randn(50, 2, generator=torch.Generator().manual_seed(5))])
    torch.testing.assert_close(emb.net(X), net(X), rtol=1e-12, atol=1e-12)
    if net.c is not None:  # c stays last and maps to itself
        A = emb.matrix
        assert torch.equal(A[-K:, -K:], torch.eye(K))
        assert not A[-K:, :-K].any() and not A[:-K, -K:].any() and not emb.offset[-K:].any()
        assert torch.equal(emb.net.c, net.c)
    # at a random θ: R(Aθ + o) = R(θ) and Aᵀ H(Aθ + o) A = H(θ)
    gen = torch.Generator().manual_seed(7)
    other = net.unflatten(net.flatten() + 0.5 * torch.randn(P_old, generator=gen))
    wide = emb(other)
    torch.testing.assert_close(wide.flatten(), emb.apply(other.flatten()), rtol=0, atol=0)
    assert sm.loss(wide, data) == pytest.approx(sm.loss(other, data), rel=1e-12)
    A = emb.matrix
    assert_close_scaled(A.T @ sm.hessian(wide, data) @ A, sm.hessian(other, data), 1e-10)


@pytest.mark.parametrize(
    ("make", "values", "independent", "kind"),
    [
        (lambda net: split(net, 1, (0.3, 0.7)), {0.0, 1.0, 0.3, 0.7}, True, "split"),
        (lambda net: split(net, 0, (2.0, -3.0, 2.0)), {0.0, 1.0, 2.0, -3.0}, True, "split"),
        (lambda net: null_copy(net, 1), {0.0, 1.0}, True, "null_copy"),
        (add_null_neuron, {0.0, 1.0}, True, "null_at_zero"),
        (lambda net: add_null_neuron(net, w=[0.5, 0.1]), {0.0, 1.0}, False, "null_on_zero_set"),
        (lambda net: add_zero_sum_group(net, [0.5, 0.1], (1, -1)), {0.0, 1.0}, False, "zero_sum"),
        (three_fold_split, {0.0, 1.0, -1.0}, True, "three_fold"),
    ],
)
def test_matrix_is_exact(
    make: Callable[[sm.TwoLayerNet], Embedding], values: set[float], independent: bool, kind: str
) -> None:
    net, _ = _random_problem("tanh", "both_biases", 2)
    emb = make(net)
    assert set(emb.matrix.unique().tolist()) == values
    assert int((emb.matrix != 0).sum(1).max()) == 1  # each new parameter copies one old one
    assert emb.sample_independent is independent and emb.kind == kind
    assert emb.description and "\n" not in emb.description


def test_layout_of_new_neurons() -> None:
    net = sm.TwoLayerNet([1.0, 2.0, 3.0], [[0.1], [0.2], [0.3]])
    emb = split(net, 1, (0.5, 0.25, 0.25))
    assert emb.net.a.flatten().tolist() == [1.0, 1.0, 3.0, 0.5, 0.5]
    assert emb.net.W.flatten().tolist() == [0.1, 0.2, 0.3, 0.2, 0.2]
    three = three_fold_split(net)
    assert three.net.a.flatten().tolist() == [1.0, 2.0, 3.0, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0]
    assert three.net.W.flatten().tolist() == [0.1, 0.2, 0.3, 0.1, 0.1, 0.2, 0.2, 0.3, 0.3]
    group = add_zero_sum_group(net, [0.7], (0.5, -0.25, -0.25))
    assert group.net.a.flatten().tolist() == [1.0, 2.0, 3.0, 0.5, -0.25, -0.25]
    assert group.net.W.flatten().tolist() == [0.1, 0.2, 0.3, 0.7, 0.7, 0.7]
    # K = 2: one weight per neuron is used on every output; rows give each output its own
    two = sm.TwoLayerNet([[1.0, 2.0]], [[0.1]])
    assert add_zero_sum_group(two, [0.7], (1.0, -1.0)).net.a[1:].tolist() == [[1, 1], [-1, -1]]
    rows = add_zero_sum_group(two, [0.7], [[1.0, 2.0], [-1.0, -2.0]]).net.a[1:]
    assert rows.tolist() == [[1, 2], [-1, -2]]
    # a hidden bias: w of length d gets bias 0, length D keeps its own
    biased = sm.TwoLayerNet([1.0], [[0.1, 0.2]], b=[0.3])
    assert add_null_neuron(biased, w=[0.4, 0.5]).net.W_aug[1].tolist() == [0.4, 0.5, 0.0]
    assert add_null_neuron(biased, w=[0.4, 0.5, 0.6]).net.W_aug[1].tolist() == [0.4, 0.5, 0.6]


def test_float32_networks_keep_their_dtype() -> None:
    net = sm.TwoLayerNet([1.0, 2.0], [[0.5], [1.5]], dtype=torch.float32)
    emb = split(net, 0, (0.1, 0.2, 0.7))  # sums to 1 only to rounding
    assert emb.matrix.dtype == emb.net.dtype == torch.float32
    X = torch.linspace(-2, 2, 9).unsqueeze(1).float()
    torch.testing.assert_close(emb.net(X), net(X), rtol=0, atol=1e-6)
    with pytest.raises(sm.ModelError, match="sum to 1"):
        split(net, 0, (0.5, 0.50001))


# ------------------------------------------------------- criticality and inertia
@dataclass(frozen=True)
class CritCase:
    """A critical point: the worked example, or a refined teacher–student point (d = 2)."""

    act: str
    bias: str
    K: int
    width: int

    @property
    def id(self) -> str:
        return f"{self.act}-{self.bias}-K{self.K}-m{self.width}"


WORKED_CASE = CritCase("tanh", "worked", 1, 1)
# teacher–student problems (n = 50, noise 0.1, seed 0) whose refinement converges to a
# finite critical point with well-separated eigenvalues
CRIT_CASES = [
    WORKED_CASE,
    CritCase("tanh", "no_bias", 1, 2),
    CritCase("tanh", "hidden_bias", 2, 2),
    CritCase("tanh", "both_biases", 1, 2),
    CritCase("erf", "no_bias", 2, 2),
    CritCase("erf", "hidden_bias", 1, 1),
    CritCase("erf", "both_biases", 2, 2),
    CritCase("softplus", "no_bias", 2, 2),
    CritCase("softplus", "hidden_bias", 2, 2),
    CritCase("softplus", "both_biases", 2, 1),
    CritCase("sigmoid", "no_bias", 1, 2),
    CritCase("sigmoid", "hidden_bias", 2, 2),
    CritCase("exp", "no_bias", 1, 2),
    CritCase("exp", "hidden_bias", 2, 2),
    CritCase("exp", "both_biases", 1, 2),
]


@functools.cache
def _critical(case: CritCase) -> tuple[CriticalPoint, sm.Dataset]:
    if case == WORKED_CASE:
        return certify(_worked_point(), WORKED), WORKED
    hidden, output = BIASES[case.bias]
    prob = sm.teacher_student(
        case.width, case.width, d=2, n=50, activation=case.act, seed=0, noise=0.1,
        hidden_bias=hidden, output_bias=output, output_dim=case.K,
    )
    run = sm.train(prob.student, prob.data, optimizer="lbfgs", steps=500, grad_tol=1e-5)
    return find_critical_point(run.net, prob.data, max_iter=100), prob.data


def _critical_or_skip(case: CritCase) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    cp, data = _critical(case)
    if not cp.converged:
        pytest.skip(f"refinement did not converge here: {cp.verdict.value}")
    return cp.net, data


DataMaker = Callable[[sm.TwoLayerNet, sm.Dataset], Embedding]
CRIT_MAKERS: dict[str, DataMaker] = {
    "split_half": lambda net, data: split(net, 0, (0.5, 0.5)),
    "split_outside": lambda net, data: split(net, net.width - 1, (2.0, -1.0)),
    "split_three": lambda net, data: split(net, 0, (0.2, 0.3, 0.5)),
    "split_at_zero": lambda net, data: split(net, 0, (0.0, 1.0)),
    "null_copy": lambda net, data: null_copy(net, net.width - 1),
    "null_at_zero": lambda net, data: add_null_neuron(net),
    "null_on_zero_set": lambda net, data: add_null_neuron(net, data=data),
    "zero_sum": lambda net, data: add_zero_sum_group(net, net.W_aug[0], (0.3, -0.3), data=data),
    "three_fold": lambda net, data: three_fold_split(net),
    "composed": lambda net, data: _chain(split(net, 0, (0.5, 0.5)), lambda n: null_copy(n, 0)),
}


def _crit_params() -> list[tuple[CritCase, str]]:
    # a neuron with a_k ≠ 0 sits on Z'_f only for K = 1 (docs/theory.md §2): zero-sum groups at w̃_0
    return [
        (case, name) for case, name in itertools.product(CRIT_CASES, CRIT_MAKERS)
        if name != "zero_sum" or case.K == 1
    ]


def _inertia_pair(before: CriticalPoint, after: CriticalPoint) -> tuple[Inertia, Inertia]:
    """Both inertias with one absolute zero tolerance, the larger of the two."""
    tol = max(before.spectrum.zero_tol, after.spectrum.zero_tol)
    return inertia(before.spectrum.eigenvalues, tol), inertia(after.spectrum.eigenvalues, tol)


@pytest.mark.parametrize(("case", "name"), _crit_params(), ids=lambda p: getattr(p, "id", p))
def test_embedding_keeps_critical_points_critical(case: CritCase, name: str) -> None:
    net, data = _critical_or_skip(case)
    emb = CRIT_MAKERS[name](net, data)
    after = certify(emb.net, data)
    if emb.kind == "null_at_zero" and not emb.sample_independent:
        # σ(0) ≠ 0 and no output bias: ∂R/∂a = σ(0) Σ_i e_i ≠ 0, as the flag warns
        assert after.grad_norm > after.grad_tol
        return
    assert after.grad_norm <= after.grad_tol
    before, _ = _critical(case)
    old, new = _inertia_pair(before, after)
    assert old.positive + old.zero + old.negative == net.num_params
    # inertia never decreases (Embedding Principle, irreversibility)
    assert new.positive >= old.positive and new.negative >= old.negative
    assert new.zero >= old.zero
    if emb.kind == "split":  # each one-step split of a neuron with a_k ≠ 0 adds a zero
        k = int(name == "split_outside") * (net.width - 1)
        assert float(net.a[k].abs().max()) > 1e-3
        steps = emb.net.width - net.width
        assert new.zero >= old.zero + steps


def test_most_teacher_student_points_converge() -> None:
    converged = [_critical(case)[0].converged for case in CRIT_CASES]
    assert sum(converged) >= len(CRIT_CASES) - 2  # all of them when this was written


# ------------------------------------------------------------- worked example (§8)
SPLIT_LINE = [
    ((0.5, 0.5), (0.0, 0.0040343784, 0.0080670059, 1.445869462)),
    ((2.0, -1.0), (-0.0048749236, 0.0, 0.0518782806, 1.4885200384)),
    ((-1.0, 2.0), (-0.0048749236, 0.0, 0.0518782806, 1.4885200384)),
    ((0.0, 1.0), (0.0, 0.0, 0.0160824467, 1.4505053494)),
]


@pytest.mark.parametrize(("ratios", "eigenvalues"), SPLIT_LINE)
def test_worked_example_splitting_line(
    ratios: tuple[float, float], eigenvalues: tuple[float, ...]
) -> None:
    emb = split(_worked_point(), 0, ratios)
    lam = sm.spectrum(emb.net, WORKED).eigenvalues
    np.testing.assert_allclose(lam, eigenvalues, rtol=0, atol=1e-8)


def test_worked_example_null_neuron_at_zero_is_a_strict_saddle() -> None:
    emb = add_null_neuron(_worked_point())
    assert emb.kind == "null_at_zero" and emb.sample_independent and emb.is_linear
    torch.testing.assert_close(
        emb.net.flatten(), torch.tensor([A_STAR, W_STAR, 0.0, 0.0]), rtol=0, atol=1e-11
    )
    cp = certify(emb.net, WORKED)
    assert cp.converged and cp.verdict is Verdict.STRICT_SADDLE
    np.testing.assert_allclose(
        cp.spectrum.eigenvalues, (-0.0235933738, 0.0159785899, 0.0235933738, 0.7299666365),
        rtol=0, atol=1e-8,
    )


@pytest.mark.parametrize("start", ["refined", "12 digits"])
def test_worked_example_null_neuron_on_zero_set_finds_the_simple_zero(start: str) -> None:
    net = _worked_point() if start == "refined" else sm.TwoLayerNet([A_STAR], [[W_STAR]])
    emb = add_null_neuron(net, data=WORKED)
    assert emb.kind == "null_on_zero_set"
    assert abs(float(emb.net.W[1, 0])) <= 1e-12 and float(emb.net.a[1, 0]) == 0.0
    assert "regular" in emb.description and "‖φ(u)‖" in emb.description
    cp = certify(emb.net, WORKED)
    assert cp.grad_norm <= cp.grad_tol and cp.verdict is Verdict.STRICT_SADDLE


def test_null_neuron_on_zero_set_in_one_dimension_with_sigma_0_nonzero() -> None:
    # sigmoid: φ(0) = σ(0) Σ_i e_i ≠ 0, so u comes from zeros_1d (the regular zero of least
    # norm); the refined width-1 point here is a null neuron itself, on Z_f
    cp = find_critical_point(sm.TwoLayerNet([1.0], [[1.0]], activation="sigmoid"), WORKED)
    assert cp.converged
    zeros = sm.ZeroSet(sm.residual_function(cp.net, WORKED)).zeros_1d()
    best = min((z for z in zeros if z.regular), key=lambda z: abs(z.u[0]))
    emb = add_null_neuron(cp.net, data=WORKED)
    assert float(emb.net.W[1, 0]) == best.u[0] and not emb.sample_independent
    after = certify(emb.net, WORKED)
    assert after.grad_norm <= after.grad_tol


def test_worked_example_null_neuron_at_the_double_zero() -> None:
    # −w* is a singular point of Z_f: a null neuron there is critical (a null copy of the
    # sign twin), and the check passes
    emb = add_null_neuron(_worked_point(), w=[-float(_worked_point().W[0, 0])], data=WORKED)
    assert not emb.sample_independent and not emb.is_linear
    cp = certify(emb.net, WORKED)
    assert cp.grad_norm <= cp.grad_tol


def test_worked_example_three_fold_split_is_a_strict_saddle() -> None:
    emb = three_fold_split(_worked_point())
    assert emb.net.a.flatten().tolist() == pytest.approx([A_STAR, A_STAR, -A_STAR], abs=1e-11)
    cp = certify(emb.net, WORKED)
    assert cp.converged and cp.verdict is Verdict.STRICT_SADDLE
    # docs/theory.md §7.4: the copies' perturbation (½v, ½v, v) has curvature −μ/2, μ = a*G(w*) > 0
    v = torch.tensor([0.0, 0.5, 0.0, 0.5, 0.0, 1.0])
    assert float(v @ sm.hessian(emb.net, WORKED) @ v) == pytest.approx(-MU_STAR / 2, abs=1e-10)
    assert cp.spectrum.min <= -MU_STAR / 3  # the Rayleigh quotient of that direction


@pytest.mark.parametrize("weights", [(0.3, -0.3), (0.1, 0.2, -0.3), (2.0, -5.0, 3.0)])
def test_worked_example_zero_sum_group_at_w_star_is_critical(weights: tuple[float, ...]) -> None:
    net = _worked_point()
    emb = add_zero_sum_group(net, net.W[0], weights, data=WORKED)
    assert emb.kind == "zero_sum" and not emb.sample_independent and not emb.is_linear
    assert "Z'_f" in emb.description
    cp = certify(emb.net, WORKED)
    assert cp.grad_norm <= cp.grad_tol
    # the 12-digit w* passes the Z'_f check too
    add_zero_sum_group(net, [W_STAR], weights, data=WORKED)


# ------------------------------------------------------------------------ flags
@pytest.mark.parametrize(
    ("act", "bias", "independent"),
    [
        ("tanh", "no_bias", True), ("erf", "hidden_bias", True), ("sigmoid", "no_bias", False),
        ("softplus", "hidden_bias", False), ("exp", "no_bias", False),
        ("sigmoid", "both_biases", True), ("exp", "both_biases", True),
    ],
)
def test_null_neuron_at_zero_is_sample_independent_where_sigma_0_is_harmless(
    act: str, bias: str, independent: bool
) -> None:
    # ∂R/∂a = σ(0) Σ_i e_i: zero for every data set when σ(0) = 0, and at every critical
    # point when an output bias makes Σ_i e_i = 0 part of criticality
    net, _ = _random_problem(act, bias, 1)
    emb = add_null_neuron(net)
    assert emb.sample_independent is independent
    assert ("Σ_i e_i = 0" in emb.description) is not independent


def test_null_neuron_away_from_zero_is_sample_dependent() -> None:
    net, _ = _random_problem("tanh", "no_bias", 1)
    emb = add_null_neuron(net, w=[0.3, 0.2])
    assert not emb.sample_independent and "not checked" in emb.description
    assert add_null_neuron(net, w=[0.0, 0.0]).sample_independent


# ---------------------------------------------------------------------- compose
def test_composing_two_splits_equals_doing_them_in_turn() -> None:
    net, _ = _random_problem("erf", "both_biases", 2)
    first = split(net, 0, (0.3, 0.7))
    second = split(first.net, 2, (2.0, -1.0))
    both = compose(first, second)
    assert both.kind == "composed" and both.sample_independent and both.is_linear
    assert torch.equal(both.matrix, second.matrix @ first.matrix)
    assert torch.equal(both.net.flatten(), second.net.flatten())
    theta = torch.randn(net.num_params, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(both.apply(theta), second.apply(first.apply(theta)),
                               rtol=1e-15, atol=0)
    assert both.description == f"{first.description}; then {second.description}"


def test_compose_with_offsets_and_sample_dependence() -> None:
    net, _ = _random_problem("tanh", "hidden_bias", 1)
    first = add_zero_sum_group(net, [0.2, 0.4, 0.1], (0.5, -0.5))
    second = split(first.net, 3, (0.25, 0.75))
    both = compose(first, second)
    assert not both.sample_independent and not both.is_linear
    torch.testing.assert_close(both.offset, second.matrix @ first.offset + second.offset,
                               rtol=0, atol=0)
    assert torch.equal(both.net.flatten(), second.net.flatten())
    cp = _worked_point()
    e2c = add_null_neuron(split(cp, 0, (0.5, 0.5)).net, w=[-W_STAR], data=WORKED)
    assert not compose(split(cp, 0, (0.5, 0.5)), e2c).sample_independent
    assert compose(null_copy(cp, 0), three_fold_split(null_copy(cp, 0).net)).sample_independent


# ------------------------------------------------------------------- bad input
NET = sm.TwoLayerNet([0.6], [[1.4]])
BIASED = sm.TwoLayerNet([0.6], [[1.4]], b=[0.1])


def _no_zero_of_phi() -> Embedding:
    # exp neurons with residuals of one sign: φ(u) = Σ e_i exp(u x_i) never vanishes
    data = sm.Dataset([[0.5], [1.0], [1.5]], [-1.0, -2.0, -3.0])
    return add_null_neuron(sm.TwoLayerNet([0.1], [[0.1]], activation="exp"), data=data)


BAD_INPUTS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("neuron out of range", lambda: split(NET, 1, (0.5, 0.5)), sm.ModelError,
     r"neuron index 1 is out of range for a network of width 1"),
    ("negative neuron", lambda: null_copy(NET, -1), sm.ModelError, "out of range"),
    ("neuron not an integer", lambda: split(NET, 0.5, (0.5, 0.5)), sm.ModelError,  # type: ignore[arg-type]
     "integer index"),
    ("neuron a bool", lambda: null_copy(NET, True), sm.ModelError, "integer index"),
    ("ratios not summing to 1", lambda: split(NET, 0, (0.5, 0.6)), sm.ModelError,
     r"ratios must sum to 1, got Σρ = 1.1"),
    ("one ratio", lambda: split(NET, 0, (1.0,)), sm.ModelError, "at least 2 ratios"),
    ("no ratios", lambda: split(NET, 0, ()), sm.ModelError, "at least 2 ratios"),
    ("NaN ratio", lambda: split(NET, 0, (float("nan"), 1.0)), sm.ModelError, "finite"),
    ("ratios not numbers", lambda: split(NET, 0, ("a", "b")), sm.ModelError,  # type: ignore[arg-type]
     "real numbers"),
    ("w of the wrong length", lambda: add_null_neuron(NET, w=[1.0, 2.0]), sm.ModelError,
     r"w has length 2; this network takes length d=1"),
    ("w too long with a hidden bias", lambda: add_null_neuron(BIASED, w=[1.0, 2.0, 3.0]),
     sm.ModelError, r"length d=1 or D=2"),
    ("w a matrix", lambda: add_null_neuron(NET, w=[[1.0]]), sm.ModelError, "vector"),
    ("w infinite", lambda: add_null_neuron(NET, w=[float("inf")]), sm.ModelError, "finite"),
    ("w not on Z_f", lambda: add_null_neuron(_worked_point(), w=[0.5], data=WORKED),
     sm.ModelError, r"w = \(0.5\) is not on Z_f: ‖φ\(w\)‖ = 5.70\de-03"),
    ("no zero of φ", _no_zero_of_phi, sm.ModelError, "no point of Z_f"),
    ("data of another dimension",
     lambda: add_null_neuron(NET, data=sm.Dataset([[1.0, 2.0]], [1.0])), sm.DataError, "d=2"),
    ("weights not summing to 0", lambda: add_zero_sum_group(NET, [1.0], (0.3, -0.2)),
     sm.ModelError, r"weights must sum to 0, got Σb = 0.0999"),
    ("one weight", lambda: add_zero_sum_group(NET, [1.0], (0.0,)), sm.ModelError,
     "at least 2 neurons"),
    ("all weights zero", lambda: add_zero_sum_group(NET, [1.0], (0.0, 0.0)), sm.ModelError,
     "at least two nonzero"),
    ("weights of the wrong K", lambda: add_zero_sum_group(NET, [1.0], [[1.0, 2.0], [-1.0, -2.0]]),
     sm.ModelError, r"shape \(s,\) or \(s, 1\)"),
    ("u of the wrong length", lambda: add_zero_sum_group(NET, [1.0, 2.0], (1.0, -1.0)),
     sm.ModelError, "u has length 2"),
    ("u not on Z_f", lambda: add_zero_sum_group(_worked_point(), [0.5], (1.0, -1.0), data=WORKED),
     sm.ModelError, r"not on Z_f: ‖φ\(u\)‖ = "),
    ("u on Z_f but not Z'_f",
     lambda: add_zero_sum_group(_worked_point(), [0.0], (1.0, -1.0), data=WORKED),
     sm.ModelError, r"u = \(0\) is not on Z'_f: ‖∇φ\(u\)‖ = 2.359e-02"),
    ("compose out of order",
     lambda: compose(split(NET, 0, (0.5, 0.5)), split(NET, 0, (0.5, 0.5))), sm.ModelError,
     r"cannot compose: the second embedding maps networks of width 1"),
    ("call on another layout",
     lambda: split(NET, 0, (0.5, 0.5))(sm.TwoLayerNet([1.0, 2.0], [[1.0], [2.0]])),
     sm.ModelError, r"maps networks of width 1, d=1, K=1, .* got width 2"),
    ("apply to the wrong length", lambda: split(NET, 0, (0.5, 0.5)).apply(torch.zeros(3)),
     sm.ModelError, r"theta must have length 2"),
    ("embedding of inconsistent shapes",
     lambda: Embedding(NET, torch.zeros(2, 3), torch.zeros(2), "split", True, ""),
     sm.ModelError, "matrix has 3 columns"),
]


@pytest.mark.parametrize(
    ("make", "error", "match"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_raises_a_clear_error(
    make: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        make()
    assert issubclass(error, ValueError)
