"""Errors meant for people: each names the file, column, row, what was expected and what was found."""

from __future__ import annotations

from pathlib import Path


class MedauditError(Exception):
    """Base class: a failure the user can act on (printed without a traceback by the CLI)."""


class StructuralError(MedauditError):
    """The raw data cannot be read as the declared layout (missing file or column, unreadable file)."""

    def __init__(self, file: Path | str, problem: str, *, column: str | None = None, row: int | None = None, expected: str | None = None):
        self.file, self.column, self.row, self.expected = str(file), column, row, expected
        where = self.file
        if column is not None:
            where += f", column {column!r}"
        if row is not None:
            where += f", row {row}"
        msg = f"{where}: {problem}"
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)


class ConfigError(MedauditError):
    """An audit configuration or command-line option is invalid."""
