"""What fetching one file from one source shares, whatever the source: the partial file it writes (``.part``,
never through a planted link or FIFO), the cap on its size, the progress events, and the ways a fetch can end
(each an exception, so that the caller decides: retry, skip the source, or give up on the file)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import BinaryIO

from mnistctl.data.mnist import MnistFile
from mnistctl.errors import MnistctlError
from mnistctl.fsutil import NotRegularFile, open_regular


class DownloadProgress:
    """Receives download events; the default does nothing. ``report`` supplies a Rich one."""

    def start(self, name: str, source: str, total: int | None, done: int = 0) -> None: ...

    def advance(self, name: str, nbytes: int) -> None: ...

    def finish(self, name: str, status: str) -> None: ...


class Transient(Exception):
    """A failure worth retrying from the same source (timeout, reset, short read, 5xx)."""


class Unreachable(Exception):
    """The source cannot be used at all (no DNS, connection refused): skip it for every file."""


class TooSlow(Unreachable):
    """A file did not arrive within the deadline (a server that drips bytes): skip the source for every file."""


class Missing(Exception):
    """The source answered but does not have the file (404 and other 4xx, a redirect we do not follow)."""


class NotMnist(Exception):
    """What the source sends cannot be MNIST's file (it is far too large): none of it is kept."""


class WriteFailed(Exception):
    """Writing the partial download failed (a full disk …); ``error`` is the OSError."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def max_gz_size(spec: MnistFile) -> int:
    """The most bytes ``spec`` can take gzipped. Deflate grows incompressible data by a few bytes per 64 kB
    block, so anything larger is not the file, and an endless body is cut off here instead of filling the disk."""
    return spec.size + spec.size // 100 + (1 << 16)


def not_plain(path: Path) -> MnistctlError:
    """A path the downloader would write or rename over is a symlink (perhaps planted to make it write
    elsewhere) or not a regular file: it is never written through."""
    what = "a symbolic link" if path.is_symlink() else "not a regular file"
    return MnistctlError(f"{path} is {what}, so mnistctl will not write it", "remove it and run the command again")


def check_plain(path: Path) -> None:
    """Refuse ``path`` unless it is absent or a regular file (checked before writing it or renaming over it)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise not_plain(path)


def open_own(path: Path, mode: str, buffering: int = -1) -> BinaryIO:
    """A file the downloader creates and reads back: never through a symlink, never waiting on a FIFO, and
    only a regular file — anything else is :func:`not_plain`."""
    try:
        return open_regular(path, mode, follow_symlinks=False, buffering=buffering)
    except NotRegularFile:
        raise not_plain(path) from None


def open_part(part: Path, resume: bool) -> BinaryIO:
    """The partial download, to append to (``resume``) or created anew with O_EXCL, so that nothing planted
    at that name in between is written through."""
    try:
        if not resume:
            part.unlink(missing_ok=True)
        # Unbuffered: what arrived is on disk, for resuming after a kill, and closing cannot fail on a full disk.
        return open_own(part, "ab" if resume else "xb", buffering=0)
    except OSError as exc:
        raise WriteFailed(exc) from exc


def write_all(out: BinaryIO, block: bytes) -> None:
    """Write all of ``block``: an unbuffered write may write part of it (as a disk fills up)."""
    view = memoryview(block)
    try:
        while view:
            view = view[out.write(view) :]
    except OSError as exc:
        raise WriteFailed(exc) from exc
