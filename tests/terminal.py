"""Run the real `mnistctl` with a pseudo-terminal, as a person at a terminal runs it.

stderr (and, if asked, stdout and stdin) is the slave side of a pty, so the process sees a terminal there and
shows what it shows people: progress bars, panels, colours. stdout can instead be a file or a pipe — the
case where results must still reach the file or pipe, whatever stderr is.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path

from helpers import MNISTCTL_SCRIPT


@dataclass
class TerminalRun:
    returncode: int
    stdout: str  # what reached the file or pipe ("" when stdout was the terminal too)
    screen: str  # everything written to the terminal


def run_at_terminal(
    args: list[str],
    *,
    stdout: str | Path = "pipe",
    stdin: str | bytes | None = None,
    typed: bytes = b"",
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    argv0: list[str] | None = None,
    columns: int = 100,
    timeout: float = 240,
) -> TerminalRun:
    """Run ``mnistctl ARGS`` with stderr a terminal ``columns`` wide. ``stdout``: ``"pipe"``, ``"terminal"``
    or the path of a file to redirect it to. ``stdin``: bytes to feed through a pipe, ``"terminal"``, or None
    (/dev/null); with ``"terminal"``, ``typed`` is what the person types (``\\x04``: Ctrl-D). ``argv0``
    replaces the ``mnistctl`` script (e.g. ``helpers.cli_expecting(fake)``)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full_env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), **(env or {})}
    full_env.pop("CI", None)  # Rich treats CI=true as "no terminal"; a person's terminal has no CI variable
    out_file = None
    if stdout == "pipe":
        out_target: int = subprocess.PIPE
    elif stdout == "terminal":
        out_target = slave
    else:
        out_file = open(stdout, "wb")  # noqa: SIM115 - closed below, after the process ends
        out_target = out_file.fileno()
    in_target: int = subprocess.DEVNULL
    if stdin == "terminal":
        in_target = slave
    elif stdin is not None:
        in_target = subprocess.PIPE
    proc = subprocess.Popen(
        [*(argv0 or [MNISTCTL_SCRIPT]), *args],
        stdin=in_target,
        stdout=out_target,
        stderr=slave,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(slave)
    if isinstance(stdin, bytes):
        proc.stdin.write(stdin)
        proc.stdin.close()
    if typed:
        os.write(master, typed)
    screen, piped = _drain(proc, master, timeout)
    os.close(master)
    if out_file is not None:
        out_file.close()
        piped = Path(stdout).read_bytes()
    return TerminalRun(proc.returncode, piped.decode(errors="replace"), screen.decode(errors="replace"))


def _drain(proc: subprocess.Popen, master: int, timeout: float) -> tuple[bytes, bytes]:
    """Read the terminal and the stdout pipe until the process ends (a terminal that is not read blocks it)."""
    screen, piped = bytearray(), bytearray()
    fds = [master] + ([proc.stdout.fileno()] if proc.stdout else [])
    deadline = time.monotonic() + timeout
    while fds:
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"mnistctl did not finish in {timeout} s; screen so far: {bytes(screen[-2000:])!r}")
        ready, _, _ = select.select(fds, [], [], 0.1)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's last writer closed it
                chunk = b""
            if not chunk:
                fds.remove(fd)
            else:
                (screen if fd == master else piped).extend(chunk)
        if proc.poll() is not None and not ready:
            break
    proc.wait(timeout=10)
    return bytes(screen), bytes(piped)
