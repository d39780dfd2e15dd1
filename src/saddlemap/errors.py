"""Exceptions raised by saddlemap.

Every error a user can cause derives from :class:`SaddlemapError` and names the problem in
its message, so that the command line can print it as one line.
"""

from __future__ import annotations

__all__ = [
    "ActivationError",
    "DataError",
    "LossError",
    "ModelError",
    "SaddlemapError",
]


class SaddlemapError(Exception):
    """Base class of every error saddlemap raises for bad input."""


class DataError(SaddlemapError, ValueError):
    """Data that cannot be used: NaN or Inf, wrong shape, empty, wrong dtype."""


class ActivationError(SaddlemapError, ValueError):
    """An unknown activation name or an activation that cannot be evaluated."""


class LossError(SaddlemapError, ValueError):
    """An unknown loss name or targets that do not fit the loss."""


class ModelError(SaddlemapError, ValueError):
    """A model that is not a two-layer network, or parameters of inconsistent shapes."""
