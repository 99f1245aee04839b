"""The one exception type the core raises for problems a user can fix.

The CLI turns it into a single line on stderr, ``Error: <what> — <fix>``, and exit code 1.
"""

from __future__ import annotations


class MnistctlError(Exception):
    """A failure the user can act on: ``message`` says what is wrong, ``hint`` what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class UsageError(MnistctlError):
    """A bad option value found after parsing (exit 2, like Click's own usage errors)."""

    exit_code = 2
