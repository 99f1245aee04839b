"""The errors a user can act on: what core modules raise when something is wrong that the user can fix.

Core modules raise :class:`MnistctlError` (``Error: <what is wrong> — <what to do>``, exit 1), its
:class:`UsageError` (a bad option value, exit 2) or :class:`Interrupted` (Ctrl-C, exit 130). They only say
what went wrong: the command line's one handler (``mnistctl.cli.failures``) prints them as one line on stderr
and exits with their code. Nothing here prints, so the core stays free of the command line and of ``report``.
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


class Interrupted(MnistctlError):
    """Ctrl-C, with what was kept and how to go on."""

    exit_code = 130


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message (its type's name if it has none), for a one-line error."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]
