"""Where MNIST's .gz files may come from: the user's mirror (an http(s) URL, a file:// URL or a directory),
then the public mirrors; and how a source is shown, with any password in its URL redacted."""

from __future__ import annotations

import base64
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from mnistctl.data.mnist import MnistFile
from mnistctl.errors import UsageError

PUBLIC_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

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


def shorten(text: str, limit: int = 120) -> str:
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
