"""One answer per image, as ``predict`` prints it: a TSV line, a JSON line, or (one image on a terminal) a
panel with the digit, a bar per class and what the network saw; ``--show``'s drawings on stderr.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from mnistctl.report.console import (
    draws_in_colour,
    log,
    path_error,
    print_json,
    progress_enabled,
    show_err,
    show_result,
)
from mnistctl.report.progress import CountProgress
from mnistctl.report.text import encoding_of, has_undecodable, quote_name
from mnistctl.results import NOT_A_DIGIT, DigitReading, NumberReading, ReadFailure, Reading

SHADES = " .:-=+*#%@"


def digit_preview(pixels: Any, color: bool = True) -> Any:
    """The 28×28 input as terminal art.

    In colour each character shows two pixels (an upper half block, foreground over background); without
    colour (a log, a pipe) each pixel is a pair of shading characters.
    """
    from rich.text import Text

    rows = pixels.tolist()
    text = Text()
    if not color:
        for row in rows:
            text.append("".join(SHADES[v * len(SHADES) // 256] * 2 for v in row).rstrip() + "\n")
        return text
    for y in range(0, len(rows), 2):
        for x in range(len(rows[y])):
            top = rows[y][x]
            bottom = rows[y + 1][x] if y + 1 < len(rows) else 0
            text.append("▀", style=f"rgb({top},{top},{top}) on rgb({bottom},{bottom},{bottom})")
        text.append("\n")
    return text


def digit_panel(path: str, reading: DigitReading, show_preview: bool = True) -> Any:
    """One image's answer: the digit, a bar per class, and what the network saw."""
    from rich.columns import Columns
    from rich.panel import Panel
    from rich.table import Table

    bars = Table.grid(padding=(0, 1))
    bars.add_column(justify="right")
    bars.add_column()
    bars.add_column(justify="right")
    for digit, p in enumerate(reading.probabilities):
        style = "bold green" if digit == reading.digit else "cyan"
        bars.add_row(str(digit), f"[{style}]{'█' * _bar_length(p)}[/]", f"{p:.4f}")
    if reading.not_a_digit is not None:
        style = "bold yellow" if reading.reason == NOT_A_DIGIT else "cyan"
        bars.add_row("?", f"[{style}]{'█' * _bar_length(reading.not_a_digit)}[/]", f"{reading.not_a_digit:.4f}")
    body: Any = bars
    if show_preview and reading.pixels is not None:
        body = Columns([digit_preview(reading.pixels, draws_in_colour("out")), bars], padding=(0, 3))
    title = f"[bold]{reading.digit}[/] ({reading.confidence:.2%})"
    if reading.digit is None:
        title = f"[bold yellow]{reading.reason}[/] (likeliest digit {reading.top_digit}: {reading.confidence:.2%})"
    return Panel(body, title=title, subtitle=_shown_path(path), expand=False)


def number_panel(path: str, number: NumberReading) -> Any:
    """A number: each digit the network saw, side by side, with its reading under it."""
    from rich.columns import Columns
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    color = draws_in_colour("out")
    cells = []
    for d in number.digits:
        sure = d.digit is not None and d.confidence >= 0.9
        caption = Text(f"{d.shown} ({d.confidence:.0%})", style="bold green" if sure else "yellow")
        cells.append(Group(digit_preview(d.pixels, color), caption) if d.pixels is not None else caption)
    title = f"[bold]{number.text}[/] (lowest {number.confidence:.2%})"
    return Panel(Columns(cells, padding=(0, 2)), title=title, subtitle=_shown_path(path), expand=False)


def _bar_length(p: float) -> int:
    return round(p * 30) if math.isfinite(p) else 0  # a broken model's NaN draws no bar (and "nan" beside it)


def _shown_path(path: str) -> Any:
    """A panel's subtitle: the name as the TSV line writes it, as Rich Text (no markup, no emoji codes)."""
    from rich.text import Text

    return Text(quote_name(path, encoding_of(sys.stdout)))


def _tsv_path(path: str) -> str:
    """The first column of a result line: the name escaped (quote_name), so that it is one field of one line."""
    return quote_name(path, encoding_of(sys.stdout))


def _json_path(path: str) -> dict[str, Any]:
    """The name in a JSON line: as it is, JSON escaping what needs it. A name whose bytes are not UTF-8 cannot be
    a JSON string: it is written as quote_name writes it, and ``"path_escaped": true`` says so."""
    if has_undecodable(path):
        return {"path": quote_name(path), "path_escaped": True}
    return {"path": path}


def digit_line(path: str, reading: DigitReading, top_k: int = 0) -> str:
    """``path<TAB>digit<TAB>confidence`` (``?`` for a digit declined, beside the likeliest digit's probability),
    then the next ``top_k`` digits and probabilities."""
    fields = [_tsv_path(path), reading.shown, f"{reading.confidence:.4f}"]
    for d in reading.runners_up(top_k) if top_k else ():
        fields += [str(d), f"{reading.probabilities[d]:.4f}"]
    return "\t".join(fields)


def number_line(path: str, number: NumberReading) -> str:
    """``path<TAB>number<TAB>confidence`` (the least confident digit's)."""
    return "\t".join([_tsv_path(path), number.text, f"{number.confidence:.4f}"])


def result_json(path: str, result: DigitReading | NumberReading, top_k: int = 0) -> dict[str, Any]:
    """A JSON line: the path, then exactly the result's ``to_dict()``."""
    return {**_json_path(path), **result.to_dict(top_k)}


def _print_result(path: str, result: DigitReading | NumberReading, json_out: bool, top_k: int) -> None:
    """One image's answer as a line (or JSON line) on stdout, flushed: pipelines see it as soon as it is known."""
    if json_out:
        print_json(result_json(path, result, top_k))
        return
    line = number_line(path, result) if isinstance(result, NumberReading) else digit_line(path, result, top_k)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _previews(result: DigitReading | NumberReading) -> Any:
    """What the network saw for ``--show``: the digit, or each digit of a number side by side (wrapping as the
    terminal's width demands), in colour where the terminal draws it, else in shading characters."""
    from rich.columns import Columns

    colour = draws_in_colour("err")
    digits = result.digits if isinstance(result, NumberReading) else (result,)
    drawings = [digit_preview(d.pixels, colour) for d in digits]
    return drawings[0] if len(drawings) == 1 else Columns(drawings, padding=(0, 2))


def print_predictions(
    paths: Sequence[str], results: Iterable[Reading], *, json_out: bool, top_k: int, panel: bool, show: bool,
    quiet: bool,
) -> int:  # fmt: skip
    """Print each file's result as it arrives — a line, a JSON line, or (one image on a terminal) a panel — and
    each failed file as one error line on stderr; return how many failed."""
    progress = CountProgress("predicting", len(paths)) if len(paths) > 1 and progress_enabled(quiet) else None
    failed = 0
    hinted = False
    try:
        for path, result in zip(paths, results, strict=True):
            if progress:
                progress.advance()
            if isinstance(result, DigitReading) and result.several_digits and not hinted:
                hinted = True  # once a run: the hint, not a complaint per file
                log(f"{quote_name(path)} looks like several digits: pass --multi to read it as a number.", quiet=quiet)
            if isinstance(result, ReadFailure):
                failed += 1
                path_error(path, result.error)
            elif panel:
                number = isinstance(result, NumberReading)
                show_result(number_panel(path, result) if number else digit_panel(path, result))
            else:
                _print_result(path, result, json_out, top_k)
                if show:
                    show_err(_previews(result))
    finally:
        if progress:
            progress.stop()
    return failed
