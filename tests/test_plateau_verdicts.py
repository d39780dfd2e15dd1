"""Plateau verdicts that describe the plateau, and detection that matches a person's eye."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import feed_monitor

import saddlemap as sm
from saddlemap import critical_points
from saddlemap.monitor import PlateauMonitor, PlateauRules, _channel_pair
from saddlemap.training import TrainState
from saddlemap.verdicts import Note, NoteCode

DUMMY = sm.Dataset(np.zeros((3, 1)), np.zeros(3))
SS = {"window": 50, "rtol": 1e-2, "min_length": 25, "width_tol": 0.2, "every": 5}


_STATES: dict[str, tuple[sm.Dataset, list[TrainState]]] = {}


def _committee() -> tuple[sm.Dataset, list[TrainState]]:
    """Saad–Solla soft committee (erf, orthonormal teacher of width 2, a fixed to 1): states."""
    if "run" not in _STATES:
        prob = sm.teacher_student(2, 2, d=8, n=400, activation="erf", orthonormal=True,
                                  init_scale=1e-2, seed=0)
        student = prob.student.replace(a=torch.ones(2, 1, dtype=torch.float64))
        states: list[TrainState] = []
        sm.train(student, prob.data, steps=3000, lr=0.05, freeze=["a"], loss_tol=1e-5,
                 callbacks=[states.append])  # type: ignore[list-item]
        _STATES["run"] = (prob.data, states)
    return _STATES["run"]


def _replay(**kwargs: object) -> PlateauMonitor:
    data, states = _committee()
    mon = PlateauMonitor(data, **{**SS, **kwargs})  # type: ignore[arg-type]
    for state in states:
        mon(state)
    mon.finish()
    return mon


def test_committee_plateau_snapshot_frozen_split_saddle() -> None:
    mon = _replay()
    (p,) = mon.plateaus
    assert p.verdict is sm.PlateauVerdict.NARROWER_SADDLE and p.accepted
    assert p.snapshot_step is not None
    # the snapshot is inside the plateau, where training passes closest to the saddle: its
    # ‖∇R‖ is below the midpoint's and within the snapshot stride of the plateau's least
    h = mon.history
    on = (h["step"] >= p.start) & (h["step"] <= p.end)
    g_snap = h["grad_norm"][h["step"] == p.snapshot_step][0]
    g_mid = h["grad_norm"][np.abs(h["step"] - (p.start + p.end) // 2).argmin()]
    assert p.start < p.snapshot_step < p.end - SS["window"] // 2
    assert g_snap <= g_mid and g_snap <= 1.5 * h["grad_norm"][on].min()
    assert p.frozen == ("a",) and p.kind is sm.Kind.STRICT_SADDLE
    assert p.spectrum is not None and p.spectrum.min < 0  # in the trained subspace
    ref = p.refined
    assert ref is not None and torch.equal(ref.a, torch.ones_like(ref.a))
    assert float((ref.W[0] - ref.W[1]).norm()) < 1e-6  # the split saddle
    assert p.distance is not None and p.distance <= mon.rules.max_distance
    assert p.max_path_loss is not None and p.max_path_loss <= p.loss * 1.01
    # the same verdict when the frozen block is given rather than inferred
    (q,) = _replay(freeze=("a",)).plateaus
    assert q.verdict is p.verdict and q.snapshot_step == p.snapshot_step


def test_refinement_too_far_is_not_near_critical() -> None:
    (p,) = _replay(max_distance=1e-9).plateaus
    assert p.verdict is sm.PlateauVerdict.NOT_NEAR_CRITICAL and not p.accepted
    assert p.distance is not None and p.distance > 1e-9
    assert p.max_path_loss is not None and np.isfinite(p.max_path_loss)


def test_sensitivity_to_window_and_rtol() -> None:
    verdicts = {
        (w, r): [p.verdict for p in _replay(window=w, rtol=r, min_length=w // 2).plateaus]
        for w in (25, 50, 100) for r in (5e-3, 1e-2, 2e-2)
        if (w == 50 or r == 1e-2)
    }
    assert all(v == [sm.PlateauVerdict.NARROWER_SADDLE] for v in verdicts.values()), verdicts


def test_converged_run_is_no_plateau() -> None:
    steps = np.arange(3000)
    losses = np.maximum(np.exp(-0.03 * steps), 1e-13)  # reaches the rounding floor, stays
    assert feed_monitor(losses, window=50, min_length=20).plateaus == []
    prob = sm.teacher_student(1, 1, d=2, n=20, activation="tanh", seed=3)
    mon = PlateauMonitor(prob.data, window=20, min_length=10)
    run = sm.train(prob.student, prob.data, optimizer="lbfgs", steps=200, callbacks=[mon])
    assert run.loss < 1e-10 * mon.history["loss"][0] and mon.finish() == []


def test_slow_tail_is_no_plateau() -> None:
    steps = np.arange(8000)
    tail = 1.0 / (1 + 0.01 * steps)  # stalls relative to the drop so far, never drops again
    mon = feed_monitor(tail, window=100, rtol=1e-3, min_length=50)
    assert mon.plateaus == []


def test_tail_sinking_at_one_rate_has_no_escape() -> None:
    # Adam near a minimum: R falls ~5 % per window for 3,000 steps, then ~2× faster; a stall
    # by the window rules, but a person sees one straight line on a log axis, no plateau
    rates = np.where(np.arange(6000) < 300, 0.03, np.where(np.arange(6000) < 3300, 5e-4, 1.1e-3))
    losses = np.exp(-np.cumsum(rates))
    assert feed_monitor(losses, window=100, rtol=1e-3, min_length=50).plateaus == []
    # the same stretch with a sharp escape (10× the plateau's rate) is a plateau
    rates[3300:] = 5e-3
    (p,) = feed_monitor(np.exp(-np.cumsum(rates)), window=100, rtol=1e-3,
                        min_length=50).plateaus
    assert 250 <= p.start <= 500 and 3250 <= p.end <= 3450


@pytest.mark.parametrize("rise", [40, 61, 90])
def test_adam_spike_is_no_plateau(rise: int) -> None:
    # Adam at a minimum (as seen in the PoC study): R decays to ~1e-9 R0, climbs 10⁶× over
    # `rise` steps, falls back 50× fast and decays on; the climb is no stall, nor the fall an
    # escape from one
    t = np.arange(2500.0)
    top = 8e-10 * 1e6
    losses = np.select(
        [t < 1350, t < 1350 + rise, t < 1370 + rise],
        [np.exp(-0.0155 * t), 8e-10 * np.exp(np.log(1e6) * (t - 1350) / rise),
         top * np.exp(-0.2 * (t - 1350 - rise))],
        top * np.exp(-4.0 - 0.01 * (t - 1370 - rise)))
    assert feed_monitor(losses, window=100, rtol=1e-3, rel_rtol=0.1,
                        min_length=50).plateaus == []


def test_sinking_plateau_at_two_percent_is_found() -> None:
    loss, value = [], 1.0
    for t in range(2000):
        loss.append(value)
        rate = 2e-4 if 400 <= t < 1400 else 0.01  # sinks ~2 % per window while at R ≈ 2 %
        value *= 1 - rate
    assert 0.015 < loss[1000] < 0.025
    mon = feed_monitor(np.array(loss), window=100, rtol=1e-2, min_length=50)
    (p,) = mon.plateaus
    assert 350 <= p.start <= 450 and 1350 <= p.end <= 1450
    assert mon.rules.to_dict()["rtol"] == 1e-2


def test_decisions_never_read_note_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same verdicts when every note of the refinement says nonsense."""
    prob = sm.teacher_student(2, 2, d=8, n=400, activation="erf", orthonormal=True,
                              init_scale=1e-2, seed=0)
    student = prob.student.replace(a=torch.ones(2, 1, dtype=torch.float64))

    def run() -> list[tuple[sm.PlateauVerdict, sm.Kind | None, float | None]]:
        mon = PlateauMonitor(prob.data, **{**SS, "max_distance": 0.5})  # type: ignore[arg-type]
        sm.train(student, prob.data, steps=450, lr=0.05, callbacks=[mon])  # a trained too
        return [(p.verdict, p.kind, p.distance) for p in mon.finish()]

    before = run()
    assert [v for v, _, _ in before] == [sm.PlateauVerdict.NARROWER_SADDLE]
    monkeypatch.setattr(critical_points, "Note", lambda code, text: Note(code, "xyzzy"))
    assert run() == before


def test_channel_evidence_needs_a_growing_opposite_pair() -> None:
    snap = sm.TwoLayerNet([1.0, -1.0, 0.5], [[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    far = snap.replace(a=torch.tensor([[5.0], [-5.0], [0.5]], dtype=torch.float64))
    assert _channel_pair(snap, far, 1.0, 0.9) == (0, 1)
    assert _channel_pair(snap, far, 1.0, 1.1) is None  # R does not fall
    assert _channel_pair(snap, snap, 1.0, 0.9) is None  # nothing grew
    apart = far.replace(W=torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                                       dtype=torch.float64))
    assert _channel_pair(snap, apart, 1.0, 0.9) is None  # input weights differ


def test_bad_options_are_refused() -> None:
    for bad in ({"rtol": float("nan")}, {"floor": -1.0}, {"drop": 1.0}, {"window": 0},
                {"max_distance": float("inf")}, {"path_points": 1}, {"snapshots": True},
                {"escape_steps": 0}, {"freeze": ("z",)}, {"width_tol": float("nan")}):
        with pytest.raises(sm.OptionError):
            PlateauMonitor(DUMMY, **bad)  # type: ignore[arg-type]
    with pytest.raises(sm.OptionError):
        PlateauRules(path_margin=-0.1)
    assert NoteCode.CHANNEL_PAIR.value  # codes, not texts, carry the channel evidence
