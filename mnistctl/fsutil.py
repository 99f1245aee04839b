"""Writing files so that a crash, Ctrl-C or full disk never leaves a half-written one in place."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mnistctl.errors import MnistctlError

# mkstemp creates files readable by the owner alone; give ours the usual permissions instead.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _describe_os_error(exc: OSError, path: Path) -> MnistctlError:
    if exc.errno == errno.ENOSPC:
        return MnistctlError(f"the disk is full while writing {path}", "free some space and run the command again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return MnistctlError(f"cannot write {path}: permission denied", "choose a directory you can write to")
    if exc.errno == errno.ENOENT:
        return MnistctlError(
            f"cannot write {path}: the directory {path.parent} does not exist",
            "create it or choose another path",
        )
    return MnistctlError(f"cannot write {path}: {exc.strerror or exc}", "check the path and the disk")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, make_parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``path`` keeps
    whatever it held before. OSErrors while creating or moving the file become a :class:`MnistctlError`.
    """
    target = Path(path)
    try:
        if make_parents:
            target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise _describe_os_error(exc, target) from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _describe_os_error(exc, target) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail now, not after an hour of work, if ``path`` could not be written (its directory is missing or
    read-only, or the disk is full)."""
    target = Path(path)
    if target.is_dir():
        raise MnistctlError(f"{target} is a directory", "pass a file name, e.g. -o digit_model.pt")
    if not target.parent.is_dir():
        raise MnistctlError(
            f"cannot write {target}: the directory {target.parent} does not exist", "create it or choose another path"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=target.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _describe_os_error(exc, target) from exc
