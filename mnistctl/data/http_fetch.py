"""Fetching one file over HTTP: resumable (Range), capped at what the file can be, within a deadline for all
attempts together, with retries and backoff for transient failures. urllib and http.client are imported in
the functions that use them: they cost every command ~50 ms to import, and only a download needs them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnistctl.data.mnist import MnistFile
from mnistctl.data.sources import Source, redact, shorten
from mnistctl.data.transfer import (
    DownloadProgress,
    Missing,
    NotMnist,
    TooSlow,
    Transient,
    Unreachable,
    max_gz_size,
    open_part,
    write_all,
)

TIMEOUT_S = 10.0  # connect and per-read timeout of one HTTP request
RETRIES = 3  # attempts per file and source for transient failures (timeouts, resets, 5xx)
BACKOFF_S = 0.5  # first wait between attempts; doubles each time
DEADLINE_S = 600.0  # most time one file may take from one source, all attempts together (a drip-feed never ends)
CHUNK = 1 << 16


def fetch_remote(
    source: Source, spec: MnistFile, part: Path, progress: DownloadProgress, sleep: Callable[[float], None]
) -> str | None:
    """Fetch over HTTP with retries, all within DEADLINE_S; None on success, else why not. A partial file
    stays, for resuming. A source that cannot be reached is marked dead, for the remaining files."""
    deadline = time.monotonic() + DEADLINE_S
    delay = BACKOFF_S
    for attempt in range(1, RETRIES + 1):
        try:
            fetch_http(source, spec, part, progress, deadline)
            return None
        except Unreachable as exc:
            source.dead = str(exc)
            return str(exc)
        except Missing as exc:  # this mirror lacks it: a part from another one stays, for resuming
            return str(exc)
        except Transient as exc:
            if attempt == RETRIES:
                return f"{exc}; gave up after {RETRIES} attempts"
            sleep(delay)
            delay *= 2
    return "unreachable"  # pragma: no cover - the loop always returns


def fetch_http(source: Source, spec: MnistFile, part: Path, progress: DownloadProgress, deadline: float) -> None:
    """Download ``spec`` from ``source`` into ``part``, resuming from the bytes already there when the server
    allows it; never more than :func:`max_gz_size`, never after ``deadline`` (``time.monotonic()``)."""
    check_deadline(deadline)
    limit = max_gz_size(spec)
    have = part.stat().st_size if part.exists() else 0  # a regular file: the caller checked it
    if have >= limit:  # not a part of MNIST's file: start again
        part.unlink()
        have = 0
    with _open(_request(source, spec, have), have, part, deadline) as resp:
        resume = bool(have) and resp.status == 206  # else the server ignored the Range header: start again
        have = have if resume else 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isascii() and length.isdigit() else None  # not "²"
        if expected is not None and have + expected > limit:
            raise NotMnist(f"the server sends {have + expected:,} bytes, more than {spec.gz_name} can be")
        progress.start(spec.name, source.shown, None if expected is None else have + expected, have)
        with open_part(part, resume) as out:
            got = _receive(resp, out, spec, have, deadline, progress)
        if expected is not None and got < expected:
            raise Transient(f"connection closed after {have + got} of {have + expected} bytes")


def _request(source: Source, spec: MnistFile, have: int) -> Any:
    """The GET for ``spec``: credentials never sent on to where a redirect leads; a Range when resuming."""
    import urllib.request

    request = urllib.request.Request(source.location(spec), headers={"User-Agent": "mnistctl"})
    if source.auth:
        request.add_unredirected_header("Authorization", source.auth)
    if have:
        request.add_header("Range", f"bytes={have}-")
    return request


def _open(request: Any, have: int, part: Path, deadline: float) -> Any:
    """The server's answer to ``request``; each way it can fail as the kind of failure it is (transient,
    unreachable source, missing file), so that :func:`fetch_remote` knows whether to retry."""
    import http.client
    import socket
    import urllib.error

    try:
        return _opener().open(request, timeout=max(0.1, min(TIMEOUT_S, deadline - time.monotonic())))
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our partial file is already complete, or bogus: restart it
            part.unlink(missing_ok=True)
            raise Transient("range not satisfiable; restarting") from exc
        if exc.code >= 500 or exc.code == 429:
            raise Transient(f"HTTP {exc.code}") from exc
        raise Missing(_http_error(exc)) from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise Transient("timed out") from exc
        if isinstance(reason, socket.gaierror):
            raise Unreachable("host not found") from exc
        if isinstance(reason, ConnectionRefusedError):
            raise Unreachable("connection refused") from exc
        raise Unreachable(str(reason)) from exc
    except TimeoutError as exc:
        raise Transient("timed out") from exc
    except (ValueError, http.client.InvalidURL) as exc:  # a redirect to a URL that cannot be parsed
        raise Missing(f"redirected to an invalid URL: {shorten(str(exc))}") from exc
    except (ConnectionError, http.client.HTTPException) as exc:
        raise Transient(type(exc).__name__) from exc


def _receive(resp, out, spec: MnistFile, have: int, deadline: float, progress: DownloadProgress) -> int:  # noqa: ANN001
    """Append the body of ``resp`` to ``out`` (which holds ``have`` bytes); return how many bytes came."""
    import http.client

    limit, got = max_gz_size(spec), 0
    while True:
        check_deadline(deadline)
        try:
            block = resp.read1(CHUNK)
        except TimeoutError as exc:
            raise Transient("timed out while reading") from exc
        except (OSError, http.client.HTTPException) as exc:  # resets, TLS cut short (ssl.SSLError), unreachable
            raise Transient(f"connection broke: {type(exc).__name__}") from exc
        if not block:
            return got
        if have + got + len(block) > limit:  # an endless body, or not MNIST's file: stop before the disk fills
            raise NotMnist(f"larger than {spec.gz_name} can be: over {limit:,} bytes")
        write_all(out, block)
        got += len(block)
        progress.advance(spec.name, len(block))


def check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise TooSlow(f"too slow: not complete after {DEADLINE_S:g} s")


def _opener():  # noqa: ANN202 - a urllib.request.OpenerDirector
    """urllib's opener, but following redirects to http(s) only: it would follow one to ftp:// too."""
    import urllib.parse
    import urllib.request

    class Redirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN202, PLR0913
            if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
                fp.close()
                raise Missing(_unsupported_redirect(newurl))
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
    return f"redirected to an unsupported URL {shorten(redact(url))!r}: only http(s) is followed"
