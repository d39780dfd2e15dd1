"""Writing a diagnosis: JSON (versioned schema), Markdown and self-contained HTML.

:func:`save_report` is the presentation of a :class:`~saddlemap.Report`: its JSON record
(``Report.to_dict``), a Markdown page, a self-contained HTML page and the figures, which are
drawn from the report's finished results only.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import plots
from .derivatives import residual_function
from .diagnosis import Report
from .io import save_estimator, save_model
from .network import TwoLayerNet
from .zero_set import ZeroSet, ZeroSetPoint

__all__ = ["save_report"]


@dataclass(frozen=True)
class _FigureResults:
    """Results the figures need that the report does not carry: φ_f's zero set and zeros.

    The plots draw finished results only, so the residual-function figure is handed the
    zero set of the analysed point's residual function and its zeros.  (A Report that
    carried its zero set would make this step unnecessary.)
    """

    zero_set: ZeroSet
    zeros: list[ZeroSetPoint] | None


def _figure_results(rep: Report) -> _FigureResults:
    """The zero set of the analysed point, and its zeros for one-dimensional u.

    The zeros are searched on [−12, 12] widened to cover the neurons and their sign twins,
    so every zero inside the figure's default span is found.  Cheap: one residual function
    and one grid search for D = 1; for D = 2 no zeros are searched (the contour shows Z_f).
    """
    net = rep.point.net
    zero_set = ZeroSet(residual_function(net, rep.data), rep.tolerances)
    if net.layout.aug_dim != 1:
        return _FigureResults(zero_set, None)
    W = net.W_aug
    reach = max(12.0, 1.25 * float(W.abs().max()) + 1.0) if W.numel() else 12.0
    return _FigureResults(zero_set, zero_set.zeros_1d((-reach, reach)))


def _figures(rep: Report, folder: Path) -> dict[str, str]:
    """Draw the report's figures into PNG files; a figure that cannot be drawn is skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}

    jobs: dict[str, Callable[[Any], object]] = {
        "neuron_map": lambda ax: plots.plot_neuron_map(rep.point.net, rep.reduction, ax=ax),
        "spectrum": lambda ax: plots.plot_spectrum(rep.point.spectrum, ax=ax),
    }
    escape = rep.escape
    if escape is not None and escape.path_t.size:
        jobs["escape"] = lambda ax: plots.plot_escape(escape, ax=ax)
    if rep.point.net.layout.aug_dim <= 2:
        try:
            found = _figure_results(rep)
        except ValueError:  # OptionError included: no residual-function figure then
            pass
        else:
            jobs["residual_function"] = lambda ax: plots.plot_residual_function(
                rep.point.net, found.zero_set, zeros=found.zeros, ax=ax)
    written = {}
    for name, draw in jobs.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        try:
            draw(ax)
            path = folder / f"{name}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")
            written[name] = str(path)
        except ValueError:  # OptionError included: a figure these results cannot show
            pass
        finally:
            plt.close(fig)
    return written


def _markdown(rep: Report, figures: dict[str, str]) -> str:
    d = rep.to_dict()
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
        *[f"* warning: {w['text']}" for w in d["critical_point"]["warnings"]],
        *[f"* note: {n['text']}" for n in d["notes"]],
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


def _models(rep: Report, folder: Path) -> dict[str, str]:
    """The smaller model (in its own type) and the model after the descent step, if taken.

    A torch model is written as ``.pt`` (a whole module, in its original dtype: a pickle,
    which saddlemap reads back only with ``--trust-pickle``), a scikit-learn model as
    ``.skops`` (no pickle is written unless a user asks for one; without skops installed,
    the network as ``.npz``), any other as saddlemap's ``.npz``.
    """
    written: dict[str, str] = {}
    model = rep.compression.model
    if isinstance(model, TwoLayerNet):
        path = folder / "compressed.npz"
        save_model(model, path)
    elif isinstance(model, torch.nn.Module):
        path = folder / "compressed.pt"
        torch.save(model, path)
    else:
        path = _save_estimator_or_net(model, rep.compression.net, folder)
    written["compressed_model"] = str(path)
    if rep.descent.improved:
        path = folder / "improved.npz"
        save_model(rep.descent.net, path)
        written["improved_model"] = str(path)
    return written


def _save_estimator_or_net(estimator: object, net: TwoLayerNet, folder: Path) -> Path:
    """``compressed.skops``; the network as ``compressed.npz`` where skops is missing."""
    path = folder / "compressed.skops"
    try:
        save_estimator(estimator, path)
    except ImportError:
        path = folder / "compressed.npz"
        save_model(net, path)
    return path


def save_report(rep: Report, folder: str) -> dict[str, str]:
    """Write report.json, report.md, report.html, the figure PNGs and the models.

    The models: ``compressed.*`` (the smaller model chosen within the loss budget, in the
    model's own type) and ``improved.npz`` (the model after the negative-curvature step,
    when it lowered the loss).  Returns the paths by name.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    models = _models(rep, out)
    figures = _figures(rep, out)
    markdown = _markdown(rep, figures)
    paths = {"json": out / "report.json", "markdown": out / "report.md",
             "html": out / "report.html"}
    paths["json"].write_text(json.dumps(rep.to_dict(), indent=2) + "\n")
    paths["markdown"].write_text(markdown)
    paths["html"].write_text(_html(markdown, figures))
    return {**{k: str(v) for k, v in paths.items()}, **figures, **models}
