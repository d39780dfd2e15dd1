"""Writing a diagnosis: JSON (versioned schema), Markdown and self-contained HTML (private)."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._version import __version__

if TYPE_CHECKING:
    from .diagnose import Report


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def report_dict(rep: Report) -> dict[str, Any]:
    """The report as plain JSON types; keys are stable within a schema version."""
    from .diagnose import SCHEMA_VERSION

    cp, cls, red, comp = rep.point, rep.classification, rep.reduction, rep.compression
    spec = cp.spectrum
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "saddlemap_version": __version__,
        "model": {
            "source": rep.source, "width": rep.net.width, "input_dim": rep.net.input_dim,
            "output_dim": rep.net.output_dim, "activation": rep.net.activation.name,
            "hidden_bias": rep.net.b is not None, "output_bias": rep.net.c is not None,
            "parameters": rep.net.num_params,
        },
        "data": {"samples": rep.data.n, "loss": rep.data.loss.name},
        "loss": rep.loss,
        "critical_point": {
            "refined": rep.refined, "critical": cp.converged, "loss": cp.loss,
            "grad_norm": cp.grad_norm, "grad_tol": cp.grad_tol,
            "hgrad_ratio": _num(cp.hgrad_ratio), "iterations": cp.iterations,
            "verdict": cp.verdict.value, "warnings": list(cp.warnings),
            "start_grad_norm": rep.start.grad_norm,
        },
        "spectrum": {
            "method": spec.method, "min": spec.min, "max": spec.max,
            "inertia": None if spec.inertia is None else list(spec.inertia),
            "zero_tol": spec.zero_tol, "zero_rtol": spec.zero_rtol,
            "eigenvalues": [float(x) for x in np.asarray(spec.eigenvalues)],
        },
        "classification": {
            "kind": cls.kind.value, "curvature": _num(cls.curvature),
            "evidence": list(cls.evidence),
            "witness": "direction" if cls.direction is not None else (
                "curve" if cls.curve is not None else None),
        },
        "reduction": {
            "minimal_width": red.width, "groups": [list(g) for g in red.groups],
            "null_groups": [list(g) for g in red.dropped_null],
            "zero_neurons": list(red.dropped_zero), "tol": red.tol,
            "output_change": red.output_change, "is_minimal": red.is_minimal,
            "notes": list(red.notes),
        },
        "compression": {
            "params_before": comp.params_before, "params_after": comp.params_after,
            "flops_per_sample_before": comp.flops_before,
            "flops_per_sample_after": comp.flops_after,
            "max_output_change": comp.max_output_change,
        },
        "escape": None,
        "summary": rep.summary().splitlines(),
        "notes": list(rep.notes),
    }
    esc = rep.escape
    if esc is not None:
        out["escape"] = {
            "method": esc.method, "step": esc.step, "loss_before": esc.loss_before,
            "loss_after_step": esc.loss_after_step, "escaped": esc.escaped,
            "end_loss": None if esc.end is None else esc.end.loss,
            "end_verdict": None if esc.end is None else esc.end.verdict.value,
            "end_width": esc.end_width,
            "path_t": [float(t) for t in esc.path_t],
            "path_loss": [float(x) for x in esc.path_loss],
        }
    return out


def _figures(rep: Report, folder: Path) -> dict[str, str]:
    """Draw the report's figures into PNG files; a figure that cannot be drawn is skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    from . import plots

    jobs: dict[str, Any] = {
        "neuron_map": lambda ax: plots.plot_neuron_map(rep.point.net, rep.reduction, ax=ax),
        "spectrum": lambda ax: plots.plot_spectrum(rep.point.spectrum, ax=ax),
    }
    if rep.escape is not None and rep.escape.path_t.size:
        jobs["escape"] = lambda ax: plots.plot_escape(rep.escape, ax=ax)
    if rep.point.net.layout.aug_dim <= 2:
        jobs["residual_function"] = lambda ax: plots.plot_residual_function(
            rep.point.net, rep.data, ax=ax)
    written = {}
    for name, draw in jobs.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        try:
            draw(ax)
            path = folder / f"{name}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            written[name] = str(path)
        except ValueError:
            pass
        finally:
            plt.close(fig)
    return written


def _markdown(rep: Report, figures: dict[str, str]) -> str:
    d = report_dict(rep)
    lines = [
        "# saddlemap diagnosis", "",
        f"{d['model']['source']}: width {d['model']['width']}, d = {d['model']['input_dim']}, "
        f"K = {d['model']['output_dim']}, {d['model']['activation']}, "
        f"{d['data']['samples']} samples, {d['data']['loss']} loss.", "",
        "## Answers", "", *rep.summary().splitlines(), "",
        "## Evidence", "",
        f"* verdict: {d['classification']['kind']}",
        *[f"* {e}" for e in d["classification"]["evidence"]],
        f"* ‖∇R‖ = {d['critical_point']['grad_norm']:.2e}, "
        f"‖H∇R‖/‖∇R‖ = {d['critical_point']['hgrad_ratio']}",
        f"* minimal width {d['reduction']['minimal_width']}, clusters "
        f"{d['reduction']['groups']}, null groups {d['reduction']['null_groups']}",
        f"* parameters {d['compression']['params_before']} → {d['compression']['params_after']}, "
        f"flops per sample {d['compression']['flops_per_sample_before']} → "
        f"{d['compression']['flops_per_sample_after']}",
        *[f"* warning: {w}" for w in d["critical_point"]["warnings"]],
        *[f"* note: {n}" for n in d["notes"]],
        "",
    ]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{name}]({Path(path).name})" for name, path in figures.items()]
    return "\n".join(lines) + "\n"


def _html(markdown: str, figures: dict[str, str]) -> str:
    body = []
    for line in markdown.splitlines():
        if line.startswith("!["):
            name = line[2 : line.index("]")]
            data = base64.b64encode(Path(figures[name]).read_bytes()).decode()
            body.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{name.replace('_', ' ')}</figcaption></figure>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("* "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    style = ("body{font-family:sans-serif;max-width:52em;margin:2em auto;line-height:1.45}"
             "img{max-width:100%}figure{margin:1em 0}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>saddlemap diagnosis"
            f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def save_report(rep: Report, folder: str) -> dict[str, str]:
    """Write report.json, report.md, report.html and the figure PNGs; return their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(rep, out)
    markdown = _markdown(rep, figures)
    paths = {"json": out / "report.json", "markdown": out / "report.md",
             "html": out / "report.html"}
    paths["json"].write_text(json.dumps(report_dict(rep), indent=2) + "\n")
    paths["markdown"].write_text(markdown)
    paths["html"].write_text(_html(markdown, figures))
    return {**{k: str(v) for k, v in paths.items()}, **figures}
