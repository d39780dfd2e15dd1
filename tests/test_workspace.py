"""Scratch buffers (reused per thread, never shared, never returned) and the kept inputs."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import Case, make_problem

import saddlemap as sm
from saddlemap import _workspace
from saddlemap._workspace import release, scratch

LIKE = torch.zeros(1, dtype=torch.float64)


@pytest.fixture(autouse=True)
def _fresh_pool() -> None:
    release()


def test_a_name_reuses_its_memory_and_grows_when_asked_for_more() -> None:
    first = scratch("t", (7, 3), LIKE)
    assert scratch("t", (7, 3), LIKE) is first
    smaller = scratch("t", (2, 5), LIKE)
    assert smaller.data_ptr() == first.data_ptr() and smaller.shape == (2, 5)
    assert scratch("u", (7, 3), LIKE).data_ptr() != first.data_ptr()
    larger = scratch("t", (13, 3), LIKE)
    assert larger.shape == (13, 3)
    assert scratch("t", (7, 3), LIKE).data_ptr() == larger.data_ptr()  # old views forgotten
    assert scratch("t", (7, 3), torch.zeros(1, dtype=torch.float32)).dtype == torch.float32


def test_buffers_above_the_cap_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_workspace, "MAX_BYTES", 8 * 20)
    big = scratch("big", (3, 7), LIKE)
    assert scratch("big", (3, 7), LIKE).data_ptr() != big.data_ptr()  # a fresh one each time
    assert scratch("small", (4, 5), LIKE) is scratch("small", (4, 5), LIKE)


def test_threads_get_their_own_buffers() -> None:
    mine = scratch("t", (7, 3), LIKE)
    theirs: list[int] = []
    thread = threading.Thread(target=lambda: theirs.append(scratch("t", (7, 3), LIKE).data_ptr()))
    thread.start()
    thread.join()
    assert theirs and theirs[0] != mine.data_ptr()


@pytest.mark.parametrize("K", [1, 3])
def test_results_are_not_views_of_scratch(K: int) -> None:
    net, data = make_problem(Case("tanh", "both_biases", K, 13))
    gen = torch.Generator().manual_seed(3)
    v1, v2 = (torch.randn(net.num_params, generator=gen, dtype=net.dtype) for _ in range(2))
    hv1, g1 = sm.hvp(net, data, v1), sm.gradient(net, data)
    kept = hv1.clone(), g1.clone()
    op = sm.hessian_operator(net, data)
    before = op.apply(v2[:, None])
    other = net.unflatten(net.flatten() + 0.5)
    sm.hvp(other, data, v2), sm.gradient(other, data), sm.loss_and_gradient(other, data)
    assert torch.equal(hv1, kept[0]) and torch.equal(g1, kept[1])
    assert torch.equal(op.apply(v2[:, None]), before)  # the operator's cached pass is its own


def test_inputs_edited_in_place_are_seen() -> None:
    net, data = make_problem(Case("tanh", "no_bias", 1, 7))
    before = sm.gradient(net, data)
    data.X.mul_(2.0)  # the kept transpose of X must not go stale
    after = sm.gradient(net, data)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, sm.gradient_autodiff(net, data), rtol=1e-10, atol=1e-12)


def test_inference_mode_data_work() -> None:
    net, data = make_problem(Case("tanh", "hidden_bias", 1, 7))
    with torch.inference_mode():
        frozen = sm.Dataset(data.X.clone(), data.targets.clone())
    torch.testing.assert_close(sm.gradient(net, frozen), sm.gradient(net, data), rtol=0, atol=0)
