"""The benchmark harness every bench script uses: session, machine, timer, results.

* :func:`session`: one run with torch's threads and every BLAS / OpenMP pool fixed to one
  (threadpoolctl), the load average (``uptime``) checked before and after, and the machine
  described at the end; all three go into the results.
* :func:`machine`: CPU, cores, memory, OS, library versions, BLAS, threads, threadpools,
  peers' versions and the commit measured.
* The timer: :func:`measure` (one warm-up, whose peak resident memory is sampled, then the
  median and interquartile range of several repeats; fast calls are looped, a call longer
  than the budget is run once), :func:`timed` / :func:`timed_peer` (the same for the
  scripts whose calls return a dict of results), :func:`interleaved` and :func:`paired`
  (sides run in alternating blocks of calls, so a drift of the machine's speed hits both).
* Results: :func:`write_results` (``results/NAME.json`` and ``NAME.md``),
  :func:`method_table`, :func:`load_summary`.

The peers themselves are in ``_peers.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch
from _peers import peer_versions

import saddlemap as sm

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- threads
@contextlib.contextmanager
def single_threaded() -> Iterator[str]:
    """Fix torch's threads and every BLAS / OpenMP threadpool to one; yield what was done."""
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only settable before any inter-op work
        torch.set_num_interop_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield "torch 1 thread; threadpoolctl not installed, BLAS threads not fixed"
        return
    with threadpool_limits(limits=1):
        yield "torch 1 thread; every threadpool limited to 1 by threadpoolctl"


# ------------------------------------------------------------------------------ load
def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_snapshot() -> dict[str, Any]:
    """What ``uptime`` says: the time, seconds since boot and the 1, 5, 15-minute loads."""
    snap: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "usable_cores": usable_cores()}
    with contextlib.suppress(OSError, ValueError, IndexError):
        snap["uptime_s"] = float(Path("/proc/uptime").read_text().split()[0])
    try:
        snap["load_1m"], snap["load_5m"], snap["load_15m"] = (round(x, 2)
                                                             for x in os.getloadavg())
    except OSError:
        snap["load_1m"] = snap["load_5m"] = snap["load_15m"] = None
    uptime = shutil.which("uptime")
    if uptime is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            snap["uptime"] = subprocess.run([uptime], capture_output=True, text=True,
                                            timeout=10, check=True).stdout.strip()
    return snap


def _load_warning(snap: dict[str, Any], when: str) -> str | None:
    """A warning when the machine is busy: other work leaves no core free for this run.

    Before the run the 1-minute load is other work; after it, it includes this run's one
    thread.
    """
    load, cores = snap.get("load_1m"), snap["usable_cores"]
    limit = cores - 1 if when == "before" else cores
    if load is None or load <= max(limit, 0.5):
        return None
    return (f"load average {load:.2f} {when} the run on {cores} usable cores: other work "
            "was running, timings are slower and noisier than on an idle machine")


def _check_load(load: dict[str, Any], when: str) -> None:
    load[when] = snap = load_snapshot()
    warning = _load_warning(snap, when)
    if warning is not None:
        load.setdefault("warnings", []).append(warning)
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def load_summary(load: dict[str, Any] | None) -> str | None:
    """One line for the Markdown: the load averages before and after, and any warning."""
    if not load:
        return None

    def one(when: str) -> str:
        snap = load.get(when) or {}
        lam = snap.get("load_1m")
        return "—" if lam is None else f"{lam:.2f}"

    cores = (load.get("before") or {}).get("usable_cores", "?")
    line = (f"1-minute load average {one('before')} before the run, {one('after')} after, "
            f"on {cores} usable cores")
    if load.get("warnings"):
        return line + ": busy, other work was running (timings slower and noisier)"
    return line + " (no other work seen)"


@dataclass
class Session:
    """What :func:`session` records: the thread settings, the load and the machine."""

    threads: str = ""
    load: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def session() -> Iterator[Session]:
    """One benchmark run: threads fixed to one, load checked before and after.

    The machine is described at the end, still inside the thread limits (so the
    threadpools any peer loaded are listed, limited); write the results after the block.
    """
    run = Session()
    with single_threaded() as threads:
        run.threads = threads
        _check_load(run.load, "before")
        try:
            yield run
        finally:
            run.machine = machine()
            _check_load(run.load, "after")


# --------------------------------------------------------------------------- machine
def meminfo_bytes() -> float | None:
    """Total memory of the machine, from /proc/meminfo."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024
    return None


def machine() -> dict[str, Any]:
    """CPU, cores, memory, versions, BLAS, threads and peers: to stand beside every figure."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=([^,\s]+)", config)
    info: dict[str, Any] = {
        "cpu": cpu, "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round((meminfo_bytes() or 0) / 2**30, 1),
        "os": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
        "saddlemap": sm.__version__, "saddlemap_source": _source_state(),
        "torch_blas": blas.group(1) if blas else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "peers": peer_versions(),
    }
    info["threadpools"] = _threadpools()
    return info


def _source_state() -> str:
    """The commit measured, and whether the package's sources differed from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()

        dirty = git("status", "--porcelain", "--", "src")
        return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes in src/"
                                                      if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def _threadpools() -> list[dict[str, Any]] | str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return _numpy_blas()
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer",
            "architecture")  # never the file path: no machine paths in the results
    return [{k: pool.get(k) for k in keep} for pool in threadpool_info()]


def _numpy_blas() -> str:
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]  # type: ignore[func-returns-value]
        return f"threadpoolctl missing; numpy built with {deps['blas']['name']}"
    except Exception as exc:
        return f"threadpoolctl missing; numpy BLAS unknown ({type(exc).__name__})"


# ----------------------------------------------------------------------------- timer
def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    """First and third quartiles (``statistics.quantiles``); one value is its own IQR."""
    if len(xs) < 2:
        return (xs[0], xs[0]) if xs else (math.nan, math.nan)
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakRss:
    """Peak resident memory above the level at entry, sampled every millisecond."""

    def __init__(self) -> None:
        self.base = _rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._update()

    def _update(self) -> None:
        now = _rss_bytes()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)

    def __enter__(self) -> PeakRss:
        if self.base is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._update()

    @property
    def megabytes(self) -> float | None:
        if self.base is None or self.peak is None:
            return None
        return round((self.peak - self.base) / 2**20, 1)


@dataclass
class Timing:
    median: float
    times: list[float]
    calls_per_repeat: int  # 0: one cold run, the warm-up itself (it exceeded the budget)
    peak_mb: float | None
    value: Any

    @property
    def iqr(self) -> tuple[float, float]:
        return quartiles(self.times)


def measure(fn: Callable[[], Any], repeats: int, budget_s: float = math.inf) -> Timing:
    """Warm up once (sampling memory), then time up to ``repeats`` runs within the budget.

    Calls faster than 10 ms are looped so that one timed repeat lasts about 30 ms, and get at
    least 9 repeats (the machine may be shared).  A call slower than the whole budget is run
    once only: that run is the measurement (``calls_per_repeat`` is then 0).  With the
    default, unlimited budget, calls of 10 ms or more are timed exactly ``repeats`` times.
    """
    with PeakRss() as mem:
        start = time.perf_counter()
        value = fn()
        warm = time.perf_counter() - start
    if warm > budget_s:
        return Timing(warm, [warm], 0, mem.megabytes, value)
    number = 1 if warm >= 0.01 else min(1000, max(1, int(0.03 / max(warm, 1e-6))))
    repeats = repeats if warm >= 0.01 else max(repeats, 9)
    times: list[float] = []
    spent = warm
    while len(times) < repeats and (not times or spent + warm < budget_s):
        start = time.perf_counter()
        for _ in range(number):
            value = fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed / number)
        spent += elapsed
    return Timing(statistics.median(times), times, number, mem.megabytes, value)


def timed(fn: Callable[[], dict[str, Any]], repeats: int,
          budget_s: float = math.inf) -> dict[str, Any]:
    """:func:`measure` a call that returns a dict: its last dict, median, IQR and count."""
    t = measure(fn, repeats, budget_s)
    q1, q3 = t.iqr
    return {**t.value, "median_s": t.median, "repeats": len(t.times), "iqr_s": [q1, q3]}


def timed_peer(fn: Callable[[], dict[str, Any]], repeats: int,
               budget_s: float = math.inf) -> dict[str, Any]:
    """:func:`timed`, or ``{"failure": ...}`` when the peer raises: a failure is a result."""
    try:
        return timed(fn, repeats, budget_s)
    except Exception as exc:
        return {"failure": f"{type(exc).__name__}: {exc}"}


def interleaved(
    fns: Sequence[Callable[[], Any]], *, rounds: int, max_rounds: int | None = None,
    budget_s: float = 0.0, calls: int = 1, alternate: bool = True, warmup: bool = True,
) -> list[list[float]]:
    """Time ``fns`` side by side: per round, one block of ``calls`` calls of each.

    At least ``rounds`` rounds, then more while ``budget_s`` lasts, up to ``max_rounds``;
    with ``alternate`` the order flips every round.  Returns, per function, the time per
    call of each of its blocks.  A drift of the machine's speed hits all sides alike.
    """
    if warmup:
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    limit = rounds if max_rounds is None else max_rounds
    deadline = time.perf_counter() + budget_s
    i = 0
    while i < rounds or (time.perf_counter() < deadline and i < limit):
        order = range(len(fns))
        for j in (reversed(order) if alternate and i % 2 else order):
            start = time.perf_counter()
            for _ in range(calls):
                fns[j]()
            times[j].append((time.perf_counter() - start) / calls)
        i += 1
    return times


def paired(peer: Callable[[], Any], ours: Callable[[], Any], budget_s: float) -> dict[str, Any]:
    """Alternating blocks of calls; the median block ratio peer / ours, its IQR, median times.

    After a warm-up of each side, blocks last about 20 ms of peer time; 20 to 400 pairs of
    blocks, as many as ``budget_s`` allows.
    """
    peer(), ours()
    start = time.perf_counter()
    peer()
    one = time.perf_counter() - start
    calls = max(1, min(50, int(0.02 / max(one, 1e-6))))
    t_peer, t_ours = interleaved([peer, ours], rounds=20, max_rounds=400, budget_s=budget_s,
                                 calls=calls, warmup=False)
    ratios = [p / o for p, o in zip(t_peer, t_ours, strict=True)]
    q1, q3 = quartiles(ratios)
    return {"ratio": statistics.median(ratios), "ratio_q1": q1, "ratio_q3": q3,
            "peer_s": statistics.median(t_peer), "ours_s": statistics.median(t_ours),
            "blocks": len(ratios), "calls_per_block": calls}


# --------------------------------------------------------------------------- results
def method_table(
    rows: dict[str, dict[str, Any]], ours: str, header: list[str],
    cells: Callable[[dict[str, Any]], list[str]],
) -> list[str]:
    """Set each row's ``ratio_to_saddlemap`` against ``ours``, and render the Markdown table.

    Columns: method, median time, × saddlemap, then ``header`` filled by ``cells``; a failed
    row puts its message in the last column.
    """
    base = rows[ours]["median_s"]
    out = ["| method | median time (s) | × saddlemap | " + " | ".join(header) + " |",
           "|---" * (3 + len(header)) + "|"]
    for name, row in rows.items():
        if "failure" in row:
            out.append(f"| {name} | failed | |" + " |" * (len(header) - 1)
                       + f" {row['failure']} |")
            continue
        row["ratio_to_saddlemap"] = row["median_s"] / base
        out.append(f"| {name} | {row['median_s']:.3f} | {row['ratio_to_saddlemap']:.1f} | "
                   + " | ".join(cells(row)) + " |")
    return out


def write_results(
    name: str, result: dict[str, Any], lines: list[str] | str, *,
    out_dir: Path | None = None, indent: int = 2, echo: bool = True,
) -> None:
    """Write ``NAME.json`` and ``NAME.md`` (in ``results/`` unless ``out_dir``).

    ``lines`` is the Markdown, as lines or as text; ``echo`` prints it.
    """
    out_dir = RESULTS if out_dir is None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    text = lines if isinstance(lines, str) else "\n".join(lines) + "\n"
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=indent, default=float)
                                          + "\n")
    (out_dir / f"{name}.md").write_text(text)
    if echo:
        print(text, end="")


# --------------------------------------------------------------------------- problems
def narrow_critical_point(seed: int = 0) -> tuple[sm.TwoLayerNet, sm.Dataset]:
    """A width-5 critical point of a tanh teacher–student problem (d = 10, n = 1000)."""
    prob = sm.teacher_student(8, 5, d=10, n=1000, activation="tanh", seed=seed, noise=0.1)
    trained = sm.train(prob.student, prob.data, optimizer="lbfgs", steps=1000, grad_tol=1e-7)
    narrow = sm.find_critical_point(trained.net, prob.data)
    if not narrow.converged:
        raise RuntimeError("the width-5 problem did not give a critical point; change the seed")
    return narrow.net, prob.data
