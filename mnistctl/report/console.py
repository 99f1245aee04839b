"""The two consoles and the plain writes to them: results, JSON, text, log lines and the one-line errors.

Every write to stdout or stderr in mnistctl goes through here, so that what reaches a terminal is escaped the
same way everywhere and results never mix with progress or logs.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from mnistctl.report.text import encoding_of, has_undecodable, is_utf8, quote_name, visible

if TYPE_CHECKING:
    from rich.console import Console


# Results go to stdout (``out``); progress, logs, warnings and errors go to stderr (``err``). Both are made on
# first use, so that a command printing only plain lines (``predict`` in a pipe) never imports Rich (~60 ms).
_consoles: dict[str, Console] = {}


def _console(name: str) -> Console:
    if not _consoles:
        from rich.console import Console

        out = Console(highlight=False)
        if not out.is_terminal and "COLUMNS" not in os.environ:
            out.width = 160  # a file or pipe has no width: don't squeeze tables into 80 columns
        _consoles.update(out=out, err=Console(stderr=True, highlight=False))
    return _consoles[name]


def show_result(renderable: Any) -> None:
    """A result (table, panel, marked-up line) on stdout."""
    _console("out").print(renderable)


def show_err(renderable: Any) -> None:
    """A picture or panel for the user on stderr (never a result)."""
    _console("err").print(renderable)


def is_terminal(name: str) -> bool:
    """Whether ``out`` or ``err`` is a terminal. ``isatty()`` is asked first: in a pipe the answer is known
    without importing Rich, whose console then has the last word (e.g. for Jupyter)."""
    stream = sys.stdout if name == "out" else sys.stderr
    return stream.isatty() and _console(name).is_terminal


def draws_in_colour(name: str) -> bool:
    """Whether pictures on ``out`` or ``err`` may use colour: a terminal, and neither ``NO_COLOR`` nor a terminal
    without colours (``TERM=dumb``). Elsewhere they are drawn in shading characters."""
    console = _console(name)
    return console.is_terminal and not console.no_color and console.color_system is not None


def progress_enabled(quiet: bool) -> bool:
    """Progress bars only when stderr is a terminal and the user did not ask for quiet."""
    return not quiet and is_terminal("err")


def print_json(obj: Any) -> None:
    """One JSON document on stdout, unwrapped, so that ``jq`` and friends can read it.

    Always valid JSON in UTF-8: NaN and infinities are written as null; a string holding bytes that are not
    UTF-8 (a file name) is written as :func:`quote_name` writes it; control characters that JSON itself leaves
    raw (DEL, C1, line separators, bidirectional controls) as ``\\uXXXX``, so that the decoded text is the same
    but a terminal showing the JSON obeys none of them. Where stdout is not UTF-8, the output is all ASCII.
    """
    utf8 = is_utf8(encoding_of(sys.stdout))
    text = json.dumps(_json_safe(obj), ensure_ascii=not utf8, allow_nan=False)
    if utf8:
        text = _JSON_RAW_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


_JSON_RAW_CONTROLS = re.compile(r"[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None and undecodable strings (lone surrogates) escaped."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return quote_name(value) if has_undecodable(value) else value
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def print_text(text: str) -> None:
    """Plain text (e.g. CSV) on stdout, as it is."""
    sys.stdout.write(text)
    sys.stdout.flush()


def log(message: str, *, quiet: bool = False) -> None:
    """An informational line on stderr (silenced by --quiet); control characters in it are shown, not obeyed."""
    if not quiet:
        shown = "\n".join(visible(line, encoding_of(sys.stderr)) for line in message.split("\n"))
        _console("err").print(shown, markup=False, emoji=False, soft_wrap=True)


def error_line(message: str) -> None:
    """The one line a failed command prints: ``Error: <what is wrong> — <what to do>``."""
    from rich.text import Text

    line = Text.assemble(("Error:", "bold red"), " ", _one_line(message))  # Text: no markup, no :emoji: codes
    _console("err").print(line, soft_wrap=True)


def path_error(path: str, problem: str, hint: str = "this file was skipped") -> None:
    """``Error: <path>: <problem> — <hint>`` for one input, its name written as in the results (quote_name)."""
    error_line(f"{quote_name(path, encoding_of(sys.stderr))}: {problem} — {hint}")


def _one_line(text: str) -> str:
    """One line, whatever the message holds: line breaks become spaces, other control characters visible."""
    return visible(_LINE_BREAKS.sub(" ", text.strip()), encoding_of(sys.stderr))


_LINE_BREAKS = re.compile(r"[ \t]*[\r\n]+[ \t]*")
