"""User-facing errors.

Every mistake a user can make (bad file, bad config value, bad text) raises a subclass of
:class:`FRSError` whose message names the problem and, where there is one, the file and line.
The command line prints these as ``error: <message>`` without a traceback.
"""

from __future__ import annotations


class FRSError(Exception):
    """Base class of all errors caused by user input or environment, not by a bug."""


class DataError(FRSError):
    """A dataset file or name cannot be read: missing file, wrong columns, bad label, empty row."""


class InputTextError(FRSError):
    """A text to classify is unusable: empty, whitespace-only, too long for the model."""


class ConfigError(FRSError):
    """A setting is out of range or unknown."""


class CheckpointError(FRSError):
    """A checkpoint folder is missing, incomplete or was written by an incompatible version."""
