"""Rendering: Rich consoles, progress, tables and JSON. It formats what the core computed; it computes nothing."""

from __future__ import annotations

import codecs
import contextlib
import functools
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistctl.data.download import DownloadProgress, FileResult
from mnistctl.fsutil import atomic_path

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.table import Table

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


def _table(*args: Any, **kwargs: Any) -> Table:
    from rich.table import Table

    return Table(*args, **kwargs)


def _plain(text: Any) -> Any:
    """A table cell or title shown literally on stdout (a path, a URL, a name from outside): Rich Text, so that
    no ``[tag]`` is taken for markup nor ``:name:`` for an emoji, with control characters visible."""
    from rich.text import Text

    return Text(visible(str(text), _encoding(sys.stdout)))


def _progress(*columns: str, transient: bool, transfer: bool = False) -> Progress:
    """A Rich progress display on stderr: text columns (format strings) around a bar, then bytes and speed
    (``transfer``), then the time remaining."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    head, *rest = columns
    parts = [TextColumn(head), BarColumn(), *(TextColumn(c) for c in rest)]
    if transfer:
        parts += [DownloadColumn(), TransferSpeedColumn()]
    # Rich redirects sys.stdout into the display by default: results would then land on the terminal instead of
    # the file or pipe stdout names. Only when stdout is a terminal too do its lines belong above the bars.
    return Progress(
        *parts,
        TimeRemainingColumn(),
        console=_console("err"),
        transient=transient,
        redirect_stdout=sys.stdout.isatty(),
    )


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
    utf8 = _is_utf8(_encoding(sys.stdout))
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
        return quote_name(value) if _UNDECODABLE.search(value) else value
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
        shown = "\n".join(visible(line, _encoding(sys.stderr)) for line in message.split("\n"))
        _console("err").print(shown, markup=False, emoji=False, soft_wrap=True)


def error_line(message: str) -> None:
    """The one line a failed command prints: ``Error: <what is wrong> — <what to do>``."""
    from rich.text import Text

    line = Text.assemble(("Error:", "bold red"), " ", _one_line(message))  # Text: no markup, no :emoji: codes
    _console("err").print(line, soft_wrap=True)


def path_error(path: str, problem: str, hint: str = "this file was skipped") -> None:
    """``Error: <path>: <problem> — <hint>`` for one input, its name written as in the results (quote_name)."""
    error_line(f"{quote_name(path, _encoding(sys.stderr))}: {problem} — {hint}")


def escape(text: str) -> str:
    """``text`` shown literally by Rich (no markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _one_line(text: str) -> str:
    """One line, whatever the message holds: line breaks become spaces, other control characters visible."""
    return visible(_LINE_BREAKS.sub(" ", text.strip()), _encoding(sys.stderr))


_LINE_BREAKS = re.compile(r"[ \t]*[\r\n]+[ \t]*")

# --------------------------------------------------------------------------------------------- names

# A file name may hold anything but "/" and NUL. Written raw it could split a TSV record (tab, newline), move the
# cursor or change colours (ESC, C1 controls), reorder what follows it (bidirectional controls), or not be
# writable at all (bytes that are not UTF-8, which os.fsdecode keeps as lone surrogates U+DC80-U+DCFF). So every
# name is written escaped, as GNU tools do with --quoting-style=escape (but in hex): see quote_name.
_UNSAFE = r"\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_NAME_ESCAPED = re.compile(rf"[\\{_UNSAFE}]")
_TEXT_ESCAPED = re.compile(rf"[{_UNSAFE}]")
_UNDECODABLE = re.compile(r"[\ud800-\udfff]")
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
    if encoding and not _is_utf8(encoding):
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


def _encoding(stream: Any) -> str | None:
    return getattr(stream, "encoding", None)


@functools.lru_cache(maxsize=8)
def _is_utf8(encoding: str | None) -> bool:
    """Whether ``encoding`` writes every character (None: a stream that takes str as it is, e.g. StringIO)."""
    if encoding is None:
        return True
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


# --------------------------------------------------------------------------------------------- download


class RichDownloadProgress(DownloadProgress):
    """Per-file bars with bytes, speed and ETA on stderr."""

    def __init__(self) -> None:
        self.progress = _progress("{task.description}", transient=False, transfer=True)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichDownloadProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, name: str, source: str, total: int | None, done: int = 0) -> None:
        label = f"{name}.gz"
        if name in self.tasks:
            self.progress.reset(self.tasks[name], total=total, completed=done, description=label)
        else:
            self.tasks[name] = self.progress.add_task(label, total=total, completed=done)

    def advance(self, name: str, nbytes: int) -> None:
        self.progress.advance(self.tasks[name], nbytes)

    def finish(self, name: str, status: str) -> None:
        if name in self.tasks:
            self.progress.update(self.tasks[name], description=f"{name}.gz [{status}]")


@contextlib.contextmanager
def download_progress(quiet: bool) -> Iterator[DownloadProgress]:
    """Per-file bars on a terminal; otherwise a progress receiver that shows nothing."""
    if not progress_enabled(quiet):
        yield DownloadProgress()
        return
    with RichDownloadProgress() as progress:
        yield progress


def download_summary(results: list[FileResult]) -> str:
    if all(r.status == "present" for r in results):
        return f"All {len(results)} MNIST files are already present and verified."
    fetched = sum(r.status == "downloaded" for r in results)
    return f"Fetched and verified {fetched} file(s); all {len(results)} are in place."


def download_table(results: Iterable[FileResult], data_dir: str) -> Table:
    table = _table(title=_plain(f"MNIST files in {data_dir}"), title_justify="left")
    table.add_column("file")
    table.add_column("status")
    table.add_column(".gz size", justify="right")
    table.add_column("source", overflow="fold")
    styles = {"present": "green", "downloaded": "cyan", "failed": "red"}
    for r in results:
        status = f"[{styles.get(r.status, '')}]{r.status}[/]"
        table.add_row(_plain(r.file), status, _human_bytes(r.bytes), _plain(r.source or "-"))
    return table


# --------------------------------------------------------------------------------------------- info


def info_tables(info: Mapping[str, Any]) -> list[Table]:
    general = _table(show_header=False, title="mnistctl info", title_justify="left")
    general.add_column("key", style="bold")
    general.add_column("value", overflow="fold")
    for key in ("mnistctl", "python", "platform", "torch", "torchvision", "threads", "auto_device", "precision"):
        value = info.get(key)
        general.add_row(key.replace("_", " "), _plain("not installed" if value is None else value))
    data_state = "all files valid" if info["data_ok"] else "incomplete"
    general.add_row("data dir", _plain(f"{info['data_dir']} ({data_state})"))
    model = info["model"]
    general.add_row("model", _plain(f"{model['path']} ({model['source']})" if model["path"] else model["problem"]))
    dist = info["distributed"]
    general.add_row(
        "distributed",
        _plain(f"rank {dist['rank']} of {dist['world_size']} → {dist['device']} ({dist['backend']}); {dist['rule']}"),
    )

    devices = _table(title="devices", title_justify="left")
    devices.add_column("device")
    devices.add_column("name")
    for row in info["devices"]:
        devices.add_row(_plain(row["device"]), _plain(row["name"]))

    files = _table(title="data files", title_justify="left")
    files.add_column("file")
    files.add_column("state")
    styles = {"present": "green", "corrupt": "bold red", "missing": "red"}
    for f in info["data_files"]:
        files.add_row(_plain(f["name"]), f"[{styles[f['state']]}]{f['state']}[/]")
    return [general, devices, files]


# --------------------------------------------------------------------------------------------- train


class RichTrainProgress:
    """Training progress on stderr: an overall bar and an epoch bar with loss, accuracy, images/s and ETA."""

    shows_batches = True

    def __init__(self, label: str = "") -> None:
        self.label = label or "training"  # the overall bar's name
        self.prefix = f"{label}: " if label else ""  # before each line, as EpochLines writes it
        self.progress = _progress(
            "{task.description}", "{task.completed}/{task.total}", "{task.fields[stats]}", transient=True
        )
        self.overall: TaskID | None = None
        self.epoch_task: TaskID | None = None
        self.steps = 0
        self.epochs = 0

    def on_start(self, config: Any, steps_per_epoch: int, start_epoch: int, samples: int, device: str) -> None:
        self.steps, self.epochs = steps_per_epoch, config.epochs
        log(training_header(config, start_epoch, samples, device, self.prefix))
        self.progress.start()
        if config.epochs - start_epoch > 1:  # one epoch to go: its own bar says it all
            self.overall = self.progress.add_task(
                self.label, total=config.epochs * steps_per_epoch, completed=start_epoch * steps_per_epoch, stats=""
            )
        self.epoch_task = self.progress.add_task(
            f"epoch {start_epoch + 1}/{config.epochs}", total=steps_per_epoch, stats="starting"
        )

    def on_batch(self, epoch: int, step: int, loss: float, accuracy: float, images_per_s: float) -> None:
        stats = f"loss {loss:.4f}  acc {accuracy:6.2%}  {images_per_s:,.0f} img/s"
        self.progress.update(self.epoch_task, completed=step, description=f"epoch {epoch}/{self.epochs}", stats=stats)
        if self.overall is not None:
            self.progress.update(self.overall, completed=(epoch - 1) * self.steps + step)

    def on_epoch(self, result: Any) -> None:
        _console("err").print(
            f"{self.prefix}epoch {result.epoch:>3}  train loss {result.train_loss:.4f}  "
            f"test loss {result.test_loss:.4f}  test acc {result.test_accuracy:.2%}  {result.seconds:.1f}s",
            highlight=False,
            markup=False,
        )
        if result.epoch < self.epochs:
            self.progress.reset(
                self.epoch_task, total=self.steps, description=f"epoch {result.epoch + 1}/{self.epochs}"
            )

    def on_end(self) -> None:
        self.progress.stop()


def training_header(config: Any, start_epoch: int, samples: int, device: str, prefix: str = "") -> str:
    """The line a run starts with: what is trained, how, on what."""
    verb = f"resuming after epoch {start_epoch}" if start_epoch else "training"
    return (
        f"{prefix}{verb}: {config.arch}, {config.optimizer} lr {config.lr:g}, batch {config.batch_size}, "
        f"{samples:,} images, {config.epochs} epoch(s), on {device} in {config.precision}"
    )


class EpochLines:
    """Without a terminal: one plain line per finished epoch on stderr (for logs and CI)."""

    def __init__(self, label: str = "") -> None:
        self.prefix = f"{label}: " if label else ""

    def on_start(self, config: Any, steps_per_epoch: int, start_epoch: int, samples: int, device: str) -> None:
        log(training_header(config, start_epoch, samples, device, self.prefix))

    def on_batch(self, *args: Any) -> None: ...

    def on_epoch(self, result: Any) -> None:
        log(
            f"{self.prefix}epoch {result.epoch}: train loss {result.train_loss:.4f}, test loss {result.test_loss:.4f}, "
            f"test accuracy {result.test_accuracy:.2%}, {result.seconds:.1f}s"
        )

    def on_end(self) -> None: ...


class JsonEpochs:
    """``--json``: one JSON object per finished epoch on stdout, as it finishes."""

    def on_start(self, *args: Any) -> None: ...

    def on_batch(self, *args: Any) -> None: ...

    def on_epoch(self, result: Any) -> None:
        from dataclasses import asdict

        print_json({"event": "epoch", **asdict(result)})

    def on_end(self) -> None: ...


class Callbacks:
    """Several of the training callbacks above behind one (the progress bars and the JSON lines, say)."""

    def __init__(self, *targets: Any) -> None:
        self.targets = [t for t in targets if t is not None]
        self.shows_batches = any(getattr(t, "shows_batches", False) for t in self.targets)

    def on_start(self, *args: Any) -> None:
        for t in self.targets:
            t.on_start(*args)

    def on_batch(self, *args: Any) -> None:
        for t in self.targets:
            t.on_batch(*args)

    def on_epoch(self, result: Any) -> None:
        for t in self.targets:
            t.on_epoch(result)

    def on_end(self) -> None:
        for t in self.targets:
            t.on_end()


class Estimate:
    """After the first epoch of a run: how long the rest of a long job should take at that speed."""

    def __init__(self, label: str, epochs_left: int, quiet: bool) -> None:
        self.label, self.epochs_left, self.quiet, self.told = label, epochs_left, quiet, False

    def on_start(self, *args: Any) -> None: ...

    def on_batch(self, *args: Any) -> None: ...

    def on_epoch(self, result: Any) -> None:
        if not self.told and self.epochs_left > 0:
            remaining = _duration(result.seconds * self.epochs_left)
            log(f"{self.label}: about {remaining} to go ({result.seconds:.0f}s an epoch).", quiet=self.quiet)
        self.told = True

    def on_end(self) -> None: ...


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def comparison_callbacks(name: str, i: int, total: int, epochs: int, *, quiet: bool) -> Callbacks:
    """A comparison's run ``i`` of ``total``: what a training run shows, and after its first epoch an estimate
    for the whole comparison (this run's remaining epochs and those of the runs after it)."""
    label = f"{name} ({i}/{total})"
    shown = train_callbacks(label, quiet=quiet)
    return Callbacks(*shown.targets, Estimate(label, epochs - 1 + epochs * (total - i), quiet))


def train_callbacks(label: str = "", *, quiet: bool, json_out: bool = False) -> Callbacks:
    """What training shows: bars on a terminal, else a line per epoch (unless quiet); JSON epochs with --json."""
    if progress_enabled(quiet):
        shown: Any = RichTrainProgress(label)
    else:
        shown = None if quiet or json_out else EpochLines(label)
    return Callbacks(shown, JsonEpochs() if json_out else None)


def train_summary(result: Any, path: Any) -> str:
    """The closing line. The time is the epochs table's sum; a resumed run also says what this process took."""
    final = result.final
    total = sum(h.seconds for h in result.history)
    since = f", {result.seconds:.1f}s of it since resuming after epoch {result.resumed_from}"
    return (
        f"Saved {path} (test accuracy {final.test_accuracy:.2%} after epoch {final.epoch}, {total:.1f}s of training"
        f"{since if result.resumed_from else ''})."
    )


def epochs_table(history: Iterable[Any], title: str = "training") -> Table:
    table = _table(title=title, title_justify="left")
    for name in ("epoch", "train loss", "test loss", "test accuracy", "seconds", "img/s"):
        table.add_column(name, justify="right")
    rows = list(history)
    best = max((r.test_accuracy for r in rows), default=None)
    for r in rows:
        acc = f"{r.test_accuracy:.2%}"
        table.add_row(
            str(r.epoch),
            f"{r.train_loss:.4f}",
            f"{r.test_loss:.4f}",
            f"[bold green]{acc}[/]" if r.test_accuracy == best else acc,
            f"{r.seconds:.1f}",
            f"{r.images_per_s:,.0f}",
        )
    return table


# --------------------------------------------------------------------------------------------- eval


def eval_report(result: Any, model: str, arch: str) -> list[Any]:
    """The headline, the confusion matrix, the per-class table and (if any) the confident mistakes."""
    shown = escape(visible(model, _encoding(sys.stdout)))
    head = (
        f"[bold]{shown}[/] ({arch}) on the {result.split} set: accuracy [bold]{result.accuracy:.2%}[/] "
        f"({result.errors:,} errors in {result.count:,}), loss {result.loss:.4f}"
    )
    parts = [head, confusion_table(result.confusion), per_class_table(result.per_class)]
    return parts + ([mistakes_table(result.mistakes)] if result.mistakes else [])


def confusion_table(confusion: list[list[int]]) -> Table:
    """True digits as rows, predicted as columns; the diagonal green, heavy off-diagonal cells red."""
    table = _table(title="confusion matrix (rows: true digit, columns: predicted)", title_justify="left")
    table.add_column("true", justify="right", style="bold")
    for d in range(len(confusion)):
        table.add_column(str(d), justify="right")
    off = [v for i, row in enumerate(confusion) for j, v in enumerate(row) if i != j and v]
    heavy = sorted(off)[-max(1, len(off) // 10)] if off else None  # the top tenth of the errors
    for i, row in enumerate(confusion):
        cells = []
        for j, v in enumerate(row):
            if i == j:
                cells.append(f"[bold green]{v}[/]")
            elif v == 0:
                cells.append("[dim]·[/]")
            elif heavy is not None and v >= heavy:
                cells.append(f"[bold red]{v}[/]")
            else:
                cells.append(f"[yellow]{v}[/]")
        table.add_row(str(i), *cells)
    return table


def per_class_table(per_class: Iterable[Any]) -> Table:
    table = _table(title="per class", title_justify="left")
    for name in ("digit", "precision", "recall", "F1", "support"):
        table.add_column(name, justify="right")
    for c in per_class:
        table.add_row(str(c.digit), f"{c.precision:.4f}", f"{c.recall:.4f}", f"{c.f1:.4f}", str(c.support))
    return table


def mistakes_table(mistakes: Iterable[Any]) -> Table:
    table = _table(title="most confident mistakes", title_justify="left")
    for name in ("index", "true", "predicted", "confidence"):
        table.add_column(name, justify="right")
    for m in mistakes:
        table.add_row(str(m.index), str(m.true), str(m.predicted), f"{m.confidence:.4f}")
    return table


def save_mistakes(directory: Path, images: Any, labels: Any, indices: Any, predicted: Any) -> int:
    """Write each misclassified digit (``images[i]`` for ``i`` in ``indices``, read as ``predicted``) as
    ``<index>_true<T>_pred<P>.png``; return how many."""
    from torchvision.utils import save_image

    directory.mkdir(parents=True, exist_ok=True)
    for i, digit in zip(indices.tolist(), predicted.tolist(), strict=True):
        target = directory / f"{i:05d}_true{int(labels[i])}_pred{digit}.png"
        with atomic_path(target) as tmp:
            save_image(images[i].float().div(255), tmp, format="png")
    return len(indices)


# --------------------------------------------------------------------------------------------- compare

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        return SPARKS[-1] * len(values)
    return "".join(SPARKS[round((v - lo) / (hi - lo) * (len(SPARKS) - 1))] for v in values)


def comparison_title(cfg: Mapping[str, Any]) -> str:
    """What the runs shared: ``network seed, 10 epoch(s), batch 32, seed 0`` (and the training-set limit)."""
    limit = f", the first {cfg['train_limit']:,} training images" if cfg.get("train_limit") else ""
    return f"network {cfg['arch']}, {cfg['epochs']} epoch(s), batch {cfg['batch_size']}, seed {cfg['seed']}{limit}"


def comparison_table(comparison: Any) -> Table:
    table = _table(title=f"compare-optimizers: {comparison_title(comparison.base)}", title_justify="left")
    for name, justify in (
        ("optimizer", "left"),
        ("lr", "right"),
        ("train loss", "right"),
        ("test loss", "right"),
        ("test acc", "right"),
        ("best ep.", "right"),
        ("seconds", "right"),
        ("acc. per epoch", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name in ("optimizer", "acc. per epoch"))
    winner = comparison.winner
    for run in comparison.runs:
        mark = " [bold green]★[/]" if run is winner and len(comparison.runs) > 1 else ""
        table.add_row(
            f"{run.optimizer}{mark}",
            f"{run.lr:g}",
            f"{run.final.train_loss:.4f}",
            f"{run.final.test_loss:.4f}",
            f"{run.final.test_accuracy:.2%}",
            str(run.best_epoch),
            f"{run.seconds:.1f}",
            sparkline([h.test_accuracy for h in run.history]),
        )
    return table


def plot_comparison(comparison: Any, path: str) -> None:
    """Training loss and test accuracy per epoch for every optimizer, as a PNG (needs matplotlib)."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in comparison.runs:
        epochs = [h.epoch for h in run.history]
        label = f"{run.optimizer} (lr {run.lr:g})"
        ax_loss.plot(epochs, [h.train_loss for h in run.history], marker="o", label=label)
        ax_acc.plot(epochs, [100 * h.test_accuracy for h in run.history], marker="o", label=label)
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    ax_loss.set_yscale("log")
    ax_acc.set(title="test accuracy", xlabel="epoch", ylabel="%")
    from matplotlib.ticker import MaxNLocator

    epochs = sorted({h.epoch for run in comparison.runs for h in run.history})
    for ax in (ax_loss, ax_acc):
        if len(epochs) <= 12:  # a tick for each epoch (one epoch: a single tick, not 0.95 … 1.05)
            ax.set_xticks(epochs)
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(comparison_title(comparison.base))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def check_plotting() -> None:
    """Fail before the work, not after it, when --plot cannot be honoured."""
    import importlib.util

    from mnistctl.errors import MnistctlError

    if importlib.util.find_spec("matplotlib") is None:
        raise MnistctlError(
            "--plot needs matplotlib, which is not installed", "pip install 'mnistctl[plot]' (or drop --plot)"
        )


# --------------------------------------------------------------------------------------------- predict


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


def prediction_panel(prediction: Any, show_preview: bool = True) -> Any:
    """One image's answer: the digit, a bar per class, and what the network saw."""
    from rich.columns import Columns
    from rich.panel import Panel
    from rich.table import Table

    bars = Table.grid(padding=(0, 1))
    bars.add_column(justify="right")
    bars.add_column()
    bars.add_column(justify="right")
    for digit, p in enumerate(prediction.probabilities):
        style = "bold green" if digit == prediction.digit else "cyan"
        bars.add_row(str(digit), f"[{style}]{'█' * _bar_length(p)}[/]", f"{p:.4f}")
    body: Any = bars
    if show_preview and prediction.pixels is not None:
        body = Columns([digit_preview(prediction.pixels, draws_in_colour("out")), bars], padding=(0, 3))
    title = f"[bold]{prediction.digit}[/] ({prediction.confidence:.2%})"
    return Panel(body, title=title, subtitle=_shown_path(prediction.path), expand=False)


def _bar_length(p: float) -> int:
    return round(p * 30) if math.isfinite(p) else 0  # a broken model's NaN draws no bar (and "nan" beside it)


def _shown_path(path: str) -> Any:
    """A panel's subtitle: the name as the TSV line writes it, as Rich Text (no markup, no emoji codes)."""
    from rich.text import Text

    return Text(quote_name(path, _encoding(sys.stdout)))


def _tsv_path(path: str) -> str:
    """The first column of a result line: the name escaped (quote_name), so that it is one field of one line."""
    return quote_name(path, _encoding(sys.stdout))


def _json_path(path: str) -> dict[str, Any]:
    """The name in a JSON line: as it is, JSON escaping what needs it. A name whose bytes are not UTF-8 cannot be
    a JSON string: it is written as quote_name writes it, and ``"path_escaped": true`` says so."""
    if _UNDECODABLE.search(path):
        return {"path": quote_name(path), "path_escaped": True}
    return {"path": path}


def prediction_line(prediction: Any, top_k: int = 0) -> str:
    """``path<TAB>digit<TAB>confidence``, then the next ``top_k`` digits and probabilities."""
    fields = [_tsv_path(prediction.path), str(prediction.digit), f"{prediction.confidence:.4f}"]
    for d in _runners_up(prediction.probabilities, top_k) if top_k else ():
        fields += [str(d), f"{prediction.probabilities[d]:.4f}"]
    return "\t".join(fields)


def _runners_up(probabilities: list[float], top_k: int) -> list[int]:
    """The ``top_k`` most likely digits after the one read, most likely first."""
    return sorted(range(10), key=lambda d: -probabilities[d])[1 : 1 + top_k]


def prediction_json(prediction: Any, top_k: int = 0) -> dict[str, Any]:
    return {
        **_json_path(prediction.path),
        "digit": prediction.digit,
        "confidence": round(prediction.confidence, 6),
        "probabilities": [round(p, 6) for p in prediction.probabilities],
        **_top_k_json(prediction.probabilities, top_k),
    }


def _top_k_json(probabilities: list[float], top_k: int) -> dict[str, Any]:
    """``{"top_k": [...]}``: the runners-up and their probabilities (nothing when ``top_k`` is 0)."""
    if not top_k:
        return {}
    ranked = _runners_up(probabilities, top_k)
    return {"top_k": [{"digit": d, "probability": round(probabilities[d], 6)} for d in ranked]}


def _print_prediction(prediction: Any, json_out: bool, top_k: int) -> None:
    """One image's answer as a line (or JSON line) on stdout, flushed: pipelines see it as soon as it is known."""
    number = prediction.digits is not None
    if json_out:
        print_json(number_json(prediction, top_k) if number else prediction_json(prediction, top_k))
    else:
        sys.stdout.write((number_line(prediction) if number else prediction_line(prediction, top_k)) + "\n")
        sys.stdout.flush()


def number_line(prediction: Any) -> str:
    """``path<TAB>number<TAB>confidence`` for a number read with ``multi`` (the least confident digit's)."""
    return "\t".join([_tsv_path(prediction.path), prediction.number, f"{prediction.confidence:.4f}"])


def number_json(prediction: Any, top_k: int = 0) -> dict[str, Any]:
    """A number read with ``multi``: the reading, and each digit with its box, all ten probabilities and (with
    ``top_k``) its runners-up."""
    return {
        **_json_path(prediction.path),
        "number": prediction.number,
        "confidence": round(prediction.confidence, 6),
        "digits": [
            {
                "box": list(d.box),
                "digit": d.digit,
                "confidence": round(d.confidence, 6),
                "probabilities": [round(p, 6) for p in d.probabilities],
                **_top_k_json(d.probabilities, top_k),
            }
            for d in prediction.digits
        ],
    }


def number_panel(prediction: Any) -> Any:
    """A number read with ``multi``: each digit the network saw, side by side, with its reading under it."""
    from rich.columns import Columns
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    color = draws_in_colour("out")
    cells = []
    for d in prediction.digits:
        caption = Text(f"{d.digit} ({d.confidence:.0%})", style="bold green" if d.confidence >= 0.9 else "yellow")
        cells.append(Group(digit_preview(d.pixels, color), caption) if d.pixels is not None else caption)
    title = f"[bold]{prediction.number}[/] (lowest {prediction.confidence:.2%})"
    return Panel(Columns(cells, padding=(0, 2)), title=title, subtitle=_shown_path(prediction.path), expand=False)


def _previews(prediction: Any) -> Any:
    """What the network saw for ``--show``: the digit, or each digit of a number side by side (wrapping as the
    terminal's width demands), in colour where the terminal draws it, else in shading characters."""
    from rich.columns import Columns

    colour = draws_in_colour("err")
    drawings = [digit_preview(p, colour) for p in [d.pixels for d in prediction.digits or ()] or [prediction.pixels]]
    return drawings[0] if len(drawings) == 1 else Columns(drawings, padding=(0, 2))


class CountProgress:
    """A plain counting bar on stderr (files predicted)."""

    def __init__(self, label: str, total: int) -> None:
        self.progress = _progress(label, "{task.completed}/{task.total}", transient=True)
        self.task = self.progress.add_task(label, total=total)
        self.progress.start()

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def stop(self) -> None:
        self.progress.stop()


@contextlib.contextmanager
def counting(label: str, total: int, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A counting bar on a terminal for the block: yields its ``advance(n)``, or None where nothing is shown."""
    if not progress_enabled(quiet):
        yield None
        return
    progress = CountProgress(label, total)
    try:
        yield progress.advance
    finally:
        progress.stop()


def print_predictions(
    predictions: Iterable[Any], total: int, *, json_out: bool, top_k: int, panel: bool, show: bool, quiet: bool
) -> int:
    """Print each prediction as it arrives — a line, a JSON line, or (one image on a terminal) a panel — and
    each failed file as one error line on stderr; return how many failed."""
    progress = CountProgress("predicting", total) if total > 1 and progress_enabled(quiet) else None
    failed = 0
    try:
        for prediction in predictions:
            if progress:
                progress.advance()
            if prediction.error is not None:
                failed += 1
                path_error(prediction.path, prediction.error)
            elif panel:
                show_result(number_panel(prediction) if prediction.digits is not None else prediction_panel(prediction))
            else:
                _print_prediction(prediction, json_out, top_k)
                if show:
                    show_err(_previews(prediction))
    finally:
        if progress:
            progress.stop()
    return failed
