"""The errors a user can act on, and the one handler that turns any failure into one line and an exit code.

Core modules raise :class:`MnistctlError` (``Error: <what is wrong> — <what to do>``, exit 1), its
:class:`UsageError` (a bad option value, exit 2) or :class:`Interrupted` (Ctrl-C, exit 130). Commands are
wrapped in :func:`handle_errors`, which prints them (or an unexpected exception) as one line on stderr;
``--debug`` or ``MNISTCTL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for `cat` stopped by a closed pipe


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


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Run a command so that every failure ends as one line on stderr and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stopped_by: list[int] = []  # the signal (SIGTERM, SIGHUP) that stopped the command, if one did
        try:
            with _signals_as_interrupts(stopped_by):
                return fn(*args, **kwargs)
        except BrokenPipeError:  # `mnistctl predict … | head`: the reader left; stop quietly, as cat does
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit cannot fail again
            raise SystemExit(BROKEN_PIPE_EXIT) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            exc = Interrupted("interrupted", "nothing half-written was left behind")
            _print(_stopped(str(exc), stopped_by))
            raise SystemExit(128 + stopped_by[0] if stopped_by else exc.exit_code) from None
        except MnistctlError as exc:
            if debug_enabled():
                raise
            signalled = stopped_by if isinstance(exc, Interrupted) else []
            _print(_stopped(str(exc), signalled))
            raise SystemExit(128 + signalled[0] if signalled else exc.exit_code) from None
        except Exception as exc:
            if _is_framework_exception(exc) or debug_enabled():
                raise
            _print(
                f"unexpected {type(exc).__name__}: {exc} — run again as `mnistctl --debug …` for the traceback, "
                "and report it with the output of `mnistctl info`"
            )
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _signals_as_interrupts(stopped_by: list[int]) -> Iterator[None]:
    """SIGTERM (``kill``, a container stopping) and SIGHUP (the terminal closed) stop a command as Ctrl-C does:
    the last complete checkpoint is kept, locks are released, and the line says how to go on. The exit status
    stays the signal's (128 + its number), as a shell reports it."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        stopped_by.append(signum)
        raise KeyboardInterrupt

    names = ("SIGTERM", "SIGHUP")
    # A signal ignored when we started (`nohup mnistctl train &`) stays ignored: that is what nohup is for.
    wanted = [
        getattr(signal, n)
        for n in names
        if hasattr(signal, n) and signal.getsignal(getattr(signal, n)) is not signal.SIG_IGN
    ]
    previous = {signum: signal.signal(signum, interrupt) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stopped(message: str, stopped_by: list[int]) -> str:
    return f"{signal.Signals(stopped_by[0]).name}: {message}" if stopped_by else message


def debug_enabled() -> bool:
    """``MNISTCTL_DEBUG=1``, which ``--debug`` sets for the process (and the processes it starts)."""
    return os.environ.get("MNISTCTL_DEBUG", "").lower() not in ("", "0", "false", "no")


def _is_framework_exception(exc: BaseException) -> bool:
    """Typer/Click's own exceptions (exit, abort, usage errors) pass through to Click, which handles them."""
    return type(exc).__module__.split(".")[0] in ("typer", "click")


def _print(message: str) -> None:
    from mnistctl import report

    with contextlib.suppress(OSError):  # stderr gone (SIGHUP: the terminal closed): the exit status still tells
        report.error_line(message)
