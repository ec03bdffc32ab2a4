"""The one exception type users see.

Every error a user can cause (bad YAML, a missing column, an unknown label, ...) is
raised as a `TfsftError` whose message names the file, the line or row, and the field,
and says what to do. The CLI prints the message and exits non-zero without a
traceback; anything else escaping is a bug.
"""

from __future__ import annotations


class TfsftError(Exception):
    """A problem with the user's config, data or files, with a message fit to print."""


class ConfigError(TfsftError):
    """The config file or an override is invalid."""


class DataError(TfsftError):
    """A data file is missing, unreadable or malformed."""


def where(path: object, line: int | None = None, field: str | None = None) -> str:
    """Formats a location prefix such as ``data.tsv: line 12: field 'label'``."""
    parts = [str(path)]
    if line is not None:
        parts.append(f"line {line}")
    if field is not None:
        parts.append(f"field '{field}'")
    return ": ".join(parts)


class Interrupted(TfsftError):
    """Training stopped on SIGTERM/SIGINT after writing a resumable backup."""

    def __init__(self, step: int, signame: str) -> None:
        super().__init__(
            f"stopped by {signame} at step {step}; a backup was written. "
            "Re-run the same command to resume"
        )
        self.step, self.signame = step, signame
