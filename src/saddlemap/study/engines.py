"""Engines: run many :class:`~saddlemap.study.config.RunSpec` and yield outcomes as they end.

Every engine maps :func:`~saddlemap.study.execution.execute` over the specs and yields each
:class:`~saddlemap.study.execution.Outcome` as soon as it arrives (in completion order); the
caller, in the parent process, writes it to the store.  Workers run one torch thread each.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol

import torch

from .config import ConfigError, RunSpec
from .execution import Outcome, execute

__all__ = ["Engine", "ProcessEngine", "RayEngine", "SerialEngine", "make_engine"]


class Engine(Protocol):
    """Something that runs specs and yields their outcomes as they finish."""

    def map(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]:
        """Run ``specs``; yield one :class:`Outcome` per spec, in completion order."""
        ...


def _init_worker() -> None:
    """Process-pool initializer: one torch thread per worker."""
    torch.set_num_threads(1)


class SerialEngine:
    """Run the specs one after another in this process (for tests and debugging)."""

    def map(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]:
        """Run ``specs`` in order; yield each outcome."""
        for spec in specs:
            yield execute(spec)


class ProcessEngine:
    """Run the specs on a pool of ``spawn``-ed worker processes.

    Args:
        workers: number of worker processes (default: all cores).
    """

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers: must be ≥ 1, got {workers}")
        self.workers = workers or os.cpu_count() or 1

    def map(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]:
        """Run ``specs`` on the pool; yield each outcome as it completes."""
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, max(len(specs), 1)),
            mp_context=ctx,
            initializer=_init_worker,
        )
        try:
            futures = [pool.submit(execute, spec) for spec in specs]
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _ray_execute(spec: RunSpec) -> Outcome:
    """Ray task body: one torch thread, then :func:`execute`."""
    _init_worker()
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

    def map(self, specs: Sequence[RunSpec]) -> Iterator[Outcome]:
        """Submit ``specs`` as Ray tasks; yield each outcome as it completes."""
        ray = self._ray
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=1)(_ray_execute)
        waiting = [task.remote(spec) for spec in specs]
        while waiting:
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
