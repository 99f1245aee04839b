"""Fetching MNIST: sources tried in order, resumable HTTP, verification of the decompressed content, atomic
install, and a lock so that two downloads into one directory take turns. Never imports torch."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import time
import urllib.parse
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mnistctl.data import mnist
from mnistctl.data.mnist import MnistFile, files_present, is_valid, raw_dir
from mnistctl.errors import Interrupted, MnistctlError
from mnistctl.fsutil import atomic_path, exclusive_lock

PUBLIC_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

TIMEOUT_S = 10.0  # connect and per-read timeout of one HTTP request
RETRIES = 3  # attempts per file and source for transient failures (timeouts, resets, 5xx)
BACKOFF_S = 0.5  # first wait between attempts; doubles each time
CHUNK = 1 << 16
OFFLINE_HINT = (
    "point --mirror or MNISTCTL_MIRROR at a directory, file:// URL or http(s) URL that holds the four "
    "MNIST .gz files (e.g. --mirror ~/Downloads/mnist)"
)


# --------------------------------------------------------------------------------------------- sources


@dataclass
class Source:
    """A place the .gz files may be fetched from: an http(s) base URL or a local directory."""

    spec: str
    url: str | None = None
    directory: Path | None = None
    dead: str | None = None  # why this source is skipped for the remaining files

    @classmethod
    def parse(cls, spec: str) -> Source:
        parsed = urllib.parse.urlparse(spec)
        if parsed.scheme in ("http", "https"):
            return cls(spec, url=spec if spec.endswith("/") else spec + "/")
        if parsed.scheme == "file":
            from urllib.request import url2pathname

            return cls(spec, directory=Path(url2pathname(parsed.path)))
        if parsed.scheme and len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive
            raise MnistctlError(
                f"unsupported mirror {spec!r}", "use an http(s):// URL, a file:// URL or a directory path"
            )
        return cls(spec, directory=Path(spec).expanduser())

    def location(self, f: MnistFile) -> str:
        if self.url is not None:
            return self.url + f.gz_name
        assert self.directory is not None
        return str(self.directory / f.gz_name)


def mirror_sources(mirror: str | None = None) -> list[Source]:
    """The sources in the order they are tried: ``mirror`` (or ``$MNISTCTL_MIRROR``), then the public ones."""
    first = mirror or os.environ.get("MNISTCTL_MIRROR") or None
    specs = ([first] if first else []) + list(PUBLIC_MIRRORS)
    return [Source.parse(s) for s in specs]


# --------------------------------------------------------------------------------------------- progress


class DownloadProgress:
    """Receives download events; the default does nothing. ``report`` supplies a Rich one."""

    def start(self, name: str, source: str, total: int | None, done: int = 0) -> None: ...

    def advance(self, name: str, nbytes: int) -> None: ...

    def finish(self, name: str, status: str) -> None: ...


@dataclass
class FileResult:
    file: str
    status: str  # "present" | "downloaded" | "failed"
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


class _Transient(Exception):
    """A failure worth retrying from the same source (timeout, reset, short read, 5xx)."""


class _Unreachable(Exception):
    """The source cannot be reached at all (no DNS, connection refused): skip it for every file."""


class _Missing(Exception):
    """The source answered but does not have the file (404 and other 4xx)."""


# --------------------------------------------------------------------------------------------- fetching


def _fetch_http(url: str, part: Path, name: str, progress: DownloadProgress, source: str) -> None:
    """Download ``url`` into ``part``, resuming from the bytes already there when the server allows it."""
    import http.client  # here, not at the top: they cost every command ~50 ms to import, and only this uses them
    import socket
    import urllib.error
    import urllib.request

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "mnistctl"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our partial file is already complete, or bogus: restart it
            part.unlink(missing_ok=True)
            raise _Transient("range not satisfiable; restarting") from exc
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(f"HTTP {exc.code}") from exc
        raise _Missing(f"HTTP {exc.code}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _Transient("timed out") from exc
        if isinstance(reason, socket.gaierror):
            raise _Unreachable("host not found") from exc
        if isinstance(reason, ConnectionRefusedError):
            raise _Unreachable("connection refused") from exc
        raise _Unreachable(str(reason)) from exc
    except TimeoutError as exc:
        raise _Transient("timed out") from exc
    except (ConnectionError, http.client.HTTPException) as exc:
        raise _Transient(type(exc).__name__) from exc
    with resp:
        if have and resp.status == 206:
            mode = "ab"
        else:  # the server ignored the Range header: start again
            mode, have = "wb", 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        progress.start(name, source, None if expected is None else have + expected, have)
        got = 0
        try:
            with open(part, mode, buffering=0) as out:  # unbuffered: what arrived is on disk, for resuming
                while True:
                    block = resp.read1(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    got += len(block)
                    progress.advance(name, len(block))
        except TimeoutError as exc:
            raise _Transient("timed out while reading") from exc
        except (ConnectionError, http.client.HTTPException) as exc:
            raise _Transient(f"connection broke: {type(exc).__name__}") from exc
        if expected is not None and got < expected:
            raise _Transient(f"connection closed after {have + got} of {have + expected} bytes")


def _fetch_file(path: Path, part: Path, name: str, progress: DownloadProgress, source: str) -> None:
    try:
        src = open(path, "rb")  # noqa: SIM115 - closed by the with-block below
    except FileNotFoundError as exc:
        raise _Missing("no such file") from exc
    except IsADirectoryError as exc:
        raise _Missing("is a directory") from exc
    except OSError as exc:
        raise _Missing(exc.strerror or str(exc)) from exc
    with src, open(part, "wb") as out:
        progress.start(name, source, os.fstat(src.fileno()).st_size)
        for block in iter(lambda: src.read(1 << 20), b""):
            out.write(block)
            progress.advance(name, len(block))


def _install_from_gz(gz: Path, spec: MnistFile, rd: Path, keep_gz_as: Path | None) -> str | None:
    """Decompress ``gz`` and install the result as ``rd/spec.name`` if its sha256 matches.

    Returns None on success, else why it was rejected. ``keep_gz_as``: where to move the verified .gz.
    """
    h = hashlib.sha256()
    size = 0
    try:
        with atomic_path(rd / spec.name) as tmp:
            try:
                with gzip.open(gz, "rb") as src, open(tmp, "wb") as out:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        size += len(block)
                        if size > spec.size:
                            break
                        out.write(block)
            except (OSError, EOFError, zlib.error) as exc:
                if getattr(exc, "errno", None) is not None:
                    raise  # a real I/O error (disk full …), not a bad archive
                raise _Rejected(f"not a valid gzip file ({exc})") from exc
            if size != spec.size or h.hexdigest() != spec.sha256:
                raise _Rejected("checksum mismatch")
            if keep_gz_as is not None:
                os.replace(gz, keep_gz_as)
    except _Rejected as exc:
        return str(exc)
    return None


class _Rejected(Exception):
    pass


def _download_one(
    spec: MnistFile,
    rd: Path,
    sources: list[Source],
    progress: DownloadProgress,
    sleep: Callable[[float], None],
    force: bool,
) -> FileResult:
    target = rd / spec.name
    gz = rd / spec.gz_name
    result = FileResult(spec.name, "failed", path=str(target))

    # A verified .gz left by an earlier run that stopped before the raw file was in place.
    if not force and gz.exists() and _install_from_gz(gz, spec, rd, None) is None:
        result.status, result.source = "downloaded", str(gz)
    else:
        for source in sources:
            if source.dead:
                result.tried.append(f"{source.spec} ({source.dead})")
                continue
            why = _from_source(source, spec, rd, progress, sleep)
            if why is None:
                result.status, result.source = "downloaded", source.location(spec)
                break
            result.tried.append(f"{source.spec} ({why})")
    if result.status != "failed":
        result.bytes = gz.stat().st_size if gz.exists() else None
        result.sha256 = spec.sha256
    progress.finish(spec.name, result.status)
    return result


def _from_source(
    source: Source, spec: MnistFile, rd: Path, progress: DownloadProgress, sleep: Callable[[float], None]
) -> str | None:
    """Fetch ``spec`` from ``source`` and install it; None on success, else why not. A partial download that
    failed on the way is kept for the next run to resume; a complete one that is not the file is deleted."""
    gz, part = rd / spec.gz_name, rd / (spec.gz_name + ".part")
    resumed = source.url is not None and part.exists() and part.stat().st_size > 0
    why = _fetch_from(source, spec, part, progress, sleep)
    if why is not None:
        return why
    why = _install_from_gz(part, spec, rd, gz)
    if why is not None and resumed:
        # The part resumed may have come from a mirror that compresses differently: fetch the whole file once.
        part.unlink(missing_ok=True)
        why = _fetch_from(source, spec, part, progress, sleep) or _install_from_gz(part, spec, rd, gz)
    if why is not None and (why == "checksum mismatch" or why.startswith("not a valid gzip")):
        part.unlink(missing_ok=True)
    return why


def _fetch_from(
    source: Source, spec: MnistFile, part: Path, progress: DownloadProgress, sleep: Callable[[float], None]
) -> str | None:
    """Fetch one file from one source into ``part``; return None on success, else the reason it failed."""
    where = source.location(spec)
    if source.directory is not None:  # a local copy: nothing to resume, so never leave a partial one
        part.unlink(missing_ok=True)
        try:
            _fetch_file(Path(where), part, spec.name, progress, source.spec)
        except _Missing as exc:
            return str(exc)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return None
    delay = BACKOFF_S
    for attempt in range(1, RETRIES + 1):
        try:
            _fetch_http(where, part, spec.name, progress, source.spec)
            return None
        except _Unreachable as exc:
            source.dead = str(exc)
            return str(exc)
        except _Missing as exc:  # this mirror lacks it: a part from another one stays, for resuming
            return str(exc)
        except _Transient as exc:
            if attempt == RETRIES:
                return f"{exc}; gave up after {RETRIES} attempts"
            sleep(delay)
            delay *= 2
    return "unreachable"  # pragma: no cover - the loop always returns


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
    results: list[FileResult] = []
    try:
        # Two downloads into one directory take turns instead of corrupting each other.
        with exclusive_lock(rd / ".mnistctl-download.lock", wait=True, what=str(rd)):
            for spec in files:
                target = rd / spec.name
                if not force and is_valid(target, spec):  # its .gz is kept when there is one; it is not needed
                    gz = rd / spec.gz_name
                    gz_size = gz.stat().st_size if gz.exists() else None
                    results.append(FileResult(spec.name, "present", None, gz_size, spec.sha256, str(target)))
                    progress.finish(spec.name, "present")
                    continue
                results.append(_download_one(spec, rd, sources, progress, sleep, force))
    except KeyboardInterrupt:
        raise _interrupted(rd) from None
    failed = [r for r in results if r.status == "failed"]
    if failed:
        names = ", ".join(f"{r.file}.gz" for r in failed)
        tried = list(dict.fromkeys(t for r in failed for t in r.tried)) or ["no source"]
        raise DownloadError(
            f"could not download {len(failed)} MNIST file(s) ({names}); tried {', '.join(tried)}",
            _files_beside_hint(rd.parent.parent, files) or OFFLINE_HINT,
            results,
        )
    return results


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
