"""Exceptions raised by saddlemap.

Every error a user can cause derives from :class:`SaddlemapError` and names the problem in
its message, so that the command line can print it as one line.
"""

from __future__ import annotations

__all__ = [
    "ActivationError",
    "CriticalPointError",
    "DataError",
    "LossError",
    "ModelError",
    "OptionError",
    "SaddlemapError",
    "StoreError",
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


class OptionError(SaddlemapError, ValueError):
    """An option out of its range: NaN, negative, absurdly large, or an unknown choice."""


class CriticalPointError(SaddlemapError, ValueError):
    """A network that must be a critical point (of the data) and is not."""


class StoreError(SaddlemapError):
    """A study database that cannot be used: not SQLite, damaged, or of another schema."""
