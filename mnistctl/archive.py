"""What reading a checkpoint file may cost, checked before ``torch.load`` reads a byte of its pickle.

A checkpoint may come from anyone. :func:`read_archive` opens it only once it is known to be a regular file
holding a zip archive whose records inflate to a bounded size (:func:`open_archive`), then lets
``torch.load(..., weights_only=True)`` read it, which refuses any pickle that would import or call code. What
the loaded object holds is :mod:`mnistctl.checkfile`'s to check. Nothing here knows the checkpoint format.
"""

from __future__ import annotations

import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

from mnistctl.errors import MnistctlError, first_line
from mnistctl.fsutil import NotRegularFile, open_regular_fd

# What reading a file may cost. The largest network models.py's bounds allow needs about 120 MB with its training
# state; the files `mnistctl train` writes hold under 2 MB, their pickle a few kB.
MAX_UNPACKED = 256 << 20  # bytes: the file, and its zip records once inflated, together
MAX_PICKLE = 4 << 20  # bytes of pickle: one opcode byte can make an object many times its size
MAX_RECORDS = 10_000  # zip records: one per tensor storage, and a few more
MAX_RATIO = 100  # deflate gains little on weights: a big record inflating more than this is a decompression bomb
LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # how torch.save's format before 1.6 begins
CALLS = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def read_archive(path: Path, hint: str) -> Any:
    """What ``torch.load`` reads from ``path`` (on the CPU, weights only), once :func:`open_archive` has found it
    cheap to read; every way it fails is a one-line :class:`MnistctlError` naming ``path``."""
    with open_archive(path, hint) as f:
        return _torch_load(f, path, hint)


def _torch_load(f: IO[bytes], path: Path, hint: str) -> Any:
    import torch

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": our error says it better
            warnings.simplefilter("ignore")
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know: those are what can run code when unpickled.
        if "global" in str(exc).lower():
            raise refusing_code(path) from exc
        raise MnistctlError(f"{path} is not a PyTorch checkpoint", hint) from exc
    except Exception as exc:  # noqa: BLE001 - a hostile archive can fail torch's reader in any way: all mean unreadable
        raise MnistctlError(f"{path} is not a readable PyTorch checkpoint ({first_line(exc, 200)})", hint) from exc


def open_archive(path: Path, hint: str) -> IO[bytes]:
    """``path`` opened for ``torch.load``, once it is known to be a regular file holding a zip archive that
    inflates to at most :data:`MAX_UNPACKED` bytes; else a one-line error that says what it is instead."""
    try:  # a FIFO or a device is refused on its descriptor, without waiting for a writer
        fd, info = open_regular_fd(path)
    except NotRegularFile as exc:
        raise _not_regular(path, exc) from None
    except OSError as exc:
        raise _unreadable(exc, path, hint) from exc
    f = os.fdopen(fd, "rb")
    try:
        _check_size(f, info.st_size, path, hint)
        _check_zip(f, path, hint)
    except BaseException:
        f.close()
        raise
    f.seek(0)
    return f


def _not_regular(path: Path, exc: NotRegularFile) -> MnistctlError:
    if exc.is_directory:
        return MnistctlError(f"model path {path} is a directory", "pass the checkpoint file itself")
    kind = {"a character device": "a device", "a block device": "a device"}.get(exc.kind, exc.kind)
    return MnistctlError(
        f"model file {path} is not a regular file ({kind})", "pass a checkpoint file written by `mnistctl train`"
    )


def _unreadable(exc: OSError, path: Path, hint: str) -> MnistctlError:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return MnistctlError(f"model file {path} does not exist", hint)
    if isinstance(exc, PermissionError):
        return MnistctlError(f"cannot read {path}: permission denied", "check its permissions, or pass another file")
    return MnistctlError(f"cannot read {path}: {exc.strerror or exc}", hint)


def _check_size(f: IO[bytes], size: int, path: Path, hint: str) -> None:
    """A stored file, not empty and not bigger than any checkpoint: a file of /proc is made up as it is read."""
    if size == 0 and f.read(1):  # a size of 0 with content: the kernel makes it up (/proc, /sys)
        raise MnistctlError(
            f"model file {path} is not a regular file (a file the kernel makes up as it is read)",
            "pass a checkpoint file written by `mnistctl train`",
        )
    if size == 0:
        raise MnistctlError(f"model file {path} is empty", hint)
    if size > MAX_UNPACKED:
        raise MnistctlError(f"refusing to load {path}: it is {size >> 20:,} MB, more than any checkpoint", hint)


def _check_zip(f: IO[bytes], path: Path, hint: str) -> None:
    """A zip archive whose records, by their own word, cost no more to read than any checkpoint's."""
    if f.read(4) != b"PK\x03\x04":
        raise _not_a_zip(f, path, hint)
    f.seek(0)
    try:
        end = zipfile._EndRecData(f)  # noqa: SLF001 - the stdlib's own reader of the zip's last record
        if end is None:
            raise zipfile.BadZipFile("its end record is missing")
        records = end[zipfile._ECD_ENTRIES_TOTAL]  # noqa: SLF001
        if records > MAX_RECORDS:  # checked before zipfile makes an object for each
            raise MnistctlError(
                f"refusing to load {path}: it holds {records:,} records, more than any checkpoint", hint
            )
        with zipfile.ZipFile(f) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        detail = first_line(exc, 120)
        raise MnistctlError(
            f"{path} is not a readable PyTorch checkpoint (truncated or damaged: {detail})", hint
        ) from exc
    problem = _archive_problem(infos)
    if problem:
        raise MnistctlError(f"refusing to load {path}: {problem}", hint)


def _archive_problem(infos: list[zipfile.ZipInfo]) -> str | None:
    """Why reading these records would cost more than any checkpoint may (the sizes are the archive's own word:
    torch's reader allocates what a record declares and fails if it inflates to more)."""
    total = sum(info.file_size for info in infos)
    if total > MAX_UNPACKED:
        return f"it would inflate to {total >> 20:,} MB, more than any checkpoint ({MAX_UNPACKED >> 20} MB)"
    for info in infos:
        ratio = info.file_size / max(1, info.compress_size)
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1 << 20 and ratio > MAX_RATIO:
            return f"its record {info.filename[:60]!r} would inflate {ratio:,.0f}-fold (a decompression bomb)"
        if info.filename.endswith(".pkl") and info.file_size > MAX_PICKLE:
            return f"its pickle is {info.file_size >> 20:,} MB, more than any checkpoint's ({MAX_PICKLE >> 20} MB)"
    return None


def _not_a_zip(f: IO[bytes], path: Path, hint: str) -> MnistctlError:
    """What a file that is no zip archive is instead: torch's old format, a plain pickle that runs code, or else."""
    f.seek(0)
    if f.read(len(LEGACY_MAGIC)) == LEGACY_MAGIC:  # its loader allocates whatever sizes the file declares
        return MnistctlError(
            f"{path} is in PyTorch's format from before 1.6, which mnistctl does not read",
            "load it with a PyTorch you trust and save it again with torch.save",
        )
    f.seek(0)
    if pickle_calls_code(f):
        return refusing_code(path)
    return MnistctlError(f"{path} is not a PyTorch checkpoint", hint)


def pickle_calls_code(f: IO[bytes]) -> bool:
    """Whether ``f`` is a plain pickle, whole, that imports or calls something when loaded (read, never run)."""
    import pickletools

    ops = set()
    try:
        for op, _, position in pickletools.genops(f):  # up to its STOP; an error if it has none
            if position > MAX_PICKLE:
                return False
            ops.add(op.name)
    except Exception:  # noqa: BLE001 - not a pickle at all: it calls nothing
        return False
    return bool(ops & CALLS)


def refusing_code(path: Path) -> MnistctlError:
    return MnistctlError(
        f"refusing to load {path}: loading it would run the Python code or objects it holds",
        "only load checkpoints you trust; mnistctl loads weights only (train one with `mnistctl train`)",
    )
