"""The project's error types.

Every error a user can cause (a wrong name, a missing folder, a bad checkpoint) is an
``EdgeResNetError``: its message names what was received, what was expected and what to do.
The CLI prints it as one line and exits with code 1; anything else is a bug.
"""

from __future__ import annotations


class EdgeResNetError(Exception):
    """Base class for user-facing errors."""


class ConfigError(EdgeResNetError):
    """An option or combination of options that cannot work."""


class ModelError(EdgeResNetError):
    """An unknown architecture or weights that do not fit it."""


class CheckpointError(EdgeResNetError):
    """A checkpoint file that is missing, truncated, unsafe or incompatible."""


class DataError(EdgeResNetError):
    """A dataset that is missing, empty or laid out wrongly."""
