"""The ``saddlemap`` command: a thin layer over the library.

Every subcommand reads files, calls the library, writes JSON (and a report folder where it
makes one) and prints a short summary.  Mistakes in the input end with one line on stderr and
exit code 2.  Each subcommand imports the library modules it needs inside its own function
(the one exception to top-level imports in the package): torch and matplotlib load only
when a command needs them, so ``saddlemap --version``, ``--help`` and every argument error
answer at once.

Every option is checked while the arguments are parsed, before any file is read: numbers
for their range (no NaN or infinity; counts are integers ≥ 0, widths ≥ 1), output folders
for not being files, output files for a folder to go into and a suffix saddlemap writes.
Model files are never unpickled without ``--trust-pickle``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._version import __version__
from .errors import SaddlemapError

EXAMPLES = """examples:
  saddlemap demo --out saddlemap-demo
  saddlemap diagnose model.safetensors data.npz --out report/
  saddlemap diagnose module.pt data.npz --trust-pickle   # a pickled module you trust
  saddlemap diagnose mlp.skops data.csv --target y --json -
  saddlemap compress model.safetensors data.npz -o small.safetensors
  saddlemap branches critical.npz data.npz --width 4
  saddlemap study run study.toml --db study.sqlite --workers 2
  saddlemap study summary study.sqlite --csv results/
"""


#: The help of ``--trust-pickle``.
TRUST_PICKLE_HELP = ("unpickle the model file where its format needs it (a whole torch module "
                     "in .pt/.pth, a .pkl/.pickle/.joblib scikit-learn model, other types in "
                     ".skops): unpickling runs code from the file; only for files you trust")

#: The suffixes ``compress -o`` writes: scikit-learn's, then save_model's.
ESTIMATOR_SUFFIXES = (".skops", ".pkl", ".pickle", ".joblib")
NET_SUFFIXES = (".pt", ".pth", ".npz", ".safetensors")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``saddlemap diagnose: error: …``."""

    def error(self, message: str) -> NoReturn:
        """Print the error in one line with where to read more, and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------- option value checks
def _int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An option type: an integer in [low, high]."""
    span = f"an integer ≥ {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {span}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {span}, got {value}")
        return value

    return parse


def _float_in(low: float, below: float = math.inf) -> Callable[[str], float]:
    """An option type: a finite number in [low, below) (no NaN, no infinity)."""
    span = f"a finite number ≥ {low:g}" if below == math.inf else (
        f"a finite number in [{low:g}, {below:g})")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {span}, got {text!r}") from None
        if not (math.isfinite(value) and low <= value < below):
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    return parse


def _folder(text: str) -> str:
    """An option type: a folder to write into; it may not exist yet, but is not a file."""
    if not text:
        raise argparse.ArgumentTypeError("an empty folder name")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return text


def _file(text: str) -> str:
    """An option type: a file to write, in an existing folder, not a folder itself."""
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    if not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: the folder {path.parent} does not exist")
    return text


def _json_file(text: str) -> str:
    """An option type: ``-`` (stdout) or a file to write, not a folder.

    Its folder is checked with the other options (:func:`_check_json_folder`): it may be
    the ``--out`` folder the command creates.
    """
    if text != "-" and (not text or Path(text).is_dir()):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    return text


def _check_json_folder(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fail at parsing unless ``--json``'s folder exists or is the ``--out`` folder to be made."""
    where = getattr(args, "json", None)
    if where is None or where == "-":
        return
    folder = Path(where).resolve().parent
    out = getattr(args, "out", None)
    if folder.is_dir() or (out is not None and folder == Path(out).resolve()):
        return
    prog = f"{parser.prog} {args.command}"
    parser.exit(2, f"{prog}: error: argument --json: {where}: the folder {Path(where).parent} "
                f"does not exist (see {prog} --help)\n")


def _model_file(text: str) -> str:
    """An option type: a model file to write, with a suffix saddlemap writes."""
    suffix = Path(text).suffix.lower()
    if suffix not in NET_SUFFIXES + ESTIMATOR_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text}: unsupported suffix {suffix!r}; expected one of {', '.join(NET_SUFFIXES)} "
            f"(for scikit-learn models also {', '.join(ESTIMATOR_SUFFIXES)})"
        )
    return _file(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="saddlemap", description="Map the loss landscape of two-layer networks: "
        "critical points, minimal width, saddle branches and escapes.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"saddlemap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="train a soft committee machine through its plateau, "
                          "then diagnose, escape and compress the network on the plateau")
    demo.add_argument("--out", type=_folder, default="saddlemap-demo", help="report folder")
    demo.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0,
                      help="seed of the demo problem")
    demo.add_argument("--json", type=_json_file,
                      help="also write the JSON report here ('-' for stdout)")

    diag = sub.add_parser("diagnose", help="is a trained model at a saddle, and can it be "
                          "smaller?")
    diag.add_argument("model", help="model file (.pt, .pth, .safetensors, .npz, .skops, .pkl)")
    diag.add_argument("data", help="data file (.npz with X and y, X.npy, or .csv)")
    _data_options(diag)
    diag.add_argument("--out", type=_folder,
                      help="write a report folder (JSON, Markdown, HTML, figures)")
    diag.add_argument("--json", type=_json_file,
                      help="write the JSON report here ('-' for stdout)")
    diag.add_argument("--no-refine", action="store_true",
                      help="do not refine a non-critical model (refinement is bounded)")
    diag.add_argument("--escape-steps", type=_int_in(0, 10**7), default=1000,
                      help="training steps after an escape (0: do not escape)")
    _budget_options(diag)
    diag.add_argument("--weight-decay", type=_float_in(0.0), metavar="λ",
                      help="analyse R + (λ/2)‖θ‖² over all parameters, as torch's weight_decay "
                      "(scikit-learn's alpha is read from the model)")
    diag.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    _tolerance_options(diag)

    comp = sub.add_parser("compress", help="a smaller model: within a loss budget on DATA, or "
                          "exactly the same outputs (--tol, or no DATA)")
    comp.add_argument("model")
    comp.add_argument("data", nargs="?", help="data for the loss budget")
    comp.add_argument("-o", "--output", required=True, type=_model_file,
                      help="where to write the model (.pt, .pth, .npz, .safetensors; for "
                      "scikit-learn models .skops, or a pickle if you ask for .pkl)")
    comp.add_argument("--tol", type=_float_in(0.0), help="exact reduction with this "
                      "equal-weight tolerance (default √ε·scale) instead of the loss budget")
    _budget_options(comp)
    comp.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    _data_options(comp)

    br = sub.add_parser("branches", help="the critical set of a saved critical point at "
                        "width m")
    br.add_argument("model")
    br.add_argument("data")
    br.add_argument("--width", type=_int_in(1), required=True, help="m, the width to map")
    br.add_argument("--json", type=_json_file,
                    help="write the branches as JSON here ('-' for stdout)")
    _data_options(br)
    _tolerance_options(br)
    study = sub.add_parser("study", help="teacher–student studies: how often training stalls "
                           "at saddles of narrower networks")
    study_sub = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    run = study_sub.add_parser("run", help="run (or resume) the runs of a TOML/JSON config")
    run.add_argument("config")
    run.add_argument("--db", default="study.sqlite", help="SQLite results database")
    run.add_argument("--engine", choices=("process", "serial", "ray"), default="process")
    run.add_argument("--workers", type=_int_in(1), help="processes (default: all cores)")
    run.add_argument("--address", help="Ray cluster address (with --engine ray)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--max-runs", type=_int_in(1),
                     help="allow more runs than 100,000 (or than the config's max_runs)")
    summ = study_sub.add_parser("summary", help="the table of a study's results")
    summ.add_argument("db")
    summ.add_argument("--csv", type=_folder,
                      help="export runs.csv and plateaus.csv into this folder")
    summ.add_argument("--parquet", type=_folder, help="export Parquet files into this folder")
    summ.add_argument("--plot", type=_file, help="write the summary figure (PNG) here")
    summ.add_argument("--by", default="activation,ratio",
                      help="comma-separated grouping keys: any run field, ratio (m/r*), "
                      "init, optimizer, ... (default: activation,ratio; '' for one group)")
    show = study_sub.add_parser("show", help="one run: its spec, rules, plateaus and "
                                "annotated loss curve")
    show.add_argument("db")
    show.add_argument("run", help="the run id, or a prefix of exactly one run's id")
    show.add_argument("--plot", type=_file,
                      help="write the loss curve (PNG) here (default: RUN_ID.png here)")
    export = study_sub.add_parser("export", help="the stored points of every plateau "
                                  "(snapshot and refined parameters) as one .npz")
    export.add_argument("db")
    export.add_argument("out", type=_npz_file, help="the .npz file to write")
    export.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def _npz_file(text: str) -> str:
    """An option type: a ``.npz`` file to write."""
    if Path(text).suffix.lower() != ".npz":
        raise argparse.ArgumentTypeError(f"{text}: expected a .npz file name")
    return _file(text)


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--y", dest="y_path", help="targets file when DATA is an X .npy")
    p.add_argument("--target", help="CSV column holding the targets (default: the last)")
    p.add_argument("--activation", help="activation, for files that do not record one (not "
                   "for scikit-learn models or whole torch modules, which record theirs)")
    p.add_argument("--loss", help="mse, cross_entropy or bce (default: the model's)")
    p.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)


#: The user-facing tolerances: (option, Tolerances field, help).
TOLERANCE_OPTIONS = (
    ("--grad-tol", "grad", "‖∇R‖ at or below this is critical (default 1e-10, raised to the "
     "rounding floor of ∇R)"),
    ("--zero-tol", "zero_eig", "an eigenvalue is zero below this × max|λ| (default √ε)"),
    ("--merge-tol", "merge", "neurons coincide within this × the weight scale (default √ε)"),
    ("--zero-set-tol", "zero_set", "u is on Z_f when ‖φ(u)‖ is below this × its terms' size "
     "(default 1e-9)"),
)


def _budget_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-loss-increase", type=_float_in(0.0), default=0.01, metavar="F",
                   help="loss budget of the smaller model, relative (default 0.01 = 1 %%)")
    p.add_argument("--finetune-steps", type=_int_in(0, 10**7), default=0, metavar="N",
                   help="fine-tune candidate widths N L-BFGS steps before judging them")


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.quiet else None  # None: only when stderr is a terminal


def _tolerance_options(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("tolerances (written into every report)")
    for option, field, text in TOLERANCE_OPTIONS:
        group.add_argument(option, dest=f"tol_{field}", type=_float_in(0.0, 1.0), metavar="X",
                           help=text)


def _tolerances(args: argparse.Namespace) -> Any:
    from .tolerances import Tolerances

    given = {f: getattr(args, f"tol_{f}") for _, f, _ in TOLERANCE_OPTIONS}
    return Tolerances(**{f: v for f, v in given.items() if v is not None})


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from .errors import ModelError
    from .io import load_data, load_model

    try:
        loaded = load_model(args.model, activation=args.activation,
                            trust_pickle=args.trust_pickle)
    except ModelError as exc:  # the library says activation=, the command line --activation
        text = str(exc).replace("pass activation=", "pass --activation NAME")
        if text == str(exc):
            raise
        raise ModelError(text) from exc
    if getattr(args, "data", None) is None:
        return loaded, None
    data = load_data(args.data, args.y_path, target=args.target, loss=args.loss or loaded.loss)
    return loaded, data


def _write_json(payload: dict[str, Any], where: str | None) -> None:
    if where is None:
        return
    text = json.dumps(payload, indent=2)
    if where == "-":
        print(text)
    else:
        Path(where).write_text(text + "\n")


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from .diagnosis import diagnose

    tolerances = _tolerances(args)  # checked before any file is read
    loaded, data = _load(args)
    rep = diagnose(loaded, data, refine=not args.no_refine, escape_steps=args.escape_steps,
                   tolerances=tolerances, max_loss_increase=args.max_loss_increase,
                   finetune_steps=args.finetune_steps, weight_decay=args.weight_decay,
                   progress=_progress(args))
    _finish(rep, args.out, args.json)
    return 0


def _finish(rep: Any, out: str | None, json_path: str | None, monitor: Any = None) -> None:
    if json_path != "-":
        print(rep.summary())
    if out:
        from .report import save_report

        paths = save_report(rep, out, monitor=monitor)
        if json_path != "-":
            print(f"report: {paths['html']}")
    _write_json(rep.to_dict(), json_path)


def _cmd_compress(args: argparse.Namespace) -> int:
    from .diagnosis import compress
    from .errors import OptionError
    from .verdicts import ModelKind

    loaded, data = _load(args)
    if args.output.lower().endswith(".skops") and loaded.kind is not ModelKind.SKLEARN:
        raise OptionError(f"{args.output}: .skops is for scikit-learn models; this is a "
                          f"{loaded.kind.value} model (write .pt, .npz or .safetensors)")
    out = compress(loaded, data, tol=args.tol, max_loss_increase=args.max_loss_increase,
                   finetune_steps=args.finetune_steps, progress=_progress(args))
    _save_compressed(out, loaded, args.output)
    loss = "" if out.loss_after is None else (
        f"; R {out.loss_before:.6g} → {out.loss_after:.6g}")
    print(f"width {loaded.net.width} → {out.width}; parameters {out.params_before} → "
          f"{out.params_after}{loss}; max output change {out.max_output_change:.1e}; "
          f"written to {args.output}")
    return 0


def _save_compressed(out: Any, loaded: Any, path: str) -> None:
    """The smaller model as the suffix says, in the original dtype.

    ``.skops`` (scikit-learn) and the pickle suffixes, which only a user's ``-o`` asks for,
    write the model in its own type; the others write the network with ``save_model``.
    """
    from .io import save_estimator, save_model

    if path.lower().endswith(ESTIMATOR_SUFFIXES):
        save_estimator(out.model, path)
    else:
        save_model(out.net.to(loaded.dtype), path)


def _cmd_branches(args: argparse.Namespace) -> int:
    from .critical_set import CriticalSet
    from .saddles import saddle_branches

    tolerances = _tolerances(args)
    loaded, data = _load(args)
    cs = CriticalSet(loaded.net, data, tolerances=tolerances)
    cs.branches(args.width)  # refuses a width out of range before any saddle work
    rows = []
    for sb in saddle_branches(cs, args.width):
        b = sb.branch
        rows.append({"sizes": list(b.sizes), "nulls": b.nulls, "dimension": b.dimension,
                     "patterns": b.patterns, "sample_independent": b.sample_independent,
                     "verdict": sb.verdict.value, "regions": sb.regions})
    if args.json != "-":
        print(f"Q_{args.width}(f): r = {cs.r}, {cs.count_branches(args.width)} labelled "
              f"patterns, dimension bounds {cs.dimension_bounds(args.width)}")
        for row in rows:
            print(f"  sizes {row['sizes']} + {row['nulls']} null: dim {row['dimension']}, "
                  f"{row['patterns']} patterns, {row['verdict']} ({row['regions']})")
    _write_json({"r": cs.r, "width": args.width, "branches": rows}, args.json)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    demo = run_demo(seed=args.seed)
    if args.json != "-":
        p = demo.plateau
        print(f"Training stalled from step {p.start} to {p.end} at R = {p.loss:.3g} "
              f"({p.verdict.value}); the network at step {p.snapshot_step} is diagnosed.")
    _finish(demo.report, args.out, args.json, monitor=demo.monitor)
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    if args.study_command == "show":
        return _study_show(args)
    if args.study_command == "export":
        from .study import export_points

        plateaus, points = export_points(args.db, args.out, force=args.force)
        print(f"{plateaus} plateau{'' if plateaus == 1 else 's'}, {points} "
              f"point{'' if points == 1 else 's'} written to {args.out}")
        return 0
    from .study import export_csv, export_parquet, plot_summary, run_study, summarize

    if args.study_command == "run":
        report = run_study(args.config, args.db, engine=args.engine, workers=args.workers,
                           address=args.address, progress=not args.quiet,
                           max_runs=args.max_runs)
        others = f", {report.by_others} left to other runners" if report.by_others else ""
        print(f"{report.total} runs: {report.already_done} already done, {report.run_now} run "
              f"now, {report.failed} failed{others}; results in {args.db}")
        return 1 if report.failed else 0
    # an unknown key, a missing or damaged database: one line (OptionError, StoreError)
    summary = summarize(args.db, by=args.by)
    print(summary.to_markdown())
    if args.csv:
        export_csv(args.db, args.csv)
    if args.parquet:
        export_parquet(args.db, args.parquet)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        ax = plot_summary(summary)
        ax.figure.savefig(args.plot, dpi=110, bbox_inches="tight")
    return 0


def _study_show(args: argparse.Namespace) -> int:
    from .study import format_run, load_run, plot_run

    view = load_run(args.db, args.run)  # no such run, or an ambiguous prefix: one line
    print(format_run(view))
    import matplotlib

    matplotlib.use("Agg")
    target = args.plot or f"{view.run_id}.png"
    ax = plot_run(view)
    ax.figure.savefig(target, dpi=110, bbox_inches="tight")
    print(f"plot: {target}")
    return 0


COMMANDS = {"diagnose": _cmd_diagnose, "compress": _cmd_compress, "branches": _cmd_branches,
            "demo": _cmd_demo, "study": _cmd_study}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    _check_json_folder(parser, args)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except (SaddlemapError, ValueError, OSError, ImportError, RuntimeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"saddlemap: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
