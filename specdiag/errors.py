"""One exception root, mapped to exit codes by the CLI."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # the run completed but a requested condition failed (e.g. --max-rejects exceeded)
    USAGE = 2  # bad options (click uses 2 as well)
    INPUT = 3  # a file or value the user gave cannot be read
    STORE = 4  # the database is missing, locked or unusable
    DEPENDENCY = 5  # an optional dependency or model folder is missing


class SpecdiagError(Exception):
    """Root of every error specdiag reports to a user: one line, optionally a hint."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class UsageError(SpecdiagError):
    exit_code = ExitCode.USAGE


class InputError(SpecdiagError):
    """Bad input: name the file, the line and the reason in the message."""

    exit_code = ExitCode.INPUT


class StoreError(SpecdiagError):
    exit_code = ExitCode.STORE


class DependencyError(SpecdiagError):
    exit_code = ExitCode.DEPENDENCY


class ThresholdExceeded(SpecdiagError):
    exit_code = ExitCode.FAILURE
