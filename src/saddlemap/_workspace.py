"""Reusable scratch buffers for the n × m temporaries of the closed forms (private).

A fresh n × m block per call is cheap to compute with but not always cheap to get: on
CPU, glibc hands blocks above its mmap threshold back to the kernel when they are freed,
so the next call page-faults the whole block in again, and on virtual machines that can
cost more than the arithmetic on it.  Each thread therefore keeps one flat buffer per name
and hands out views of it.

Rules that keep this safe: a name belongs to one function at a time, and nothing that
leaves a public function is a view of a scratch buffer (results are always fresh tensors).
Buffers above :data:`MAX_BYTES`, and any off the CPU (the CUDA allocator already caches),
are plain allocations.

>>> import torch
>>> like = torch.zeros(1, dtype=torch.float64)
>>> a = scratch("doctest", (3, 2), like)
>>> b = scratch("doctest", (2, 2), like)
>>> a.data_ptr() == b.data_ptr(), tuple(b.shape)
(True, (2, 2))
>>> release()
"""

from __future__ import annotations

import math
import threading

import torch

__all__ = ["MAX_BYTES", "release", "scratch"]

#: Largest buffer kept between calls (16 MiB, n·m = 2·10⁶ in float64).  About seven names
#: are in use, so a thread keeps at most about 110 MiB, and far less at usual sizes.
MAX_BYTES = 16 * 2**20

_LOCAL = threading.local()


class _Pool:
    """One thread's buffers: a flat tensor per (name, dtype) and the views handed out."""

    def __init__(self) -> None:
        self.flat: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self.views: dict[tuple[str, tuple[int, ...], torch.dtype], torch.Tensor] = {}

    def view(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        numel = math.prod(shape)
        buf = self.flat.get((name, dtype))
        if buf is None or buf.numel() < numel:
            buf = self.flat[(name, dtype)] = torch.empty(numel, dtype=dtype)
            # Views of the old buffer would keep it alive: forget them.
            self.views = {k: v for k, v in self.views.items() if k[0] != name or k[2] != dtype}
        if len(self.views) > 256:  # many shapes (varying batch sizes): start afresh
            self.views.clear()
        view = self.views[(name, shape, dtype)] = buf[:numel].view(shape)
        return view


def _pool() -> _Pool:
    pool: _Pool | None = getattr(_LOCAL, "pool", None)
    if pool is None:
        pool = _LOCAL.pool = _Pool()
    return pool


def scratch(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` on ``like``'s dtype and device, reused by name."""
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    pool = _pool()
    view = pool.views.get((name, shape, like.dtype))
    if view is not None:
        return view
    if math.prod(shape) * like.element_size() > MAX_BYTES:
        return torch.empty(shape, dtype=like.dtype)
    return pool.view(name, shape, like.dtype)


def release() -> None:
    """Free this thread's scratch buffers."""
    _LOCAL.pool = _Pool()
