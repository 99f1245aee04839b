"""Fetching MNIST: sources tried in order, resumable HTTP, verification of the decompressed content, atomic
install, and a lock so that two downloads into one directory take turns. Never imports torch."""

from __future__ import annotations

import base64
import contextlib
import errno
import gzip
import hashlib
import os
import re
import stat
import time
import urllib.parse
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mnistctl.data import mnist
from mnistctl.data.mnist import MnistFile, files_present, is_valid, raw_dir
from mnistctl.errors import Interrupted, MnistctlError, UsageError
from mnistctl.fsutil import atomic_file, describe_os_error, exclusive_lock

PUBLIC_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

TIMEOUT_S = 10.0  # connect and per-read timeout of one HTTP request
RETRIES = 3  # attempts per file and source for transient failures (timeouts, resets, 5xx)
BACKOFF_S = 0.5  # first wait between attempts; doubles each time
DEADLINE_S = 600.0  # most time one file may take from one source, all attempts together (a drip-feed never ends)
CHUNK = 1 << 16
# Opening flags that keep a planted symlink or FIFO from redirecting or blocking a download (none on Windows).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # a partial file then only takes space
OFFLINE_HINT = (
    "point --mirror or MNISTCTL_MIRROR at a directory, file:// URL or http(s) URL that holds the four "
    "MNIST .gz files (e.g. --mirror ~/Downloads/mnist)"
)


# --------------------------------------------------------------------------------------------- sources

MIRROR_HINT = "use an http(s):// URL, a file:// URL or a directory path with --mirror (or MNISTCTL_MIRROR)"
# scheme://USERINFO@host: the user information runs to the last "@" before the path, as urlsplit reads it.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")


def redact(url: str) -> str:
    """``url`` as every message and result shows a source: ``user:PASSWORD@`` as ``user:***@``, and a user name
    alone as ``***@``, since a name with no password is the secret itself (``https://TOKEN@host/``)."""
    found = _USERINFO.match(url)
    if found is None:
        return url
    user, colon, _ = found.group(2).partition(":")
    return f"{found.group(1)}{user + ':***' if colon else '***'}@{url[found.end() :]}"


def _shorten(text: str, limit: int = 120) -> str:
    """A URL from a server as it goes into a one-line error: a hostile one may be 64 kB long."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Source:
    """A place the .gz files may be fetched from: an http(s) base URL or a local directory."""

    spec: str = field(repr=False)  # as given, so it may hold a password: show ``shown`` instead
    url: str | None = None  # the base URL to fetch from, without its user:password
    directory: Path | None = None
    dead: str | None = None  # why this source is skipped for the remaining files
    auth: str | None = field(default=None, repr=False)  # the Authorization header the URL's user:password give

    @classmethod
    def parse(cls, spec: str) -> Source:
        shown = redact(spec)
        try:
            parsed = urllib.parse.urlsplit(spec)
            parsed.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
        except ValueError as exc:
            raise UsageError(f"the mirror {shown!r} is not a valid URL ({exc})", MIRROR_HINT) from exc
        if parsed.scheme in ("http", "https"):
            if not parsed.hostname:
                raise UsageError(f"the mirror {shown!r} has no host name", MIRROR_HINT)
            return cls(spec, url=_base_url(parsed), auth=_basic_auth(parsed))
        if parsed.scheme == "file":
            from urllib.request import url2pathname

            return cls(spec, directory=Path(url2pathname(parsed.path)))
        if parsed.scheme and len(parsed.scheme) > 1:  # a one-letter scheme is a Windows drive
            raise UsageError(f"unsupported mirror {shown!r}", MIRROR_HINT)
        return cls(spec, directory=Path(spec).expanduser())

    @property
    def shown(self) -> str:
        return redact(self.spec)

    def location(self, f: MnistFile) -> str:
        """Where ``f`` is fetched from (a URL without credentials, or a path)."""
        if self.url is not None:
            return self.url + f.gz_name
        assert self.directory is not None
        return str(self.directory / f.gz_name)

    def shown_location(self, f: MnistFile) -> str:
        """Where ``f`` came from, as results and messages show it: with the user, without the password."""
        if self.url is not None:
            return _with_slash(self.shown) + f.gz_name
        return self.location(f)


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _base_url(parsed: urllib.parse.SplitResult) -> str:
    """The URL without ``user:password@``: urllib would take them for part of the host name."""
    host = parsed.netloc.rpartition("@")[2]
    return _with_slash(urllib.parse.urlunsplit(parsed._replace(netloc=host)))


def _basic_auth(parsed: urllib.parse.SplitResult) -> str | None:
    if parsed.username is None:
        return None
    user = urllib.parse.unquote(parsed.username)
    password = urllib.parse.unquote(parsed.password or "")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


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
    """The source cannot be used at all (no DNS, connection refused): skip it for every file."""


class _TooSlow(_Unreachable):
    """A file did not arrive within DEADLINE_S (a server that drips bytes): skip the source for every file."""


class _Missing(Exception):
    """The source answered but does not have the file (404 and other 4xx, a redirect we do not follow)."""


class _NotMnist(Exception):
    """What the source sends cannot be MNIST's file (it is far too large): none of it is kept."""


class _WriteFailed(Exception):
    """Writing the partial download failed (a full disk …); ``error`` is the OSError."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


# --------------------------------------------------------------------------------------------- files


def max_gz_size(spec: MnistFile) -> int:
    """The most bytes ``spec`` can take gzipped. Deflate grows incompressible data by a few bytes per 64 kB
    block, so anything larger is not the file, and an endless body is cut off here instead of filling the disk."""
    return spec.size + spec.size // 100 + (1 << 16)


def _not_plain(path: Path) -> MnistctlError:
    """A path the downloader would write or rename over is a symlink (perhaps planted to make it write
    elsewhere) or not a regular file: it is never written through."""
    what = "a symbolic link" if path.is_symlink() else "not a regular file"
    return MnistctlError(f"{path} is {what}, so mnistctl will not write it", "remove it and run the command again")


def _check_plain(path: Path) -> None:
    """Refuse ``path`` unless it is absent or a regular file (checked before writing it or renaming over it)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise _not_plain(path)


def _own_file(path: str, flags: int) -> int:
    """``open``'s opener for the files the downloader creates and reads back: never through a symlink, never
    waiting on a FIFO, and only a regular file. (O_NONBLOCK changes nothing for a regular file.)"""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symlink; a FIFO nobody reads
            raise _not_plain(Path(path)) from None
        raise
    if not _is_regular(fd):
        raise _not_plain(Path(path))
    return fd


def _mirror_file(path: str, flags: int) -> int:
    """``open``'s opener for a file in a local mirror: a symlink to a regular file is fine, but a FIFO (which
    would block), a device such as /dev/zero (which never ends) or a directory is refused."""
    fd = os.open(path, flags | _NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    if not _is_regular(fd):
        raise _Missing("is a directory" if os.path.isdir(path) else "not a regular file")
    return fd


def _is_regular(fd: int) -> bool:
    """Whether ``fd`` is a regular file; closes it when it is not."""
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
    return regular


def _open_part(part: Path, resume: bool):  # noqa: ANN202 - a binary file object
    """The partial download, to append to (``resume``) or created anew with O_EXCL, so that nothing planted
    at that name in between is written through."""
    try:
        if not resume:
            part.unlink(missing_ok=True)
        # Unbuffered: what arrived is on disk, for resuming after a kill, and closing cannot fail on a full disk.
        return open(part, "ab" if resume else "xb", buffering=0, opener=_own_file)  # noqa: SIM115 - caller closes
    except OSError as exc:
        raise _WriteFailed(exc) from exc


def _write(out, block: bytes) -> None:  # noqa: ANN001 - an unbuffered binary file
    """Write all of ``block``: an unbuffered write may write part of it (as a disk fills up)."""
    view = memoryview(block)
    try:
        while view:
            view = view[out.write(view) :]
    except OSError as exc:
        raise _WriteFailed(exc) from exc


# --------------------------------------------------------------------------------------------- fetching


def _fetch_http(source: Source, spec: MnistFile, part: Path, progress: DownloadProgress, deadline: float) -> None:
    """Download ``spec`` from ``source`` into ``part``, resuming from the bytes already there when the server
    allows it; never more than :func:`max_gz_size`, never after ``deadline`` (``time.monotonic()``)."""
    import http.client  # here, not at the top: they cost every command ~50 ms to import, and only this uses them
    import socket
    import urllib.error
    import urllib.request

    _check_deadline(deadline)
    limit = max_gz_size(spec)
    have = part.stat().st_size if part.exists() else 0  # a regular file: _download_one checked it
    if have >= limit:  # not a part of MNIST's file: start again
        part.unlink()
        have = 0
    request = urllib.request.Request(source.location(spec), headers={"User-Agent": "mnistctl"})
    if source.auth:
        request.add_unredirected_header("Authorization", source.auth)  # never sent on to where a redirect leads
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        resp = _opener().open(request, timeout=max(0.1, min(TIMEOUT_S, deadline - time.monotonic())))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our partial file is already complete, or bogus: restart it
            part.unlink(missing_ok=True)
            raise _Transient("range not satisfiable; restarting") from exc
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(f"HTTP {exc.code}") from exc
        raise _Missing(_http_error(exc)) from exc
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
    except (ValueError, http.client.InvalidURL) as exc:  # a redirect to a URL that cannot be parsed
        raise _Missing(f"redirected to an invalid URL: {_shorten(str(exc))}") from exc
    except (ConnectionError, http.client.HTTPException) as exc:
        raise _Transient(type(exc).__name__) from exc
    with resp:
        resume = bool(have) and resp.status == 206  # else the server ignored the Range header: start again
        have = have if resume else 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isascii() and length.isdigit() else None  # not "²"
        if expected is not None and have + expected > limit:
            raise _NotMnist(f"the server sends {have + expected:,} bytes, more than {spec.gz_name} can be")
        progress.start(spec.name, source.shown, None if expected is None else have + expected, have)
        with _open_part(part, resume) as out:
            got = _receive(resp, out, spec, have, deadline, progress)
        if expected is not None and got < expected:
            raise _Transient(f"connection closed after {have + got} of {have + expected} bytes")


def _receive(resp, out, spec: MnistFile, have: int, deadline: float, progress: DownloadProgress) -> int:  # noqa: ANN001
    """Append the body of ``resp`` to ``out`` (which holds ``have`` bytes); return how many bytes came."""
    import http.client

    limit, got = max_gz_size(spec), 0
    while True:
        _check_deadline(deadline)
        try:
            block = resp.read1(CHUNK)
        except TimeoutError as exc:
            raise _Transient("timed out while reading") from exc
        except (OSError, http.client.HTTPException) as exc:  # resets, TLS cut short (ssl.SSLError), unreachable
            raise _Transient(f"connection broke: {type(exc).__name__}") from exc
        if not block:
            return got
        if have + got + len(block) > limit:  # an endless body, or not MNIST's file: stop before the disk fills
            raise _NotMnist(f"larger than {spec.gz_name} can be: over {limit:,} bytes")
        _write(out, block)
        got += len(block)
        progress.advance(spec.name, len(block))


def _check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise _TooSlow(f"too slow: not complete after {DEADLINE_S:g} s")


def _opener():  # noqa: ANN202 - a urllib.request.OpenerDirector
    """urllib's opener, but following redirects to http(s) only: it would follow one to ftp:// too."""
    import urllib.request

    class Redirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN202, PLR0913
            if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
                fp.close()
                raise _Missing(_unsupported_redirect(newurl))
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(Redirects)


def _http_error(exc) -> str:  # noqa: ANN001 - a urllib.error.HTTPError
    """Why a 3xx or 4xx answer ends this source's try, in words."""
    message = str(exc.msg or "")
    if 300 <= exc.code < 400 and "infinite loop" in message:
        return "redirect loop: the server keeps redirecting"
    if 300 <= exc.code < 400 and "is not allowed" in message:  # urllib's refusal of a redirect to file:// …
        return _unsupported_redirect(exc.filename or "")
    return f"HTTP {exc.code}"


def _unsupported_redirect(url: str) -> str:
    return f"redirected to an unsupported URL {_shorten(redact(url))!r}: only http(s) is followed"


def _copy_file(path: Path, part: Path, spec: MnistFile, progress: DownloadProgress, source: str) -> None:
    """Copy a local mirror's file into ``part``; only a regular file, and only as much as MNIST's can be."""
    limit = max_gz_size(spec)
    try:
        src = open(path, "rb", opener=_mirror_file)  # noqa: SIM115 - closed by the with-block below
    except FileNotFoundError as exc:
        raise _Missing("no such file") from exc
    except IsADirectoryError as exc:
        raise _Missing("is a directory") from exc
    except OSError as exc:
        raise _Missing(exc.strerror or str(exc)) from exc
    with src:
        size = os.fstat(src.fileno()).st_size
        if size > limit:
            raise _NotMnist(f"larger than {spec.gz_name} can be: {size:,} bytes")
        progress.start(spec.name, source, size)
        with _open_part(part, resume=False) as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                if out.tell() + len(block) > limit:  # the file grows while it is copied
                    raise _NotMnist(f"larger than {spec.gz_name} can be: over {limit:,} bytes")
                _write(out, block)
                progress.advance(spec.name, len(block))


def _install_from_gz(gz: Path, spec: MnistFile, rd: Path, keep_gz_as: Path | None) -> str | None:
    """Decompress ``gz`` and install the result as ``rd/spec.name`` if its sha256 matches.

    Returns None on success, else why it was rejected. ``keep_gz_as``: where to move the verified .gz.
    """
    h = hashlib.sha256()
    size = 0
    try:
        with atomic_file(rd / spec.name) as out:  # written on the descriptor that created it, never reopened
            try:
                with open(gz, "rb", opener=_own_file) as packed, gzip.open(packed, "rb") as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        size += len(block)
                        if size > spec.size:
                            break
                        out.write(block)
                out.flush()  # a full disk says so now, before the .gz is moved below
            except (OSError, EOFError, zlib.error) as exc:
                if getattr(exc, "errno", None) is not None:
                    raise  # a real I/O error (disk full …), not a bad archive
                raise _Rejected(f"not a valid gzip file ({exc})") from exc
            if size != spec.size or h.hexdigest() != spec.sha256:
                raise _Rejected("checksum mismatch")
            _check_plain(rd / spec.name)  # atomic_file renames over it next
            if keep_gz_as is not None:
                _check_plain(keep_gz_as)
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
    for path in (target, gz, _part_path(rd, spec)):  # each is written or renamed over below
        _check_plain(path)

    # A verified .gz left by an earlier run that stopped before the raw file was in place.
    if not force and gz.exists() and _install_from_gz(gz, spec, rd, None) is None:
        result.status, result.source = "downloaded", str(gz)
    else:
        for source in sources:
            if source.dead:
                result.tried.append(f"{source.shown} ({source.dead})")
                continue
            why = _from_source(source, spec, rd, progress, sleep)
            if why is None:
                result.status, result.source = "downloaded", source.shown_location(spec)
                break
            result.tried.append(f"{source.shown} ({why})")
    if result.status != "failed":
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


def _install_part(part: Path, spec: MnistFile, rd: Path, gz: Path) -> str | None:
    try:
        return _install_from_gz(part, spec, rd, gz)
    except MnistctlError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
            part.unlink(missing_ok=True)  # give back its space; the next run fetches it again
        raise


def _fetch_from(
    source: Source, spec: MnistFile, part: Path, progress: DownloadProgress, sleep: Callable[[float], None]
) -> str | None:
    """Fetch one file from one source into ``part``; return None on success, else the reason it failed."""
    try:
        if source.directory is not None:
            return _fetch_local(source, spec, part, progress)
        return _fetch_remote(source, spec, part, progress, sleep)
    except _NotMnist as exc:  # what came cannot be the file: keep none of it
        part.unlink(missing_ok=True)
        return str(exc)
    except _WriteFailed as exc:  # a full disk …: a part whose writing failed is of no use, and takes space
        part.unlink(missing_ok=True)
        raise describe_os_error(exc.error, part.with_name(spec.gz_name)) from exc.error


def _fetch_local(source: Source, spec: MnistFile, part: Path, progress: DownloadProgress) -> str | None:
    """A local copy: nothing to resume, so never leave a partial one."""
    part.unlink(missing_ok=True)
    try:
        _copy_file(Path(source.location(spec)), part, spec, progress, source.shown)
    except _Missing as exc:
        return str(exc)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return None


def _fetch_remote(
    source: Source, spec: MnistFile, part: Path, progress: DownloadProgress, sleep: Callable[[float], None]
) -> str | None:
    """Fetch over HTTP with retries, all within DEADLINE_S: a partial file stays, for resuming."""
    deadline = time.monotonic() + DEADLINE_S
    delay = BACKOFF_S
    for attempt in range(1, RETRIES + 1):
        try:
            _fetch_http(source, spec, part, progress, deadline)
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
