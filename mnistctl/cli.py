"""The `mnistctl` command line: one small function per subcommand, each calling one core module.

No torch import at module level: `mnistctl --help` and `mnistctl download` must not pay for it.
"""

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from mnistctl import __version__
from mnistctl.errors import MnistctlError

EXAMPLES = """\
[bold]Examples[/]

  mnistctl download --mirror ~/mnist        fetch the four MNIST files (from a local copy)

  mnistctl info --json                      versions, devices and data, for a bug report

[dim]Add --help after any command for its options and more examples.[/]
"""

app = typer.Typer(
    name="mnistctl",
    help="Recognise handwritten digits: download MNIST, train a CNN, evaluate it, predict your own images.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = False


def _debug_enabled() -> bool:
    return _debug or os.environ.get("MNISTCTL_DEBUG", "") not in ("", "0", "false", "no")


def _is_framework_exception(exc: BaseException) -> bool:
    """Typer/Click's own exceptions (exit, abort, usage errors) pass through untouched."""
    if isinstance(exc, (typer.Exit, typer.Abort)):
        return True
    return type(exc).__module__.split(".")[0] in ("typer", "click")


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn every failure into one line on stderr and an exit code; ``--debug`` shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mnistctl import report

        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            if _debug_enabled():
                raise
            report.error_line("interrupted — nothing half-written was left behind")
            raise typer.Exit(130) from None
        except MnistctlError as exc:
            if _debug_enabled():
                raise
            report.error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:
            if _is_framework_exception(exc) or _debug_enabled():
                raise
            report.error_line(
                f"unexpected {type(exc).__name__}: {exc} — run again with --debug for the traceback, "
                "and report it with the output of `mnistctl info`"
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mnistctl {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", help="Print the version and exit.", callback=_version_callback, is_eager=True),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="MNISTCTL_DEBUG", help="Show full tracebacks instead of one-line errors."),
    ] = False,
) -> None:
    """Recognise handwritten digits: download MNIST, train a CNN, evaluate it, predict your own images."""
    global _debug
    _debug = debug


# Options shared by several commands.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of tables.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log lines on stderr (errors only).")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="MNISTCTL_DATA_DIR",
        help="Where MNIST lives (<dir>/MNIST/raw). \\[default: ${XDG_CACHE_HOME:-~/.cache}/mnistctl]",
        show_default=False,
    ),
]
MirrorOpt = Annotated[
    str | None,
    typer.Option(
        "--mirror",
        envvar="MNISTCTL_MIRROR",
        help="Extra source tried first: http(s):// URL, file:// URL or a directory holding the four .gz files.",
    ),
]


def _data_dir(value: Path | None) -> Path:
    from mnistctl.data import default_data_dir

    return value.expanduser() if value else default_data_dir()


@app.command(
    epilog="""\
[bold]Examples[/]

  mnistctl download                               from the public mirrors

  mnistctl download --mirror /media/usb/mnist     from a directory (offline)

  MNISTCTL_MIRROR=https://example.org/mnist/ mnistctl download --json

  mnistctl download --data-dir ./data --force     fetch again even if present
"""
)
@handle_errors
def download(
    data_dir: DataDirOpt = None,
    mirror: MirrorOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch again even when valid files are present.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fetch the four MNIST files into the data directory and verify their checksums."""
    from mnistctl import report
    from mnistctl.data import DownloadError, download_mnist, raw_dir

    directory = _data_dir(data_dir)
    try:
        if report.progress_enabled(quiet):
            with report.RichDownloadProgress() as progress:
                results = download_mnist(directory, mirror=mirror, force=force, progress=progress)
        else:
            results = download_mnist(directory, mirror=mirror, force=force)
    except DownloadError as exc:
        if json_out:
            report.print_json({"data_dir": str(raw_dir(directory)), "files": [r.to_dict() for r in exc.results]})
        raise
    if json_out:
        report.print_json({"data_dir": str(raw_dir(directory)), "files": [r.to_dict() for r in results]})
        return
    report.out.print(report.download_table(results, str(raw_dir(directory))))
    if all(r.status == "present" for r in results):
        report.log(f"All {len(results)} MNIST files are already present and verified.", quiet=quiet)
    else:
        fetched = sum(r.status == "downloaded" for r in results)
        report.log(f"Fetched and verified {fetched} file(s); all {len(results)} are in place.", quiet=quiet)


@app.command(
    epilog="""\
[bold]Examples[/]

  mnistctl info                 human-readable tables

  mnistctl info --json | jq .devices
"""
)
@handle_errors
def info(
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Versions, devices, threads, data directory and default model: paste it into a bug report."""
    from mnistctl import report
    from mnistctl.info import collect_info

    details = collect_info(_data_dir(data_dir))
    if json_out:
        report.print_json(details)
        return
    for table in report.info_tables(details):
        report.out.print(table)
