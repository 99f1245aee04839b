"""The one place a failure becomes ``Error: <what is wrong> — <what to do>`` on stderr and an exit status.

The core raises (``mnistctl.errors``) and never prints; everything that ends a command early comes here, through
two hooks on the Typer classes in ``options``:

- :func:`run`, the process's entry point (``Group.main``), runs Click — parsing, help, the command — in Click's
  ``standalone_mode=False``, so that Click returns or raises instead of printing and exiting itself, and turns
  what comes out into the exit status: a usage error as one line (exit 2), a Ctrl-C that reached Typer as the
  interrupted line (130), Rich's exit after stdout closed as a closed pipe (141).
- :func:`command_failures`, around each command's own code (``Command.invoke``). It has to sit inside Click:
  Click's main turns Ctrl-C into a silent exit 130 and a broken pipe into exit 1 before :func:`run` could see
  them. It says a :class:`MnistctlError` with its code, Ctrl-C, SIGTERM and SIGHUP as the interrupted line
  (130, or 128 + the signal), a closed pipe as a silent 141, and anything unexpected as the catch-all line.

``--debug`` (``MNISTCTL_DEBUG=1``) lets errors through instead, for their traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import typer

from mnistctl.errors import Interrupted, MnistctlError

BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for `cat` stopped by a closed pipe

# What a Ctrl-C that nothing else handled says: a command that keeps something (train) raises its own Interrupted.
INTERRUPTED = Interrupted("interrupted", "nothing half-written was left behind")

# Typer bundles its own Click; this is that Click's base of every usage error.
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def run(click_main: Callable[[], Any]) -> NoReturn:
    """Run ``click_main`` (Click's main in ``standalone_mode=False``) and exit with the status it comes to."""
    if sys.stderr is None:  # started with stderr closed (2>&-): errors then go nowhere, but nothing crashes
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stdout is None:  # started with stdout closed (>&-): results could go nowhere
        _say("stdout is closed — run the command with its output going to a file, a pipe or /dev/null")
        sys.exit(1)
    stdout = _identity(sys.stdout)
    try:
        _exit_as_click_returns(click_main)
    except SystemExit as exc:
        # A reader that left (`mnistctl --help | head`): Rich, writing help or tables, exits 1 after pointing
        # stdout at /dev/null. Say it as a closed pipe is said elsewhere in mnistctl (and by cat): 141.
        if exc.code == 1 and _identity(sys.stdout) != stdout:
            sys.exit(BROKEN_PIPE_EXIT)
        raise


def _exit_as_click_returns(click_main: Callable[[], Any]) -> NoReturn:
    """Exit with what Click returned (a command's ``typer.Exit`` code, else 0), or with its error, said."""
    try:
        rv = click_main()
    except _CLICK_EXCEPTION as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `mnistctl` alone: show the help
            exc.show()
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        # Click's sentence without the validator's wording ("Value error, …") or its full stop before the dash.
        message = exc.format_message().replace("Value error, ", "").rstrip(".")
        _say(f"{message} — see `{ctx.command_path if ctx else 'mnistctl'} --help`")
        sys.exit(exc.exit_code)
    except typer.Abort as exc:
        # Typer's Abort (Ctrl-C in older Typers, end of input) reaches here only with --debug: without it,
        # command_failures has said the command's failure already. The traceback is the one Typer caught.
        if debug_enabled() and exc.__context__ is not None:
            traceback.print_exception(exc.__context__)
        _fail(INTERRUPTED)
    sys.exit(rv if isinstance(rv, int) else 0)


@contextlib.contextmanager
def command_failures() -> Iterator[None]:
    """Around a command: every failure ends as one line on stderr and an exit status, never a traceback."""
    stopped_by: list[int] = []  # the signal (SIGTERM, SIGHUP) that stopped the command, if one did
    try:
        with _signals_as_interrupts(stopped_by):
            yield
    except BrokenPipeError:  # `mnistctl predict … | head`: the reader left; stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit cannot fail again
        raise SystemExit(BROKEN_PIPE_EXIT) from None
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        _fail(INTERRUPTED, stopped_by)
    except MnistctlError as exc:
        if debug_enabled():
            raise
        _fail(exc, stopped_by if isinstance(exc, Interrupted) else [])
    except Exception as exc:
        if _is_framework_exception(exc) or debug_enabled():
            raise
        _say(
            f"unexpected {type(exc).__name__}: {exc} — run again as `mnistctl --debug …` for the traceback, "
            "and report it with the output of `mnistctl info`"
        )
        raise SystemExit(1) from None


def _fail(exc: MnistctlError, stopped_by: list[int] | None = None) -> NoReturn:
    """Say ``exc`` and exit with its code; if a signal stopped the command, the line names it and the status is
    the signal's (128 + its number), as a shell reports it."""
    if stopped_by:
        _say(f"{signal.Signals(stopped_by[0]).name}: {exc}")
        raise SystemExit(128 + stopped_by[0]) from None
    _say(str(exc))
    raise SystemExit(exc.exit_code) from None


@contextlib.contextmanager
def _signals_as_interrupts(stopped_by: list[int]) -> Iterator[None]:
    """SIGTERM (``kill``, a container stopping) and SIGHUP (the terminal closed) stop a command as Ctrl-C does:
    the last complete checkpoint is kept, locks are released, and the line says how to go on. The signal is
    appended to ``stopped_by``, for the line and the exit status."""
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


def debug_enabled() -> bool:
    """``MNISTCTL_DEBUG=1``, which ``--debug`` sets for the process (and the processes it starts)."""
    return os.environ.get("MNISTCTL_DEBUG", "").lower() not in ("", "0", "false", "no")


def _is_framework_exception(exc: BaseException) -> bool:
    """Typer/Click's own exceptions (exit, abort, usage errors) pass through to Click, which handles them."""
    return type(exc).__module__.split(".")[0] in ("typer", "click")


def _identity(stream: Any) -> tuple[int, int] | None:
    """What file ``stream`` writes to (device and inode), or None if it has none."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return info.st_dev, info.st_ino


def _say(message: str) -> None:
    """``Error: <message>`` on stderr. Rendering is report's; it is imported here, on failure, not at startup."""
    from mnistctl.report.console import error_line

    with contextlib.suppress(OSError):  # stderr gone (SIGHUP: the terminal closed): the exit status still tells
        error_line(message)
