"""Downloading MNIST: each file from the sources in order, verification of its decompressed content, atomic
install, and a lock so that two downloads into one directory take turns. Never imports torch.

Where the files come from is ``sources``; fetching one file over HTTP is ``http_fetch``, copying it from a local
mirror ``mirror_copy``; what both share (the partial file, its cap, the ways a fetch ends) is ``transfer``.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import gzip
import hashlib
import os
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mnistctl.data import mnist
from mnistctl.data.http_fetch import fetch_remote
from mnistctl.data.mirror_copy import fetch_local
from mnistctl.data.mnist import MnistFile, files_present, is_valid, raw_dir
from mnistctl.data.sources import Source, mirror_sources
from mnistctl.data.transfer import DownloadProgress, NotMnist, WriteFailed, check_plain, open_own
from mnistctl.errors import Interrupted, MnistctlError
from mnistctl.fsutil import atomic_file, describe_os_error, exclusive_lock

__all__ = ["DownloadError", "DownloadProgress", "FileResult", "Source", "Status", "download_mnist", "ensure_mnist"]

_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # a partial file then only takes space
OFFLINE_HINT = (
    "point --mirror or MNISTCTL_MIRROR at a directory, file:// URL or http(s) URL that holds the four "
    "MNIST .gz files (e.g. --mirror ~/Downloads/mnist)"
)


class Status(enum.StrEnum):
    """How a file ended up: a str, so results, JSON and progress show the word itself."""

    PRESENT = "present"  # already installed and valid: nothing fetched
    DOWNLOADED = "downloaded"
    FAILED = "failed"


@dataclass
class FileResult:
    file: str
    status: Status
    source: str | None = None
    bytes: int | None = None  # size of the .gz that was kept
    sha256: str | None = None  # of the decompressed content
    path: str | None = None
    tried: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class DownloadError(MnistctlError):
    def __init__(self, message: str, hint: str, results: list[FileResult]) -> None:
        super().__init__(message, hint)
        self.results = results


class _Rejected(Exception):
    """The fetched .gz is not MNIST's file (not gzip, or another checksum); the message says which."""


# --------------------------------------------------------------------------------------------- install


def _install_from_gz(gz: Path, spec: MnistFile, rd: Path, keep_gz_as: Path | None) -> str | None:
    """Decompress ``gz`` and install the result as ``rd/spec.name`` if its sha256 matches.

    Returns None on success, else why it was rejected. ``keep_gz_as``: where to move the verified .gz.
    """
    try:
        with atomic_file(rd / spec.name) as out:  # written on the descriptor that created it, never reopened
            size, digest = _inflate_into(gz, out, spec)
            if size != spec.size or digest != spec.sha256:
                raise _Rejected("checksum mismatch")
            check_plain(rd / spec.name)  # atomic_file renames over it next
            if keep_gz_as is not None:
                check_plain(keep_gz_as)
                os.replace(gz, keep_gz_as)
    except _Rejected as exc:
        return str(exc)
    return None


def _inflate_into(gz: Path, out, spec: MnistFile) -> tuple[int, str]:  # noqa: ANN001 - a binary file
    """Decompress ``gz`` into ``out``, no further than one block past ``spec.size``; return the size and sha256
    of what it inflates to. A bad archive is :class:`_Rejected`; a real I/O error (a full disk …) is raised."""
    h, size = hashlib.sha256(), 0
    try:
        with open_own(gz, "rb") as packed, gzip.open(packed, "rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                size += len(block)
                if size > spec.size:
                    break
                out.write(block)
        out.flush()  # a full disk says so now, before the .gz is moved
    except (OSError, EOFError, zlib.error) as exc:
        if getattr(exc, "errno", None) is not None:
            raise
        raise _Rejected(f"not a valid gzip file ({exc})") from exc
    return size, h.hexdigest()


def _install_part(part: Path, spec: MnistFile, rd: Path, gz: Path) -> str | None:
    """Install a fetched ``part``, keeping it as ``gz``; on a full disk the part is deleted to give back space."""
    try:
        return _install_from_gz(part, spec, rd, gz)
    except MnistctlError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            part.unlink(missing_ok=True)  # the next run fetches it again
        raise


# --------------------------------------------------------------------------------------------- one file


def _download_one(
    spec: MnistFile,
    rd: Path,
    sources: list[Source],
    progress: DownloadProgress,
    sleep: Callable[[float], None],
    force: bool,
) -> FileResult:
    """Install ``spec`` from a verified .gz already there, else from the first source that has it."""
    target = rd / spec.name
    gz = rd / spec.gz_name
    result = FileResult(spec.name, Status.FAILED, path=str(target))
    for path in (target, gz, _part_path(rd, spec)):  # each is written or renamed over below
        check_plain(path)

    # A verified .gz left by an earlier run that stopped before the raw file was in place.
    if not force and gz.exists() and _install_from_gz(gz, spec, rd, None) is None:
        result.status, result.source = Status.DOWNLOADED, str(gz)
    else:
        for source in sources:
            if source.dead:
                result.tried.append(f"{source.shown} ({source.dead})")
                continue
            why = _from_source(source, spec, rd, progress, sleep)
            if why is None:
                result.status, result.source = Status.DOWNLOADED, source.shown_location(spec)
                break
            result.tried.append(f"{source.shown} ({why})")
    if result.status != Status.FAILED:
        result.bytes = gz.stat().st_size if gz.exists() else None
        result.sha256 = spec.sha256
    progress.finish(spec.name, result.status)
    return result


def _part_path(rd: Path, spec: MnistFile) -> Path:
    return rd / (spec.gz_name + ".part")


def _from_source(
    source: Source, spec: MnistFile, rd: Path, progress: DownloadProgress, sleep: Callable[[float], None]
) -> str | None:
    """Fetch ``spec`` from ``source`` and install it; None on success, else why not. A partial download that
    failed on the way is kept for the next run to resume; a complete one that is not the file is deleted."""
    gz, part = rd / spec.gz_name, _part_path(rd, spec)
    resumed = source.url is not None and part.exists() and part.stat().st_size > 0
    why = _fetch_from(source, spec, part, progress, sleep)
    if why is not None:
        return why
    why = _install_part(part, spec, rd, gz)
    if why is not None and resumed:
        # The part resumed may have come from a mirror that compresses differently: fetch the whole file once.
        part.unlink(missing_ok=True)
        why = _fetch_from(source, spec, part, progress, sleep) or _install_part(part, spec, rd, gz)
    if why is not None and (why == "checksum mismatch" or why.startswith("not a valid gzip")):
        part.unlink(missing_ok=True)
    return why


def _fetch_from(
    source: Source, spec: MnistFile, part: Path, progress: DownloadProgress, sleep: Callable[[float], None]
) -> str | None:
    """Fetch one file from one source into ``part``; return None on success, else the reason it failed."""
    try:
        if source.directory is not None:
            return fetch_local(source, spec, part, progress)
        return fetch_remote(source, spec, part, progress, sleep)
    except NotMnist as exc:  # what came cannot be the file: keep none of it
        part.unlink(missing_ok=True)
        return str(exc)
    except WriteFailed as exc:  # a full disk …: a part whose writing failed is of no use, and takes space
        part.unlink(missing_ok=True)
        raise describe_os_error(exc.error, part.with_name(spec.gz_name)) from exc.error


# --------------------------------------------------------------------------------------------- all files


def download_mnist(
    data_dir: str | os.PathLike[str],
    *,
    mirror: str | None = None,
    force: bool = False,
    files: Sequence[MnistFile] | None = None,
    progress: DownloadProgress | None = None,
    sources: list[Source] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[FileResult]:
    """Make sure the MNIST files are in ``<data_dir>/MNIST/raw``, verified; fetch what is missing.

    Raises :class:`DownloadError` (carrying the per-file results) when some file could not be had.
    """
    files = mnist.MNIST_FILES if files is None else files
    progress = progress or DownloadProgress()
    sources = mirror_sources(mirror) if sources is None else sources
    rd = raw_dir(data_dir)
    created = [p for p in (rd, rd.parent, rd.parent.parent) if not p.exists()]  # removed again if this fails
    try:
        rd.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistctlError(
            f"cannot create the data directory {rd}: {exc.strerror or exc}",
            "choose another one with --data-dir or MNISTCTL_DATA_DIR",
        ) from exc
    try:
        return _download_all(files, rd, sources, progress, sleep, force)
    except BaseException:
        for directory in created:  # deepest first; one still holding something (a .part kept for resuming) stays
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def _download_all(
    files: Sequence[MnistFile],
    rd: Path,
    sources: list[Source],
    progress: DownloadProgress,
    sleep: Callable[[float], None],
    force: bool,
) -> list[FileResult]:
    """Every file, under the directory's lock; a :class:`DownloadError` naming what could not be had."""
    results: list[FileResult] = []
    try:
        # Two downloads into one directory take turns instead of corrupting each other.
        with exclusive_lock(rd / ".mnistctl-download.lock", wait=True, what=str(rd)):
            for spec in files:
                present = None if force else _present(spec, rd, progress)
                results.append(present or _download_one(spec, rd, sources, progress, sleep, force))
    except KeyboardInterrupt:
        raise _interrupted(rd) from None
    failed = [r for r in results if r.status == Status.FAILED]
    if failed:
        names = ", ".join(f"{r.file}.gz" for r in failed)
        tried = list(dict.fromkeys(t for r in failed for t in r.tried)) or ["no source"]
        raise DownloadError(
            f"could not download {len(failed)} MNIST file(s) ({names}); tried {', '.join(tried)}",
            _files_beside_hint(rd.parent.parent, files) or OFFLINE_HINT,
            results,
        )
    return results


def _present(spec: MnistFile, rd: Path, progress: DownloadProgress) -> FileResult | None:
    """The result for a file already installed and valid, or None when it must be fetched. Its .gz is kept
    when there is one (and reported); it is not needed."""
    target = rd / spec.name
    if not is_valid(target, spec):
        return None
    gz = rd / spec.gz_name
    gz_size = gz.stat().st_size if gz.exists() else None
    progress.finish(spec.name, Status.PRESENT)
    return FileResult(spec.name, Status.PRESENT, None, gz_size, spec.sha256, str(target))


def _files_beside_hint(data_dir: Path, files: Sequence[MnistFile]) -> str | None:
    """When the data directory holds MNIST's files itself (not in MNIST/raw), the user meant it as a mirror."""
    if any((data_dir / name).is_file() for f in files for name in (f.gz_name, f.name)):
        return (
            f"{data_dir} holds MNIST files itself, but a data directory keeps them in MNIST/raw: pass "
            f"--mirror {data_dir} to install them from there (into the default data directory, or the --data-dir "
            "you name)"
        )
    return None


def _interrupted(rd: Path) -> Interrupted:
    """Ctrl-C: installed files are complete; say what partial download is kept for resuming, if any."""
    parts = sorted(p.name for p in rd.glob("*.part"))
    if parts:
        return Interrupted(
            f"interrupted; the partial download {', '.join(parts)} in {rd} is kept",
            "run the same command again to resume it",
        )
    return Interrupted("interrupted; no file was left half-written", "run the same command again to finish")


def ensure_mnist(
    data_dir: str | os.PathLike[str], *, mirror: str | None = None, progress: DownloadProgress | None = None
) -> bool:
    """Download MNIST (verified) when one of the four files is missing; True if it downloaded."""
    if files_present(data_dir):
        return False
    download_mnist(data_dir, mirror=mirror, progress=progress)
    return True
