"""Rendering: Rich consoles, progress, tables and JSON. It formats what the core computed; it computes nothing."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from mnistctl.data import DownloadProgress, FileResult

# Results go to stdout; progress, logs, warnings and errors go to stderr.
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def progress_enabled(quiet: bool) -> bool:
    """Progress bars only when stderr is a terminal and the user did not ask for quiet."""
    return not quiet and err.is_terminal


def print_json(obj: Any) -> None:
    """One JSON document on stdout, unwrapped, so that ``jq`` and friends can read it."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def log(message: str, *, quiet: bool = False) -> None:
    """An informational line on stderr (silenced by --quiet)."""
    if not quiet:
        err.print(message, markup=False, soft_wrap=True)


def error_line(message: str) -> None:
    """The one line a failed command prints: ``Error: <what is wrong> — <what to do>``."""
    err.print(f"[bold red]Error:[/] {_escape(message)}", soft_wrap=True)


def warning_line(message: str) -> None:
    err.print(f"[yellow]Warning:[/] {_escape(message)}", soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(" ".join(text.split()))  # one line, whatever the message holds


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


# --------------------------------------------------------------------------------------------- download


class RichDownloadProgress(DownloadProgress):
    """Per-file bars with bytes, speed and ETA on stderr."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
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


def download_table(results: Iterable[FileResult], data_dir: str) -> Table:
    table = Table(title=f"MNIST files in {data_dir}", title_justify="left")
    table.add_column("file")
    table.add_column("status")
    table.add_column(".gz size", justify="right")
    table.add_column("source", overflow="fold")
    styles = {"present": "green", "downloaded": "cyan", "failed": "red"}
    for r in results:
        status = f"[{styles.get(r.status, '')}]{r.status}[/]"
        table.add_row(r.file, status, _human_bytes(r.bytes), r.source or "-")
    return table


# --------------------------------------------------------------------------------------------- info


def info_tables(info: Mapping[str, Any]) -> list[Table]:
    general = Table(show_header=False, title="mnistctl info", title_justify="left")
    general.add_column("key", style="bold")
    general.add_column("value", overflow="fold")
    for key in ("mnistctl", "python", "platform", "torch", "torchvision", "threads", "auto_device"):
        value = info.get(key)
        general.add_row(key.replace("_", " "), "not installed" if value is None else str(value))
    general.add_row("data dir", f"{info['data_dir']} ({'all files valid' if info['data_ok'] else 'incomplete'})")
    model = info["model"]
    general.add_row("default model", f"{model['path']} ({'exists' if model['exists'] else 'not found'})")

    devices = Table(title="devices", title_justify="left")
    devices.add_column("device")
    devices.add_column("name")
    for row in info["devices"]:
        devices.add_row(row["device"], row["name"])

    files = Table(title="data files", title_justify="left")
    files.add_column("file")
    files.add_column("valid")
    for f in info["data_files"]:
        files.add_row(f["name"], "[green]yes[/]" if f["present"] else "[red]no[/]")
    return [general, devices, files]
