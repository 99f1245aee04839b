"""Files the tool writes: atomically (a crash, Ctrl-C or full disk never leaves a half-written one in place),
checked for writability before long work starts, and guarded by a lock where two processes could collide."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mnistctl.errors import MnistctlError, UsageError


def _not_a_directory(path: Path) -> Path | None:
    """The nearest ancestor of ``path`` that exists but is not a directory (``FILE`` for ``FILE/sub/x.pt``)."""
    try:  # this runs while an error is being described: a parent that cannot be looked up is no answer
        for parent in path.parents:
            if parent.exists():
                return None if parent.is_dir() else parent
    except OSError:
        return None
    return None


def describe_os_error(exc: OSError, path: Path, option: str | None = None) -> MnistctlError:
    """An OSError met while writing ``path`` as one line that says what to do."""
    other = f"choose another {option} path" if option else "choose another path"
    if exc.errno == errno.ENOSPC:
        return MnistctlError(f"the disk is full while writing {path}", "free some space and run the command again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return MnistctlError(f"cannot write {path}: permission denied", "choose a directory you can write to")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        blocker = _not_a_directory(path)
        if blocker is not None:
            return MnistctlError(f"cannot write {path}: {blocker} is a file, not a directory", other)
        return MnistctlError(
            f"cannot write {path}: the directory {path.parent} does not exist", f"create it or {other}"
        )
    if exc.errno == errno.EISDIR:
        return MnistctlError(f"cannot write {path}: it is a directory", other)
    return MnistctlError(f"cannot write {path}: {exc.strerror or exc}", "check the path and the disk")


# Files mnistctl creates are opened without following a link planted at their name, and created anew.
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    kinds = {stat.S_ISLNK: "a symbolic link", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    kinds |= {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a directory"}
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


class NotRegularFile(OSError):
    """:func:`open_regular` met something other than a regular file; ``kind`` says what, in words ("a
    directory", "a FIFO", "a symbolic link" …), for the caller to put into its own message."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(f"{os.fspath(path)} is {kind}")
        self.path = os.fspath(path)
        self.kind = kind

    @property
    def is_directory(self) -> bool:
        return self.kind == "a directory"


# Opening never blocks (a FIFO without a writer opens at once, to be refused), never makes a terminal ours, and
# is not inherited by processes we start. O_NONBLOCK changes nothing for a regular file, the only kind kept open.
_NEVER_BLOCK = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_regular_fd(
    path: str | os.PathLike[str], flags: int = os.O_RDONLY, *, follow_symlinks: bool = True
) -> tuple[int, os.stat_result]:
    """``path`` opened with ``flags`` (plus never blocking), and its fstat, when it is a regular file; else
    :class:`NotRegularFile`. What is checked is the open descriptor, so the name cannot change in between.
    ``follow_symlinks=False``: a symbolic link at ``path`` is refused too (O_NOFOLLOW), for files we write."""
    extra = _NEVER_BLOCK | (0 if follow_symlinks else _NOFOLLOW)
    try:
        fd = os.open(path, flags | extra, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and os.path.islink(path):
            raise NotRegularFile(path, "a symbolic link") from None
        if exc.errno == errno.ENXIO:  # a socket, a FIFO opened for writing with no reader, a device without one
            raise NotRegularFile(path, _kind_at(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(path, _kind(info.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def open_regular(path: str | os.PathLike[str], mode: str = "rb", *, follow_symlinks: bool = True, buffering: int = -1):  # noqa: ANN201 - a binary file object
    """The one way mnistctl opens a file it reads (or appends to) by name: ``open(path, mode)``, but never
    blocking on a FIFO, never streaming a device (/dev/zero) or a directory — anything but a regular file is
    :class:`NotRegularFile`, with what it is — and, with ``follow_symlinks=False``, never through a link."""
    return open(  # noqa: SIM115 - the caller closes it
        path,
        mode,
        buffering=buffering,
        opener=lambda name, flags: open_regular_fd(name, flags, follow_symlinks=follow_symlinks)[0],
    )


def _kind_at(path: str | os.PathLike[str]) -> str:
    """What ``path`` is, from its stat, for a descriptor that could not be had."""
    try:
        return _kind(os.stat(path).st_mode)
    except OSError:
        return "not a regular file"


def check_replaceable(path: str | os.PathLike[str], option: str | None = None) -> None:
    """An output mnistctl replaces whole (by renaming a new file over it) must be absent or a regular file: a
    link would be replaced rather than written through, and a device (``/dev/null``) turned into a file."""
    target = Path(path)
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise describe_os_error(exc, target, option) from exc
    if not stat.S_ISREG(mode):
        where = f"pass {option} a path to a regular file" if option else "pass a path to a regular file"
        also = " (--csv - writes to stdout)" if option == "--csv" else ""
        raise MnistctlError(
            f"{target} is {_kind(mode)}: mnistctl writes its outputs as new files and will not replace it",
            where + also,
        )


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file object for a new temporary file beside ``path``; move it into place only if the block
    succeeds.

    The file object is opened on the very descriptor that created the file (``O_EXCL | O_NOFOLLOW``): the file
    written is the file created, even in a directory others may write to, where a name reopened later could by
    then be a link planted in its place. It is flushed and fsynced before the rename (the data is on disk before
    it replaces the old file); ``path`` must be absent or a regular file (:func:`check_replaceable`), checked
    before and again just before the rename. On any exception (KeyboardInterrupt included) the temporary file is
    removed and ``path`` keeps whatever it held before; an OSError (a full disk) is :func:`describe_os_error`'s line.
    """
    target = Path(path)
    check_replaceable(target)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, CREATE_FLAGS, 0o666)
    except OSError as exc:
        raise describe_os_error(exc, target) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            _check_still_ours(f.fileno(), tmp)
        check_replaceable(target)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # a link planted at its name is removed, never followed
        raise describe_os_error(exc, target) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)  # a link planted at its name is removed, never followed
        raise


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _check_still_ours(fd: int, tmp: Path) -> None:
    """The name about to be renamed into place is still the file written: a name swapped for a link meanwhile
    (by someone who may write to the directory) would otherwise become the output."""
    try:
        same = _same_file(os.fstat(fd), tmp.lstat())
    except FileNotFoundError:
        same = False
    if not same:
        raise MnistctlError(
            f"the temporary file {tmp} was replaced or removed while mnistctl wrote it",
            "write to a directory only you can write to",
        )


def output_path(text: str, option: str) -> Path:
    """The file an option names. A name ending in a slash names a directory: writing a file called ``newdir``
    for ``-o newdir/`` would not be what was asked."""
    if text.endswith(("/", os.sep)):
        raise UsageError(f"{option} {text} names a directory", f"pass a file name, e.g. {option} {text}x")
    return Path(text).expanduser()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))


def _os_errors_said(check):  # noqa: ANN001, ANN202 - a check below
    """A check whose own probing (``is_dir``, ``exists`` under an unsearchable directory) raises an OSError says
    it as one line, like every other reason a path cannot be written."""

    @functools.wraps(check)
    def checked(path: str | os.PathLike[str], option: str = "-o", **kwargs: bool) -> None:
        try:
            check(path, option, **kwargs)
        except OSError as exc:
            raise describe_os_error(exc, Path(path), option) from exc

    return checked


@_os_errors_said
def check_writable(path: str | os.PathLike[str], option: str = "-o") -> None:
    """Fail now, not after an hour of work, if ``path`` (given with ``option``) could not be written."""
    target = Path(path)
    if target.is_dir():
        raise MnistctlError(f"{target} is a directory", f"pass a file name to {option}, e.g. {option} {target / 'x'}")
    blocker = _not_a_directory(target)
    if blocker is not None:
        raise MnistctlError(f"cannot write {target}: {blocker} is a file, not a directory", f"fix the {option} path")
    if not target.parent.is_dir():
        raise MnistctlError(
            f"cannot write {target}: the directory {target.parent} does not exist",
            f"create it or choose another {option} path",
        )
    check_replaceable(target, option)
    probe = target.with_name(f".{target.name}.{secrets.token_hex(4)}.probe")
    try:  # create and remove a file beside the target: the real test (read-only mounts, full disks, ACLs)
        os.close(os.open(probe, CREATE_FLAGS, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise describe_os_error(exc, target, option) from exc


@_os_errors_said
def check_directory(path: str | os.PathLike[str], option: str, *, empty: bool = False) -> None:
    """Fail now, before the work that fills it, if the directory ``path`` (given with ``option``) could not be
    written into: it is a file, a file stands in its way, or the nearest directory that exists is read-only;
    with ``empty``, also when it already holds something (the output of one run is not mixed into another's)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise MnistctlError(f"{target} is a file, not a directory", f"pass a directory to {option}")
    count = sum(1 for _ in target.iterdir()) if empty and target.is_dir() else 0
    if count:
        raise MnistctlError(
            f"{target} is not empty ({count:,} entries)",
            f"pass a new or empty folder to {option}, or --force to add to what it holds",
        )
    blocker = _not_a_directory(target)
    if blocker is not None:
        raise MnistctlError(f"cannot create {target}: {blocker} is a file, not a directory", f"fix the {option} path")
    existing = next(p for p in (target, *target.parents) if p.exists())
    check_writable(existing / f"{target.name}.d", option)  # creates and removes a file there


# --------------------------------------------------------------------------------------------- locks


class Busy(MnistctlError):
    """Another process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(path: Path, *, wait: bool, what: str) -> Iterator[None]:
    """Hold an advisory lock named ``path`` (a file created for it, removed on release) for the block.

    ``wait=False``: if another process holds it, raise :class:`Busy` at once, naming ``what`` and the holder's
    pid. The lock dies with its process, so a killed run never leaves a stale one (only, at worst, the file).
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; temporary names are still unique per process
        yield
        return
    fd = _acquire(path, wait, what, fcntl)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: a process waiting on this file retries on a new one
        os.close(fd)


LOCK_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | os.O_NONBLOCK


def _open_lock(path: Path) -> int:
    """The lock file, opened (created if absent) without following a link planted at its name; it must be a
    regular file, else whatever it names (a victim's file, a FIFO) would receive the pid."""
    try:
        fd = os.open(path, LOCK_FLAGS, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise MnistctlError(
                f"the lock file {path} is a symbolic link", "remove it: mnistctl does not write through links"
            ) from exc
        raise describe_os_error(exc, path) from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise MnistctlError(f"the lock file {path} is {_kind(mode)}", "remove it, then run the command again")
    return fd


def _acquire(path: Path, wait: bool, what: str, fcntl) -> int:  # noqa: ANN001 - the fcntl module
    while True:
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            by = f"process {holder}" if holder.isdigit() else "another process"
            raise Busy(f"{what} is in use by {by}", "wait for it to finish, or write elsewhere") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the previous holder removed the file between our open and our lock: try again
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError as exc:  # a full disk: no empty lock file is left behind
                os.unlink(path)
                os.close(fd)
                raise describe_os_error(exc, path) from exc
            return fd
        os.close(fd)
