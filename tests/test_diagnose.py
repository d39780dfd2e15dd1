"""diagnose and compress on constructed saddles, stalled runs and real models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import saddlemap as sm
from saddlemap.diagnosis import SCHEMA_VERSION, flops_per_sample

WORKED = sm.Dataset([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0], [-1.0, -1.0, 0.0, 0.5, 0.5, 0.0])
A, W = 0.610515537972, 1.433931221329


def test_constructed_split_saddle_is_a_strict_saddle_with_a_checked_witness() -> None:
    net = sm.TwoLayerNet([2 * A, -A], [[W], [W]])
    rep = sm.diagnose(net, WORKED, escape_steps=200)
    assert rep.verdict is sm.Kind.STRICT_SADDLE and rep.minimal_width == 1
    v = rep.classification.direction
    assert v is not None
    H = sm.hessian(rep.point.net, WORKED)
    assert float(v @ H @ v) < 0  # checked independently of the library's own claim
    assert rep.escape is not None and rep.escape.end is not None
    assert rep.escape.end.loss < rep.loss
    assert "Smaller model: yes" in rep.summary() and "is a strict saddle" in rep.summary()
    assert rep.branch is not None and rep.branch.is_saddle_branch and rep.branch.width == 1
    assert rep.descent.improved and rep.descent.lambda_min < 0


def test_constructed_non_strict_saddle_reports_a_descending_curve() -> None:
    net = sm.TwoLayerNet([A, 0.0], [[W], [W]])
    rep = sm.diagnose(net, WORKED, escape_steps=0)
    assert rep.verdict is sm.Kind.NON_STRICT_SADDLE
    curve = rep.classification.curve
    assert curve is not None
    for t in (0.05, 0.1, -0.1):
        assert sm.loss(curve.point(t), WORKED) < sm.loss(net, WORKED)


def test_demo_plateau_is_a_narrower_saddle_escaped_by_orders_of_magnitude() -> None:
    demo = sm.run_demo()
    rep = demo.report
    assert demo.plateau.verdict is sm.PlateauVerdict.NARROWER_SADDLE
    assert demo.plateau.snapshot_step is not None
    assert demo.plateau.start < demo.plateau.snapshot_step < demo.plateau.end
    assert rep.verdict is sm.Kind.STRICT_SADDLE and rep.describes_model
    assert rep.minimal_width == rep.compression.width == 1 < rep.net.width == 2
    assert rep.compression.params_after < rep.compression.params_before
    assert rep.escape is not None and rep.escape.escaped
    assert demo.drop > 6  # the plateau R ≈ 0.033 falls to the teacher's R = 0
    assert "plateau from step" in str(rep.notes[0])


def test_demo_rejects_absurd_steps() -> None:
    for steps in (0, -3, 1.5, True):
        with pytest.raises(sm.OptionError, match="steps"):
            sm.run_demo(steps=steps)  # type: ignore[arg-type]


def test_report_json_markdown_html(tmp_path: Path) -> None:
    rep = sm.diagnose(sm.TwoLayerNet([2 * A, -A], [[W], [W]]), WORKED,
                      escape_steps=100)
    paths = sm.save_report(rep, str(tmp_path))
    record = json.loads(open(paths["json"]).read())
    assert record["schema_version"] == SCHEMA_VERSION == "2.0"
    assert record["classification"]["kind"] == "strict saddle"
    for section, keys in {
        "compression": ("width", "loss_before", "loss_after", "profile"),
        "descent": ("lambda_min", "loss_after_step"),
        "nearest_branch": ("width", "distance", "loss_gap"),
        "critical_point": ("at_infinity",), "penalty": ("weight_decay",),
    }.items():
        assert all(key in record[section] for key in keys), section
    assert record["compression"]["width"] == 1 and record["nearest_branch"]["width"] == 1
    assert all({"width", "loss"} <= set(p) for p in record["compression"]["profile"])
    assert record["penalty"]["weight_decay"] is None
    assert (tmp_path / "compressed.npz").exists() and (tmp_path / "improved.npz").exists()
    assert record["reduction"]["minimal_width"] == 1
    assert record["escape"]["end_loss"] < record["loss"]
    html = open(paths["html"]).read()
    assert html.count("data:image/png;base64,") >= 3  # self-contained figures
    markdown = open(paths["markdown"]).read()
    # the three answers open the page, each with its number; the evidence is labelled
    top = markdown.split("## ")[1]
    assert top.startswith("Three answers")
    assert "r = 1 of m = 2" in top and "Neurons 0 and 1" in top and "ΔR = -" in top
    evidence = markdown.split("## Evidence")[1].split("## ")[0]
    assert "‖∇R‖ of the model as given = " in evidence
    assert "‖∇R‖ at the analysed point = " in evidence
    assert '<ol class=answers>' in html and html.index("answers") < html.index("Evidence")


def test_compress_keeps_outputs_and_counts_savings() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2, generator=gen)
    W3 = torch.randn(3, 4, generator=gen)
    wide = sm.TwoLayerNet(torch.cat([0.3 * a, 0.7 * a, torch.zeros(1, 2)]),
                          torch.cat([W3, W3, torch.randn(1, 4, generator=gen)]),
                          b=torch.zeros(7), c=torch.ones(2), activation="gelu")
    out = sm.compress(wide, torch.randn(13, 4, generator=gen))
    assert out.net.width == 3 and out.max_output_change <= 1e-12
    assert out.params_after < out.params_before
    assert out.flops_after < out.flops_before == flops_per_sample(wide)


def test_not_critical_point_is_still_training() -> None:
    rep = sm.diagnose(sm.TwoLayerNet([0.3], [[1.0]]), WORKED, refine=False)
    assert rep.verdict is sm.Kind.NOT_CRITICAL
    assert "not at a critical point" in rep.summary()


def test_mismatched_data_is_refused() -> None:
    with pytest.raises(sm.DataError):
        sm.diagnose(sm.TwoLayerNet([0.3], [[1.0, 2.0]]), [[1.0]], [1.0])


def test_answers_name_the_budget_clusters_when_no_neurons_coincide() -> None:
    from saddlemap.report import answers

    near = sm.TwoLayerNet([0.5 * A, 0.5 * A], [[W], [W * (1 + 1e-3)]], activation="tanh")
    rep = sm.diagnose(near, WORKED, escape_steps=0, refine=False)
    assert rep.minimal_width == 2 and rep.compression.width == 1
    width, keeps, _ = answers(rep)
    assert width.startswith("**Minimal width: r = 2 of m = 2.**")
    bp = rep.branch
    assert bp is not None
    clusters = [g for g in bp.groups if len(g) > 1]
    assert (f"within the 1 % loss budget, {len(clusters)} cluster(s) and {len(bp.nulls)} "
            "near-null") in keeps
    for k in (*bp.nulls, *(k for g in clusters for k in g)):
        assert str(k) in keeps.split("**")[-1]
    assert len(clusters) + len(bp.nulls) >= 1  # the budget merged or dropped a neuron
