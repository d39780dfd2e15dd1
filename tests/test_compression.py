"""Compression with a loss budget (saddlemap.compression): profiles, refits, choices."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import saddlemap as sm
import saddlemap._greedy as greedy
from saddlemap._refit import Problem, hessian_blocks, refit_convex, spd_solve, with_ones
from saddlemap._state import State
from saddlemap.compression import CompressionProfile, ProfilePoint, compression_profile
from saddlemap.errors import DataError, OptionError

F64 = torch.float64


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=F64)


def noisy_data(net: sm.TwoLayerNet, n: int, seed: int, noise: float = 0.1) -> sm.Dataset:
    gen = torch.Generator().manual_seed(seed)
    X = randn(gen, n, net.input_dim)
    return sm.Dataset(X, net(X) + noise * randn(gen, n, net.output_dim))


def check_bookkeeping(profile: CompressionProfile, m: int) -> None:
    """Widths m..min descending; every original neuron is kept in one group or dropped."""
    assert profile.widths == tuple(range(m, m - len(profile.points), -1))
    for point in profile.points:
        assert point.net.width == point.width == len(point.groups)
        kept = [k for group in point.groups for k in group]
        assert sorted(kept + list(point.dropped)) == list(range(m))


# ------------------------------------------------------------------------- exact cases
def sign_twin(net: sm.TwoLayerNet, k: int) -> sm.TwoLayerNet:
    """Replace neuron k by its sign twin (−a, −w̃): the same function for odd σ, and for
    sigmoid with c + a_k (aσ(z) = −aσ(−z) + a)."""
    flip = torch.ones(net.width, dtype=F64)
    flip[k] = -1.0
    c = net.c
    if net.activation.name == "sigmoid":
        assert c is not None
        c = c + net.a[k]
    return net.replace(a=net.a * flip[:, None], W=net.W * flip[:, None],
                       b=None if net.b is None else net.b * flip, c=c)


# activation, hidden bias, output bias, K, n, fold a sign twin
EXACT_CASES = [
    ("tanh", False, False, 1, 13, True),
    ("tanh", True, True, 2, 100, True),
    ("erf", True, False, 1, 100, False),
    ("sigmoid", True, True, 1, 13, True),
    ("softplus", True, True, 1, 100, False),
    ("gelu", False, True, 2, 13, False),
    ("relu", True, True, 1, 100, False),
]


@pytest.mark.parametrize(("act", "hidden_bias", "output_bias", "K", "n", "twin"), EXACT_CASES)
def test_split_and_null_neurons_come_back_with_the_same_loss(
    act: str, hidden_bias: bool, output_bias: bool, K: int, n: int, twin: bool
) -> None:
    gen = torch.Generator().manual_seed(7)
    base = sm.TwoLayerNet(
        randn(gen, 3, K), randn(gen, 3, 2), b=randn(gen, 3) if hidden_bias else None,
        c=randn(gen, K) if output_bias else None, activation=act,
    )
    wide = sm.split(base, 0, [0.3, 0.7]).net
    wide = sm.split(wide, 1, [2.0, -1.0]).net
    wide = sm.null_copy(wide, 2).net  # a null copy of neuron 2: merges back into it
    null = randn(gen, 1, 2)  # and a null neuron elsewhere: dropped
    wide = wide.replace(
        a=torch.cat([wide.a, torch.zeros(1, K, dtype=F64)]), W=torch.cat([wide.W, null]),
        b=None if wide.b is None else torch.cat([wide.b, randn(gen, 1)]),
    )
    if twin:
        wide = sign_twin(wide, 3)
    data = noisy_data(base, n, seed=1)
    assert torch.allclose(wide(data.X), base(data.X), rtol=0, atol=1e-12)
    profile = compression_profile(wide, data)
    check_bookkeeping(profile, 7)
    original = sm.loss(wide, data)
    top = profile.at(7)
    assert top.net is wide and top.exact and top.output_change == 0.0
    assert math.isclose(top.loss, original, rel_tol=1e-10)
    assert math.isclose(profile.loss_before, original, rel_tol=1e-10)
    exact = [p for p in profile.points if p.exact]
    assert [p.width for p in exact] == [7, 6, 5, 4, 3]  # the reduction, a width at a time
    for point in exact:
        assert math.isclose(point.loss, original, rel_tol=1e-10)
        assert math.isclose(point.loss, sm.loss(point.net, data), rel_tol=1e-10)
        assert point.output_change <= 1e-12
    assert sorted(profile.at(3).groups) == [(0, 3), (1, 4), (2, 5)]
    assert profile.at(3).dropped == (6,)
    assert profile.chosen.width <= 3 and profile.chosen.loss <= profile.budget


# ----------------------------------------------------------------------- trained models
def test_teacher_student_compresses_to_at_most_twice_the_teacher() -> None:
    prob = sm.teacher_student(teacher_width=2, width=8, d=3, n=200, activation="tanh",
                              noise=0.0, seed=0)
    run = sm.train(prob.student, prob.data, optimizer="lbfgs", steps=300)
    assert run.loss < 1e-7
    refit_only = compression_profile(run.net, prob.data)
    check_bookkeeping(refit_only, 8)
    # Near zero loss the distance to the teacher's embeddings is all there is to R, so a
    # refit of the output layer alone stays a few times above R (measured: width 7 chosen,
    # at 0.998 R; widths 4 and 2 at 1.6 and 17 times R); fine-tuning reaches width 2.
    assert refit_only.chosen.loss <= refit_only.budget
    profile = compression_profile(run.net, prob.data, finetune_steps=100)
    assert profile.chosen.width <= 4 and profile.chosen.loss <= profile.budget
    assert profile.chosen.finetuned == "lbfgs" and profile.chosen.net.width <= 4
    assert profile.losses == refit_only.losses  # the profile itself is not fine-tuned
    assert profile.notes and "width 2" in profile.notes[0]


def test_torch_adam_model_on_diabetes() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_diabetes(return_X_y=True)
    X = X[:, :3]
    X, y = (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = torch.nn.Sequential(
            torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).double()
    Xt, yt = torch.tensor(X), torch.tensor(y)[:, None]
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        (0.5 * ((module(Xt) - yt) ** 2).mean()).backward()
        opt.step()
    net = sm.TwoLayerNet.from_torch(module)
    data = sm.Dataset(X, y)
    profile = compression_profile(net, data)
    check_bookkeeping(profile, 32)
    assert math.isclose(profile.loss_before, sm.loss(net, data), rel_tol=1e-10)
    assert profile.chosen.width < 32 and profile.chosen.loss <= profile.budget
    assert profile.chosen.accuracy is None


def blobs_classifier(centers: list[tuple[float, float]], seed: int) -> tuple[object, sm.Dataset]:
    datasets = pytest.importorskip("sklearn.datasets")
    neural = pytest.importorskip("sklearn.neural_network")
    X, y = datasets.make_blobs(n_samples=300, centers=centers, cluster_std=1.0,
                               random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = neural.MLPClassifier(hidden_layer_sizes=(12,), activation="tanh",
                                   max_iter=2000, random_state=seed).fit(X, y)
    loaded = sm.load_model(clf)
    return loaded, sm.Dataset(X, y, loss=loaded.loss)


def test_cross_entropy_classifier_on_blobs() -> None:
    loaded, data = blobs_classifier([(-6.0, 0.0), (6.0, 0.0), (0.0, 6.0)], seed=0)
    assert data.loss.name == "cross_entropy" and loaded.net.output_dim == 3
    profile = compression_profile(loaded.net, data)
    check_bookkeeping(profile, 12)
    assert profile.accuracy_before is not None and profile.accuracy_before > 0.99
    chosen = profile.chosen
    assert chosen.width <= 6 and chosen.loss <= profile.budget
    assert chosen.accuracy is not None
    assert chosen.accuracy >= profile.accuracy_before * (1 - profile.max_loss_increase)
    # The refit stays bounded on separable data (no weights running off to infinity).
    assert float(chosen.net.a.abs().max()) < 1e4
    assert math.isclose(chosen.loss, sm.loss(chosen.net, data), rel_tol=1e-10)


def test_binary_cross_entropy_classifier() -> None:
    loaded, data = blobs_classifier([(-2.0, 0.0), (2.0, 0.0)], seed=1)
    assert data.loss.name == "binary_cross_entropy"
    profile = compression_profile(loaded.net, data)
    check_bookkeeping(profile, 12)
    assert profile.chosen.width < 12 and profile.chosen.loss <= profile.budget
    for point in profile.points:
        assert point.accuracy is not None and 0.0 <= point.accuracy <= 1.0
        assert math.isclose(point.loss, sm.loss(point.net, data), rel_tol=1e-10)


# ------------------------------------------------------------------------------ refits
@pytest.mark.parametrize(("m", "n", "K"), [(10, 100, 2), (12, 100, 1)])
def test_gram_updated_refit_equals_a_least_squares_refit_from_scratch(
    m: int, n: int, K: int
) -> None:
    gen = torch.Generator().manual_seed(3)
    net = sm.TwoLayerNet(randn(gen, m, K), randn(gen, m, 3), b=randn(gen, m),
                         c=randn(gen, K), activation="tanh")
    X, Y = randn(gen, n, 3), randn(gen, n, K)
    data = sm.Dataset(X, Y)
    profile = compression_profile(net, data)
    refitted = [p for p in profile.points if not p.exact]
    assert len(refitted) == m - 1
    for point in refitted:
        features = torch.tanh(X @ point.net.W.T + point.net.b)
        F = torch.cat([features, torch.ones(n, 1, dtype=F64)], 1)
        theta = torch.linalg.lstsq(F, Y, driver="gelsd").solution
        ours = torch.cat([point.net.a, point.net.c[None, :]])
        assert torch.allclose(ours, theta, rtol=0, atol=1e-10 * float(theta.abs().max()))
        loss = 0.5 * float(((F @ theta - Y) ** 2).sum()) / n
        assert math.isclose(point.loss, loss, rel_tol=1e-10)


def test_rank_deficient_gram_matrices_do_not_break_the_refit() -> None:
    # n = 13 samples, m = 20 neurons: the Gram matrix has rank 13 down to width 12.
    gen = torch.Generator().manual_seed(4)
    net = sm.TwoLayerNet(randn(gen, 20), randn(gen, 20, 3), b=randn(gen, 20), c=[0.0],
                         activation="tanh")
    data = sm.Dataset(randn(gen, 13, 3), randn(gen, 13))
    profile = compression_profile(net, data)
    scale = float((data.targets**2).mean())
    for point in profile.points[1:]:
        assert math.isfinite(point.loss) and bool(torch.isfinite(point.net.a).all())
        if point.width + 1 >= 13:  # as many features as samples: an exact fit
            assert point.loss <= 1e-20 * scale


def test_near_duplicate_neurons_in_the_greedy_phase() -> None:
    # Pairs 1e-7 apart: beyond the exact merge tolerance (√ε), so the greedy phase starts
    # with Gram matrices of condition ~1e14.  Exact least squares would use the difference
    # of a pair (a "derivative neuron", output weights ±1e6); the ridge declines it.
    gen = torch.Generator().manual_seed(12)
    base = sm.TwoLayerNet(randn(gen, 4), randn(gen, 4, 2), b=randn(gen, 4), c=[0.0],
                          activation="tanh")
    shift = 1e-7 * randn(gen, 4, 2)
    net = base.replace(a=torch.cat([base.a, 0.5 * base.a]),
                       W=torch.cat([base.W, base.W + shift]), b=torch.cat([base.b, base.b]))
    data = noisy_data(base, 60, seed=6)
    profile = compression_profile(net, data)
    assert not any(p.exact for p in profile.points[1:])
    for point in profile.points[1:]:
        assert float(point.net.a.abs().max()) < 1e3
        F = torch.cat([torch.tanh(data.X @ point.net.W.T + point.net.b),
                       torch.ones(60, 1, dtype=F64)], 1)
        losses = []
        for rcond in (None, 1e-6):  # exact; singular values below 1e-6 of the largest cut
            theta = torch.linalg.lstsq(F, data.targets, rcond=rcond, driver="gelsd").solution
            losses.append(0.5 * float(((F @ theta - data.targets) ** 2).sum()) / 60)
        assert losses[0] * (1 - 1e-10) <= point.loss <= losses[1] * (1 + 1e-10)
    assert profile.chosen.width <= 4


def test_exactly_singular_normal_equations() -> None:
    gen = torch.Generator().manual_seed(13)
    F = randn(gen, 30, 5)
    F = torch.cat([F, F[:, :2]], 1)  # two duplicate columns: rank 5 of 7
    y = randn(gen, 30, 1)
    theta = spd_solve(F.T @ F, F.T @ y)
    assert bool(torch.isfinite(theta).all())
    best = torch.linalg.lstsq(F, y, driver="gelsd").solution
    assert torch.allclose(F @ theta, F @ best, rtol=0, atol=1e-9)


def cross_entropy_problem(seed: int, m: int = 6, K: int = 3, n: int = 150
                          ) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    """A tanh network with an output bias and labels of a teacher, 10 % of them flipped."""
    gen = torch.Generator().manual_seed(seed)
    net = sm.TwoLayerNet(randn(gen, m, K), randn(gen, m, 2), b=randn(gen, m),
                         c=randn(gen, K), activation="tanh")
    X = randn(gen, n, 2)
    labels = net(X).argmax(1)
    flip = torch.rand(n, generator=gen) < 0.1
    labels[flip] = torch.randint(0, K, (int(flip.sum()),), generator=gen)
    return net, sm.Dataset(X, labels, loss="cross_entropy", num_outputs=K)


@pytest.mark.parametrize("loss", ["cross_entropy", "other"])
def test_output_layer_hessian_blocks(loss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    net, data = cross_entropy_problem(14)
    prob = Problem(net, data)
    if loss == "other":  # the general formula, from the per-sample Hessians
        monkeypatch.setattr(type(prob.loss), "hess", lambda self, g, t: (
            torch.diag_embed(torch.softmax(g, -1))
            - torch.softmax(g, -1)[:, :, None] * torch.softmax(g, -1)[:, None, :]))
    Fh = with_ones(prob, torch.tanh(net.W_aug @ prob.Xt.T))
    g = net(data.X)
    p = torch.softmax(g, -1)
    h = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    reference = torch.einsum("ai,ikl,bi->akbl", Fh, h, Fh) / prob.n
    assert torch.allclose(hessian_blocks(prob, Fh, Fh, g), reference, rtol=0, atol=1e-14)
    assert torch.allclose(hessian_blocks(prob, Fh[2:4], Fh, g), reference[2:4], rtol=0,
                          atol=1e-14)


def test_candidate_hessians_are_the_current_one_edited(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each candidate's Hessian, taken from the current width's, is that of its own
    # features at the current outputs.
    net, data = cross_entropy_problem(15)
    prob = Problem(net, data)
    state = State(prob, net)
    state.start_greedy()
    seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def record(prob: Problem, F: torch.Tensor, theta: torch.Tensor, H: torch.Tensor | None
               ) -> tuple[torch.Tensor, float]:
        seen.append((F, H))
        return theta, 0.0

    monkeypatch.setattr(greedy, "rank_convex", record)
    cands = greedy.candidates(state)
    assert len(seen) == len(cands) == 8 and sum(c.merge is not None for c in cands) == 4
    g = state.outputs()
    for F, H in seen:
        assert H is not None and F.shape == (5, prob.n)
        Fh = with_ones(prob, F)
        assert torch.allclose(H, hessian_blocks(prob, Fh, Fh, g), rtol=0, atol=1e-14)


def test_cross_entropy_points_are_exact_refits() -> None:
    # Candidates are ranked by loose refits, but the step taken is refitted exactly: from
    # zero, a refit of each point's hidden layer finds the same objective.
    net, data = cross_entropy_problem(16)
    run = sm.train(net, data, optimizer="lbfgs", steps=200)
    profile = compression_profile(run.net, data)
    check_bookkeeping(profile, 6)
    prob = Problem(run.net, data)
    floor = 0.5 * profile.loss_before
    for point in profile.points[1:]:
        assert math.isclose(point.loss, sm.loss(point.net, data), rel_tol=1e-10)
        if point.loss <= floor:  # the refit stopped at the floor
            continue
        F = torch.tanh(point.net.W_aug @ prob.Xt.T)
        theta = torch.cat([point.net.a, point.net.c[None, :]])
        _, best = refit_convex(prob, F, torch.zeros_like(theta), 0.0)
        assert point.loss <= best * (1 + 1e-9)


def test_a_point_builds_its_network_once() -> None:
    calls: list[int] = []
    net = sm.TwoLayerNet([1.0], [[1.0]])

    def build() -> sm.TwoLayerNet:
        calls.append(1)
        return net

    point = ProfilePoint(1, 0.5, None, build, ((0,),), (), 0.0)
    assert not calls and point.net is net and point.net is net and len(calls) == 1
    assert not point.exact and point.finetuned is None and "build" not in repr(point)


def test_float32_network_keeps_its_dtype() -> None:
    gen = torch.Generator().manual_seed(5)
    net = sm.TwoLayerNet(randn(gen, 6), randn(gen, 6, 2), b=randn(gen, 6), c=[0.1],
                         activation="tanh", dtype=torch.float32)
    data = noisy_data(net.to(dtype=F64), 50, seed=2)
    profile = compression_profile(net, data, min_width=3)
    assert {p.net.dtype for p in profile.points} == {torch.float32}
    assert math.isclose(profile.loss_before, sm.loss(net.to(dtype=F64), data), rel_tol=1e-10)


def test_data_penalty_is_ignored() -> None:
    gen = torch.Generator().manual_seed(6)
    net = sm.TwoLayerNet(randn(gen, 5), randn(gen, 5, 2), c=[0.0], activation="tanh")
    plain = noisy_data(net, 40, seed=3)
    try:
        penalised = sm.Dataset(plain.X, plain.targets, penalty=1e-2)  # type: ignore[call-arg]
    except TypeError:
        pytest.skip("this Dataset has no penalty")
    assert compression_profile(net, penalised).losses == compression_profile(net, plain).losses


# ------------------------------------------------------------------------------ the API
def test_profile_api_and_json() -> None:
    gen = torch.Generator().manual_seed(8)
    net = sm.TwoLayerNet(randn(gen, 5), randn(gen, 5, 2), b=randn(gen, 5), activation="erf")
    data = noisy_data(net, 30, seed=4)
    profile = compression_profile(net, data, max_loss_increase=0.5, min_width=2)
    assert profile.widths == (5, 4, 3, 2) and len(profile.losses) == 4
    assert profile.at(4) is profile.points[1] and isinstance(profile.at(4), ProfilePoint)
    with pytest.raises(OptionError, match="not 1"):
        profile.at(1)
    assert profile.budget == pytest.approx(1.5 * profile.loss_before)
    out = json.loads(json.dumps(profile.to_dict()))
    assert [p["width"] for p in out["points"]] == [5, 4, 3, 2]
    assert set(out["points"][0]) == {"width", "loss", "accuracy"}
    assert out["chosen"]["width"] == profile.chosen.width
    assert "width 5 →" in profile.summary()


def test_progress_bar_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    gen = torch.Generator().manual_seed(9)
    net = sm.TwoLayerNet(randn(gen, 4), randn(gen, 4, 1), activation="tanh")
    compression_profile(net, noisy_data(net, 20, seed=5), progress=True)
    captured = capsys.readouterr()
    assert "compress" in captured.err and captured.out == ""


BAD_OPTIONS = [
    {"max_loss_increase": -0.1},
    {"max_loss_increase": math.nan},
    {"max_loss_increase": math.inf},
    {"max_loss_increase": "0.1"},
    {"max_loss_increase": True},
    {"min_width": 0},
    {"min_width": 5},
    {"min_width": 2.0},
    {"min_width": True},
    {"finetune_steps": -1},
    {"finetune_steps": 1.5},
    {"finetune_optimizer": "sgd"},
]


@pytest.mark.parametrize("options", BAD_OPTIONS)
def test_bad_options_raise_option_error(options: dict[str, object]) -> None:
    net = sm.TwoLayerNet([1.0, 2.0, 3.0, 4.0], [[1.0], [2.0], [3.0], [4.0]])
    with pytest.raises(OptionError):
        compression_profile(net, sm.Dataset([[0.0], [1.0]], [0.0, 1.0]), **options)  # type: ignore[arg-type]


def test_data_that_do_not_fit_the_network() -> None:
    net = sm.TwoLayerNet([1.0], [[1.0, 2.0]])
    with pytest.raises(DataError):
        compression_profile(net, sm.Dataset([[0.0], [1.0]], [0.0, 1.0]))


# ------------------------------------------------------------------------------- scale
def test_a_wide_network_on_many_inputs_completes() -> None:
    # m = 256, d = 784, n = 2000: the Gram-updated refits keep this to seconds.
    gen = torch.Generator().manual_seed(10)
    m, d, n = 256, 784, 2000
    net = sm.TwoLayerNet(randn(gen, m) / m**0.5, randn(gen, m, d) / d**0.5,
                         b=0.1 * randn(gen, m), c=[0.0], activation="tanh")
    data = noisy_data(net, n, seed=11)
    profile = compression_profile(net, data)
    assert profile.widths == tuple(range(m, 0, -1))
    assert all(math.isfinite(p.loss) for p in profile.points)
    assert profile.chosen.width < m and profile.chosen.loss <= profile.budget
    assert profile.at(1).net.width == 1 and np.isfinite(profile.at(1).output_change)
