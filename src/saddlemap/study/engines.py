"""Engines: run many :class:`~saddlemap.study.config.RunSpec` and yield outcomes as they end.

Every engine maps :func:`~saddlemap.study.execution.execute` over the specs and yields each
:class:`~saddlemap.study.execution.Outcome` as soon as it arrives (in completion order); the
caller, in the parent process, writes it to the store.  The specs are drawn lazily, one per
free worker, so that a caller can claim each run just before it starts.  Every run uses one
torch thread on every engine (the serial engine restores the caller's setting after each
run), so results do not depend on the engine or the number of cores.

Pool workers die with the process that started them: on Linux they ask the kernel for
SIGKILL when their parent dies (``prctl(PR_SET_PDEATHSIG)``), and on every platform a
watchdog thread ends a worker whose parent process id changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol

import torch

from .config import ConfigError, RunSpec
from .execution import Outcome, execute

__all__ = [
    "Engine",
    "ProcessEngine",
    "RayEngine",
    "SerialEngine",
    "check_workers",
    "make_engine",
    "one_torch_thread",
]

#: Seconds between two looks of a worker's watchdog at its parent process id.
WATCH_INTERVAL = 0.25
_PR_SET_PDEATHSIG = 1


class Engine(Protocol):
    """Something that runs specs and yields their outcomes as they finish."""

    def map(self, specs: Iterable[RunSpec]) -> Iterator[Outcome]:
        """Run ``specs``; yield one :class:`Outcome` per spec, in completion order."""
        ...


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block on one torch thread, then restore the caller's thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _set_parent_death_signal() -> None:
    """Linux: have the kernel send this process SIGKILL when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the watchdog alone remains
        pass


def _watch_parent(parent: int) -> None:
    """Watchdog thread body: end the process as soon as its parent is gone."""
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    os._exit(1)


def _init_pool_worker(parent: int) -> None:
    """Process-pool initializer: one torch thread, and die with the parent ``parent``."""
    torch.set_num_threads(1)
    _set_parent_death_signal()
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="saddlemap-parent-watchdog").start()


def check_workers(workers: int | None) -> int:
    """The number of pool workers: ``workers``, or all cores when None.

    Raises:
        ConfigError: ``workers`` is not an integer from 1 to four times the cores (at
            least 8).
    """
    cores = os.cpu_count() or 1
    if workers is None:
        return cores
    largest = max(8, 4 * cores)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= largest:
        raise ConfigError(f"workers: must be an integer from 1 to {largest}, got {workers!r}")
    return workers


class SerialEngine:
    """Run the specs one after another in this process, on one torch thread."""

    def map(self, specs: Iterable[RunSpec]) -> Iterator[Outcome]:
        """Run ``specs`` in order; yield each outcome."""
        for spec in specs:
            with one_torch_thread():
                outcome = execute(spec)
            yield outcome


def _submit(pool: ProcessPoolExecutor, specs: Iterator[RunSpec], running: set[Future[Outcome]],
            slots: int) -> None:
    """Draw specs from ``specs`` until ``slots`` runs are in flight or none is left."""
    while len(running) < slots:
        spec = next(specs, None)
        if spec is None:
            return
        running.add(pool.submit(execute, spec))


class ProcessEngine:
    """Run the specs on a pool of ``spawn``-ed worker processes that die with this one.

    Args:
        workers: number of worker processes (default: all cores; at most four times the
            cores).

    Raises:
        ConfigError: ``workers`` out of range.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = check_workers(workers)

    def map(self, specs: Iterable[RunSpec]) -> Iterator[Outcome]:
        """Run ``specs`` on the pool, drawing one per free worker; yield each outcome."""
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_pool_worker,
            initargs=(os.getpid(),),
        )
        source = iter(specs)
        running: set[Future[Outcome]] = set()
        try:
            _submit(pool, source, running, self.workers)
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                _submit(pool, source, running, self.workers)
                for fut in done:
                    yield fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _ray_execute(spec: RunSpec) -> Outcome:
    """Ray task body: one torch thread, then :func:`execute`."""
    torch.set_num_threads(1)
    return execute(spec)


class RayEngine:
    """Run the specs as Ray tasks (one CPU each) on a local instance or a cluster.

    Args:
        address: the cluster address passed to ``ray.init`` (default: start or join a
            local instance).  An already initialised Ray is used as is.

    Raises:
        ImportError: Ray is not installed.
    """

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError(
                "the Ray engine needs Ray: pip install 'saddlemap[ray]'"
            ) from None
        self._ray: Any = ray
        self.address = address

    def map(self, specs: Iterable[RunSpec]) -> Iterator[Outcome]:
        """Submit ``specs`` as Ray tasks, one per cluster CPU at a time; yield each outcome."""
        ray = self._ray
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=1)(_ray_execute)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        source = iter(specs)
        waiting: list[Any] = []
        while True:
            while len(waiting) < slots and (spec := next(source, None)) is not None:
                waiting.append(task.remote(spec))
            if not waiting:
                return
            done, waiting = ray.wait(waiting, num_returns=1)
            for ref in done:
                yield ray.get(ref)


def make_engine(name: str, *, workers: int | None = None, address: str | None = None) -> Engine:
    """The engine called ``name``: ``"process"``, ``"serial"`` or ``"ray"``."""
    if name == "process":
        return ProcessEngine(workers)
    if name == "serial":
        return SerialEngine()
    if name == "ray":
        return RayEngine(address)
    raise ConfigError(f"engine: unknown engine {name!r}; choose from process, serial, ray")
