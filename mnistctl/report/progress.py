"""Progress on stderr while the work runs: download bars, training bars or a line per epoch, JSON epochs, the
estimate a long comparison gives after its first epoch, and plain counting bars.

The core reports progress through small receivers (``DownloadProgress``, training callbacks, an ``advance``
function); these are the ones that show something. Nothing here computes what it shows.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from mnistctl.data.download import DownloadProgress
from mnistctl.report.console import _console, log, print_json, progress_enabled

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


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
            # "\\[": a literal [status], not Rich markup (which would swallow it)
            self.progress.update(self.tasks[name], description=f"{name}.gz \\[{status}]")


@contextlib.contextmanager
def download_progress(quiet: bool) -> Iterator[DownloadProgress]:
    """Per-file bars on a terminal; otherwise a progress receiver that shows nothing."""
    if not progress_enabled(quiet):
        yield DownloadProgress()
        return
    with RichDownloadProgress() as progress:
        yield progress


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
    """The line a run starts with: what is trained, how, on what (``samples``: the training digits; the drawn
    non-digits, ``config.negatives`` of them, are said beside them)."""
    verb = f"resuming after epoch {start_epoch}" if start_epoch else "training"
    drawn = config.negatives_for(samples)
    images = f"{samples:,} images" + (f" and {drawn:,} non-digits" if drawn else "")
    return (
        f"{prefix}{verb}: {config.arch}, {config.optimizer} lr {config.lr:g}, batch {config.batch_size}, "
        f"{images}, {config.epochs} epoch(s), on {device} in {config.precision}"
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


# --------------------------------------------------------------------------------------------- counting


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
