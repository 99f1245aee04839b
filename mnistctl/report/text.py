"""Text as mnistctl writes it: names escaped onto one printable line, control characters shown, not obeyed.

Every module that writes a name or a message from outside (a path, a URL, an exception's text) goes through
:func:`quote_name` or :func:`visible`, so that no file name can split a result line or drive the terminal.
"""

from __future__ import annotations

import codecs
import functools
import re
import sys
from typing import Any


def escape(text: str) -> str:
    """``text`` shown literally by Rich (no markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


# A file name may hold anything but "/" and NUL. Written raw it could split a TSV record (tab, newline), move the
# cursor or change colours (ESC, C1 controls), reorder what follows it (bidirectional controls), or not be
# writable at all (bytes that are not UTF-8, which os.fsdecode keeps as lone surrogates U+DC80-U+DCFF). So every
# name is written escaped, as GNU tools do with --quoting-style=escape (but in hex): see quote_name.
_UNSAFE = r"\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_NAME_ESCAPED = re.compile(rf"[\\{_UNSAFE}]")
_TEXT_ESCAPED = re.compile(rf"[{_UNSAFE}]")
_UNDECODABLE = re.compile(r"[\ud800-\udfff]")  # the bytes os.fsdecode could not decode
_NAMED_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n"}


def quote_name(name: str, encoding: str | None = None) -> str:
    r"""``name`` (a path as ``os.fsdecode`` gives it) as printable text on one line, as mnistctl writes names.

    ``\`` becomes ``\\``, a tab ``\t``, a newline ``\n``; every other control character (U+0000-U+001F,
    DEL, U+0080-U+009F), each byte that is not UTF-8, U+2028/U+2029 and the bidirectional controls (U+061C,
    U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) become ``\xHH``, one for each byte the character has in the
    name; so do the characters ``encoding`` (the stream's) cannot write. Reading the escapes back as C escapes
    gives the name's bytes exactly. Every other name is written as it is; the empty name as ``''``.
    """
    return _escape(name, _NAME_ESCAPED, encoding) if name else "''"


def visible(text: str, encoding: str | None = None) -> str:
    """``text`` with its control characters shown as :func:`quote_name` shows them, backslashes left as they
    are: for messages and table cells, which a person reads and no program splits."""
    return _escape(text, _TEXT_ESCAPED, encoding)


def _escape(text: str, pattern: re.Pattern[str], encoding: str | None) -> str:
    text = pattern.sub(_escape_match, text)
    if encoding and not is_utf8(encoding):
        try:
            text.encode(encoding)
        except UnicodeEncodeError:  # e.g. "é" on an ASCII terminal: its bytes, escaped
            text = "".join(ch if _encodes(ch, encoding) else _byte_escapes(ch) for ch in text)
        except LookupError:
            pass
    return text


def _escape_match(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED_ESCAPES.get(ch) or _byte_escapes(ch)


def _byte_escapes(ch: str) -> str:
    """``\\xHH`` for each byte of ``ch`` in a file name (a lone surrogate from os.fsdecode: the byte it stands for)."""
    try:
        data = ch.encode(sys.getfilesystemencoding(), "surrogateescape")
    except UnicodeEncodeError:
        data = ch.encode("utf-8", "surrogatepass")
    return "".join(f"\\x{b:02x}" for b in data)


def _encodes(ch: str, encoding: str) -> bool:
    try:
        ch.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def has_undecodable(text: str) -> bool:
    """Whether ``text`` holds bytes that are not UTF-8 (lone surrogates): it cannot be written as JSON as it is."""
    return _UNDECODABLE.search(text) is not None


def encoding_of(stream: Any) -> str | None:
    """The encoding ``stream`` writes (None: one that takes str as it is, such as StringIO)."""
    return getattr(stream, "encoding", None)


@functools.lru_cache(maxsize=8)
def is_utf8(encoding: str | None) -> bool:
    """Whether ``encoding`` writes every character (None: a stream that takes str as it is, e.g. StringIO)."""
    if encoding is None:
        return True
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False
