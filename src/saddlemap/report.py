"""Writing a diagnosis: JSON (versioned schema), Markdown and self-contained HTML.

:func:`save_report` is the presentation of a :class:`~saddlemap.Report`: its JSON record
(``Report.to_dict``), a Markdown page, a self-contained HTML page and the figures, which are
drawn from the report's finished results only.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import plots
from .derivatives import residual_function
from .diagnosis import Report
from .io import save_estimator, save_model
from .monitor import PlateauMonitor
from .network import TwoLayerNet
from .training import History
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


def _training_job(monitor: PlateauMonitor | None, history: History | None
                  ) -> Callable[[Any], object] | None:
    """The training-curve figure: the monitor's (plateaus shaded, verdicts), else the run's."""
    if monitor is not None and len(monitor.history["step"]):
        return lambda ax: plots.plot_plateaus(monitor, ax=ax)
    if history is not None and len(history):
        return lambda ax: plots.plot_training(history, ax=ax)
    return None


def _figures(rep: Report, folder: Path, monitor: PlateauMonitor | None = None,
             history: History | None = None) -> dict[str, str]:
    """Draw the report's figures into PNG files; a figure that cannot be drawn is skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}

    jobs: dict[str, tuple[Callable[[Any], object], tuple[float, float]]] = {}
    training = _training_job(monitor, history)
    if training is not None:
        jobs["training"] = (training, (7.5, 4.2))
    width = rep.point.net.width
    jobs["neuron_map"] = (
        lambda ax: plots.plot_neuron_map(rep.point.net, rep.reduction, ax=ax),
        (6.0, 4.5) if width <= 50 else (7.5, 6.0))
    if rep.descent.path_t.size or rep.descent.up_t.size:
        jobs["way_down"] = (lambda ax: plots.plot_descent(rep.descent, ax=ax), (9.5, 4.0))
    escape = rep.escape
    if escape is not None and escape.path_t.size:
        jobs["escape"] = (lambda ax: plots.plot_escape(escape, ax=ax), (9.5, 4.0))
    jobs["spectrum"] = (lambda ax: plots.plot_spectrum(rep.point.spectrum, ax=ax), (6.0, 4.0))
    if rep.point.net.layout.aug_dim <= 2:
        try:
            found = _figure_results(rep)
        except ValueError:  # OptionError included: no residual-function figure then
            pass
        else:
            jobs["residual_function"] = (lambda ax: plots.plot_residual_function(
                rep.point.net, found.zero_set, zeros=found.zeros, ax=ax), (6.0, 4.0))
    written = {}
    for name, (draw, size) in jobs.items():
        fig, ax = plt.subplots(figsize=size)
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


#: What each figure shows, one line under it.
CAPTIONS = {
    "training": "Training curve: loss (left, log), ‖∇R‖ (right, log) and effective width; "
                "plateaus shaded and labelled with the monitor's verdict.",
    "neuron_map": "Neuron map: each neuron's input weights; clusters labelled Cj (×size), "
                  "null neurons open.",
    "way_down": "Down one way, up another: the loss along the lowest-curvature eigenvector "
                "(red) and the highest (blue) at the model; zoom on the right.",
    "escape": "Escape from the analysed saddle: the loss along the escape direction or "
              "curve, the step starred; zoom on the right.",
    "spectrum": "Hessian spectrum at the analysed point (symlog; the zero band shaded).",
    "residual_function": "The residual function φ_f and its zeros.",
}


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "n/a" if x is None else format(x, fmt)


def _neurons(group: tuple[int, ...] | list[int]) -> str:
    """'neuron 3', 'neurons 0 and 1', 'neurons 0, 2 and 5'."""
    g = [str(k) for k in sorted(group)]
    if len(g) == 1:
        return f"neuron {g[0]}"
    return "neurons " + ", ".join(g[:-1]) + " and " + g[-1]


def _answer_width(rep: Report) -> str:
    r, m, comp = rep.minimal_width, rep.net.width, rep.compression
    prof = comp.profile
    budget = f"{100 * prof.max_loss_increase:g} %" if prof is not None else "0 %"
    where = "the model" if rep.point is rep.start else (
        f"the model refined by a relative {rep.point.moved:.2g}")
    return (f"**Minimal width: r = {r} of m = {m}.** {where[0].upper() + where[1:]} computes "
            f"the same function with {r} neuron{'s' if r != 1 else ''} (max output change "
            f"{rep.reduction.output_change:.1e}), and within the {budget} loss budget the "
            f"smaller model has width {comp.width} ({comp.params_before} → "
            f"{comp.params_after} parameters).")


def _answer_keeps(rep: Report, shown: int = 4) -> str:
    red = rep.reduction
    a = red.net.a
    merged = [(j, g) for j, g in enumerate(red.groups) if len(g) > 1]
    parts = []
    for j, g in merged[:shown]:
        total = float(torch.linalg.vector_norm(a[j]))
        parts.append(f"{_neurons(g)} share one input weight vector and act as one neuron: "
                     f"any split of their output weights with the same sum "
                     f"(‖Σa‖ = {total:.4g}) keeps the output")
    if len(merged) > shown:
        parts.append(f"so do {len(merged) - shown} more cluster(s)")
    if red.dropped_null:
        nulls = [k for g in red.dropped_null for k in g]
        parts.append(f"{_neurons(nulls)} {'is' if len(nulls) == 1 else 'are'} null (output "
                     "weights summing to zero), so their input weights are free")
    if red.dropped_zero:
        parts.append(f"{_neurons(red.dropped_zero)} compute a zero or constant function")
    if not parts and rep.branch is not None:
        return _answer_keeps_within_budget(rep, shown)
    if not parts:
        return (f"**Which parameters keep the output: all {red.original_width} neurons are "
                "distinct and needed** — no cluster and no null neuron, so only the "
                "symmetries of the activation keep the output.")
    return (f"**Which parameters keep the output: {len(merged)} cluster(s) and "
            f"{sum(len(g) for g in red.dropped_null)} null neuron(s).** "
            + _sentence("; ".join(parts)))


def _answer_keeps_within_budget(rep: Report, shown: int) -> str:
    """No exact cluster: the clusters and near-null neurons of the budgeted width."""
    bp, prof = rep.branch, rep.compression.profile
    assert bp is not None
    budget = f"{100 * prof.max_loss_increase:g} %" if prof is not None else "the"
    clusters = [g for g in bp.groups if len(g) > 1]
    parts = [f"{_neurons(g)} act as one neuron" for g in clusters[:shown]]
    if len(clusters) > shown:
        parts.append(f"so do {len(clusters) - shown} more cluster(s)")
    if bp.nulls:
        parts.append(f"{_neurons(bp.nulls)} contribute{'s' if len(bp.nulls) == 1 else ''} "
                     "almost nothing")
    return (f"**Which parameters keep the output: no neurons coincide exactly; within the "
            f"{budget} loss budget, {len(clusters)} cluster(s) and {len(bp.nulls)} "
            f"near-null neuron(s).** " + _sentence("; ".join(parts)))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _orders(before: float, after: float) -> str:
    """How much lower ``after`` is: in orders of magnitude, or in percent below one."""
    if after <= 0:
        return "down to zero in float64"
    if before < 10 * after:
        return f"{100 * (after - before) / before:+.1f} %"
    return f"{math.log10(before / after):.1f} orders of magnitude lower"


def _answer_down(rep: Report) -> str:
    esc, des = rep.escape, rep.descent
    if esc is not None and esc.step != 0.0:
        line = (f"**The way down: ΔR = {esc.loss_after_step - esc.loss_before:.3g}** after a "
                f"step t = {esc.step:.3g} along the {esc.method.value} from the "
                f"{esc.start.kind.value} (λ_min = {rep.point.spectrum.min:.3g})")
        if esc.end is not None:
            line += (f", and training on from there takes R from {esc.loss_before:.4g} to "
                     f"{esc.end.loss:.3g} ({_orders(esc.loss_before, esc.end.loss)})")
            line += (f", at a {esc.end.verdict.value} of minimal width {esc.end_width}"
                     if esc.end.converged else ", where training stopped short of a "
                     "critical point")
        return line + "."
    if des.direction is not None and des.improved:
        return (f"**The way down: ΔR = {des.loss_after_step - des.loss_before:.3g}** after a "
                f"step t = {des.step:.3g} along the eigenvector of λ_min = "
                f"{des.lambda_min:.3g} at the model (R {des.loss_before:.4g} → "
                f"{des.loss_after_step:.4g}).")
    return (f"**No way down at second order: ΔR = 0** — λ_min = {des.lambda_min:.3g} is not "
            f"below −{des.zero_tol:.3g}; the analysed point is a "
            f"{rep.classification.kind.value}.")


def answers(rep: Report) -> list[str]:
    """The three answers, one sentence each with its number (Markdown, bold lead)."""
    return [_answer_width(rep), _answer_keeps(rep), _answer_down(rep)]


def _evidence(rep: Report) -> list[str]:
    """Every number behind the answers, each with its label."""
    d = rep.to_dict()
    cp, comp, red, des = d["critical_point"], d["compression"], d["reduction"], d["descent"]
    hgrad = "n/a" if cp["hgrad_ratio"] is None else f"{cp['hgrad_ratio']:.3g}"
    which = "the model as given" if rep.point is rep.start else "the model refined"
    lines = [
        f"verdict (kind of the analysed point): {d['classification']['kind']}",
        f"analysed point: {which}; moved (relative distance) = {cp['moved']:.3g}; "
        f"describes the model: "
        f"{'yes' if rep.describes_model else 'no'}",
        f"loss R of the model as given = {rep.loss:.6g}; R at the analysed point = "
        f"{cp['loss']:.6g}",
        f"‖∇R‖ of the model as given = {cp['start_grad_norm']:.3e}",
        f"‖∇R‖ at the analysed point = {cp['grad_norm']:.3e} (critical below the gradient "
        f"tolerance {cp['grad_tol']:.3e}); ‖H∇R‖/‖∇R‖ = {hgrad}",
        *[f"classification evidence: {e}" for e in d["classification"]["evidence"]],
        f"exact reduction: minimal width r = {red['minimal_width']} (of m = {rep.net.width}); "
        f"clusters {red['groups']}; null groups {red['null_groups']}; zero or constant "
        f"neurons {red['zero_neurons']}; equal-weight tolerance {red['tol']:.3g}; max output "
        f"change {red['output_change']:.3g}",
        f"compression within the budget: width {comp['width']}; R {_num(comp['loss_before'])}"
        f" → {_num(comp['loss_after'])}; parameters {comp['params_before']} → "
        f"{comp['params_after']}; flops per sample {comp['flops_per_sample_before']} → "
        f"{comp['flops_per_sample_after']}; max output change "
        f"{comp['max_output_change']:.3g}",
        f"negative-curvature step at the model: λ_min = {des['lambda_min']:.4g}, λ_max = "
        f"{des['lambda_max']:.4g}, {des['negative']} negative eigenvalue(s), step t = "
        f"{des['step']:.3g}, R {des['loss_before']:.6g} → {des['loss_after_step']:.6g}",
    ]
    if rep.branch is not None:
        lines.append(f"nearest branch point: {rep.branch.summary()}")
    if rep.escape is not None:
        lines += [f"escape: {line.removeprefix('- ')}"
                  for line in rep.escape.summary().splitlines()]
    lines += [f"warning: {w['text']}" for w in cp["warnings"]]
    lines += [f"note: {n['text']}" for n in d["notes"]]
    return lines


def _training_lines(monitor: PlateauMonitor | None) -> list[str]:
    if monitor is None:
        return []
    h = monitor.history
    if not len(h["step"]):
        return []
    lines = ["## Training", "",
             f"* steps observed: {int(h['step'][-1])}; R from {h['loss'][0]:.4g} to "
             f"{h['loss'][-1]:.3g}; plateaus found by the monitor: {len(monitor.plateaus)}"]
    for i, p in enumerate(monitor.plateaus, 1):
        clusters = [list(g) for g in p.clusters if len(g) > 1]
        lines.append(f"* plateau {i}: steps {p.start}–{p.end}, R = {p.loss:.4g}, verdict: "
                     f"{p.verdict.value}; effective width {p.width}; clusters at the refined "
                     f"point {clusters or 'none'}; null neurons "
                     f"{[list(g) for g in p.null_neurons] or 'none'}")
    return [*lines, ""]


def _markdown(rep: Report, figures: dict[str, str], monitor: PlateauMonitor | None = None,
              models: dict[str, str] | None = None) -> str:
    d = rep.to_dict()
    lines = [
        "# saddlemap diagnosis", "",
        f"{d['model']['source']}: width {d['model']['width']}, d = {d['model']['input_dim']}, "
        f"K = {d['model']['output_dim']}, {d['model']['activation']}, "
        f"{d['data']['samples']} samples, {d['data']['loss']} loss.", "",
        "## Three answers", "",
        *[f"{i}. {text}" for i, text in enumerate(answers(rep), 1)], "",
    ]
    if models:
        lines += [f"Models written: {', '.join(Path(p).name for p in models.values())}.", ""]
    lines += _training_lines(monitor)
    lines += ["## In words", "", *rep.summary().splitlines(), "",
              "## Evidence", "", *[f"* {e}" for e in _evidence(rep)], ""]
    if figures:
        lines += ["## Figures", ""]
        for name, path in figures.items():
            lines += [f"![{name}]({Path(path).name})", "", f"*{CAPTIONS.get(name, name)}*", ""]
    return "\n".join(lines) + "\n"


def _inline(text: str) -> str:
    """Escape HTML, then **bold** and *emphasis* as tags."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)\*(?!\w)", r"<em>\1</em>", out)


def _html(markdown: str, figures: dict[str, str]) -> str:
    body: list[str] = []
    open_list, section = "", ""
    for line in markdown.splitlines():
        kind = "ol" if re.match(r"\d+\. ", line) else "ul" if line.startswith("* ") else ""
        if open_list and kind != open_list:
            body.append(f"</{open_list}>")
            open_list = ""
        if kind and not open_list:
            answers = kind == "ol" and section == "Three answers"
            body.append(f'<{kind}{" class=answers" if answers else ""}>')
            open_list = kind
        if kind:
            body.append(f"<li>{_inline(line.split(' ', 1)[1])}</li>")
        elif line.startswith("!["):
            name = line[2 : line.index("]")]
            data = base64.b64encode(Path(figures[name]).read_bytes()).decode()
            body.append(f'<figure id="fig-{name}"><img alt="{name.replace("_", " ")}" '
                        f'src="data:image/png;base64,{data}"><figcaption>'
                        f"{html.escape(CAPTIONS.get(name, name))}</figcaption></figure>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            title = section = line[3:]
            anchor = title.lower().replace(" ", "-")
            body.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')
        elif line.startswith("*") and line.endswith("*") and not line.startswith("**"):
            continue  # a figure caption: the figure carries it
        elif line:
            body.append(f"<p>{_inline(line)}</p>")
    if open_list:
        body.append(f"</{open_list}>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;"
             "line-height:1.45}img{max-width:100%}figure{margin:1.5em 0}"
             "figcaption{color:#444;font-size:0.9em}ol.answers li{margin:0.5em 0}")
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


def save_report(rep: Report, folder: str, *, monitor: PlateauMonitor | None = None,
                history: History | None = None) -> dict[str, str]:
    """Write report.json, report.md, report.html, the figure PNGs and the models.

    The pages open with the three answers (minimal width, the parameters that keep the
    output, the way down), each one sentence with its number, then the evidence with every
    value labelled, then the figures.  The models: ``compressed.*`` (the smaller model
    chosen within the loss budget, in the model's own type) and ``improved.npz`` (the model
    after the negative-curvature step, when it lowered the loss).  With a ``monitor`` (or a
    training ``history``) the report adds the training curve, plateaus shaded and labelled
    with their verdicts.  Returns the paths by name.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    models = _models(rep, out)
    figures = _figures(rep, out, monitor, history)
    markdown = _markdown(rep, figures, monitor, models)
    paths = {"json": out / "report.json", "markdown": out / "report.md",
             "html": out / "report.html"}
    paths["json"].write_text(json.dumps(rep.to_dict(), indent=2) + "\n")
    paths["markdown"].write_text(markdown)
    paths["html"].write_text(_html(markdown, figures))
    return {**{k: str(v) for k, v in paths.items()}, **figures, **models}
