"""Results as Rich tables and marked-up lines, for stdout: downloaded files, info, training epochs, evaluation
(confusion matrix, per-class scores, confident mistakes), optimizer comparisons, and the closing summaries.

Each function takes what the core returned and builds a renderable; :func:`~mnistctl.report.console.show_result`
prints it. Text from outside (paths, URLs, names) goes into cells as :func:`_plain` Text, never as markup.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mnistctl.report.text import encoding_of, escape, visible

if TYPE_CHECKING:
    from rich.table import Table

    from mnistctl.data.download import FileResult


def _table(*args: Any, **kwargs: Any) -> Table:
    from rich.table import Table

    return Table(*args, **kwargs)


def _plain(text: Any) -> Any:
    """A table cell or title shown literally on stdout (a path, a URL, a name from outside): Rich Text, so that
    no ``[tag]`` is taken for markup nor ``:name:`` for an emoji, with control characters visible."""
    from rich.text import Text

    return Text(visible(str(text), encoding_of(sys.stdout)))


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


def download_summary(results: list[FileResult]) -> str:
    if all(r.status == "present" for r in results):
        return f"All {len(results)} MNIST files are already present and verified."
    fetched = sum(r.status == "downloaded" for r in results)
    return f"Fetched and verified {fetched} file(s); all {len(results)} are in place."


def download_table(results: Iterable[FileResult], data_dir: str) -> Table:
    from rich.text import Text

    table = _table(title=_plain(f"MNIST files in {data_dir}"), title_justify="left")
    table.add_column("file")
    table.add_column("status")
    table.add_column(".gz size", justify="right")
    table.add_column("source", overflow="fold")
    styles = {"present": "green", "downloaded": "cyan", "failed": "red"}
    for r in results:
        status = Text(r.status, style=styles.get(r.status, ""))
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
    shown = escape(visible(model, encoding_of(sys.stdout)))
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
