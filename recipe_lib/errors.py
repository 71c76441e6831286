"""User-facing errors.

A :class:`RecipeError` is a mistake the user can fix (a missing file, a bad key, a malformed label). The CLI prints it
as one line, ``error: <message>`` plus an optional ``hint: <fix>``, and exits with status 2 instead of a traceback.
"""

from __future__ import annotations


class RecipeError(Exception):
    """An error caused by the user's input, with an actionable hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class ConfigError(RecipeError):
    """A configuration file or mapping has an unknown, missing or malformed key."""


class ClipError(RecipeError):
    """One clip cannot be scored (its video, its name or its prompt); the run records it as a counted skip."""


class VideoError(ClipError):
    """A video file is missing, empty, truncated or not a video."""


class DataError(RecipeError):
    """A dataset, label sheet or table is malformed."""
