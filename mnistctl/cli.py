"""The `mnistctl` command line: one small function per subcommand, each calling one core module.

No torch import at module level: `mnistctl --help` and `mnistctl download` must not pay for it.
"""

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from mnistctl import __version__
from mnistctl.errors import MnistctlError


def _defer_rich_markdown() -> None:
    """Keep ~65 ms of markdown parser off every `--help`.

    Typer's help renderer imports `rich.markdown` (and markdown-it) at module level but only uses it in
    markdown mode, which mnistctl does not use. Until something really uses it, a stand-in module takes its
    place: constructing `Markdown` or reading any other name loads the real module.
    """
    if "rich.markdown" in sys.modules:
        return
    import importlib
    import types

    def real() -> types.ModuleType:
        if isinstance(sys.modules.get("rich.markdown"), _StandIn):
            del sys.modules["rich.markdown"]
        return importlib.import_module("rich.markdown")

    class _StandIn(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__") and name.endswith("__"):
                # inspect.getmodule() (torch calls it while importing) asks every module for __file__: that
                # must not load the real module.
                raise AttributeError(name)
            return getattr(real(), name)

    class Markdown:
        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            return real().Markdown(*args, **kwargs)

    stand_in = _StandIn("rich.markdown")
    stand_in.Markdown = Markdown  # type: ignore[attr-defined]
    sys.modules["rich.markdown"] = stand_in


_defer_rich_markdown()

EXAMPLES = """\
[bold]Examples[/]

  mnistctl download --mirror ~/mnist        fetch MNIST from a local copy

  mnistctl train --epochs 10                train the default network

  mnistctl eval                             accuracy, confusion matrix

  mnistctl predict photo.jpg                read the digit in your image

  mnistctl compare-optimizers --plot c.png  Adam vs SGD, with curves

  mnistctl info --json                      for a bug report

[dim]Add --help after any command for its options and more examples.[/]
"""


def _framework_class(name: str) -> type[BaseException]:
    """Typer's (or, in older Typer, Click's) exception class of that name, found without private imports."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


class OneLineErrors(TyperGroup):
    """Usage errors as one line, `Error: <what> — <what to do>`, instead of a multi-line box; commands
    listed in the order of the workflow."""

    ORDER = ("download", "train", "eval", "predict", "compare-optimizers", "info")

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: self.ORDER.index(n) if n in self.ORDER else len(self.ORDER))

    def main(
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        click_exception = _framework_class("ClickException")
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `mnistctl` alone: show the help
                exc.show()
                sys.exit(exc.exit_code)
            from mnistctl import report

            ctx = getattr(exc, "ctx", None)
            where = f"`{ctx.command_path} --help`" if ctx is not None else "`mnistctl --help`"
            report.error_line(f"{exc.format_message()} — see {where}")
            sys.exit(exc.exit_code)
        except typer.Abort:
            from mnistctl import report

            report.error_line("aborted — nothing half-written was left behind")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="mnistctl",
    cls=OneLineErrors,
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
        except BrokenPipeError:  # `mnistctl predict … | head`: the reader left; stop quietly, as cat does
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(1) from None
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


def _data_dir(value: Path | None, *, check: bool = True) -> Path:
    """The data directory: the option (or MNISTCTL_DATA_DIR), else the default cache directory.

    A directory the user named may be created, but not its parents: a typo should not grow a tree.
    """
    from mnistctl.data.mnist import default_data_dir
    from mnistctl.errors import MnistctlError

    if not value:
        return default_data_dir()
    path = value.expanduser()
    if check and not path.exists() and not path.parent.is_dir():
        state = "is not a directory" if path.parent.exists() else "does not exist"
        raise MnistctlError(
            f"cannot create the data directory {path}: its parent {path.parent} {state}",
            "create the parent first, or choose another --data-dir",
        )
    return path


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
    from mnistctl.data.download import DownloadError, download_mnist
    from mnistctl.data.mnist import raw_dir

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

    details = collect_info(_data_dir(data_dir, check=False))
    if json_out:
        report.print_json(details)
        return
    for table in report.info_tables(details):
        report.out.print(table)


DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        envvar="MNISTCTL_DEVICE",
        help="auto, cpu, cuda, cuda:N or mps. auto picks CUDA, then MPS, then the CPU.",
        show_default="auto",
    ),
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", min=1, help="CPU threads for torch. \\[default: one per core]")
]


def _model_path(value: Path | None) -> Path:
    from mnistctl.checkpoint import default_model_path

    return value.expanduser() if value else default_model_path()


def _ensure_data(data_dir: Path, mirror: str | None, quiet: bool) -> None:
    """Download MNIST first (through `download`'s code) when a file is missing."""
    from mnistctl import report
    from mnistctl.data.download import ensure_mnist
    from mnistctl.data.mnist import files_present as mnist_files_present

    if mnist_files_present(data_dir):
        return
    report.log(f"MNIST is not in {data_dir} yet; downloading it first.", quiet=quiet)
    if report.progress_enabled(quiet):
        with report.RichDownloadProgress() as progress:
            ensure_mnist(data_dir, mirror=mirror, progress=progress)
    else:
        ensure_mnist(data_dir, mirror=mirror)


def _setup_device(device: str | None, threads: int | None):
    from mnistctl.runtime import dist_info, select_device, set_threads

    set_threads(threads)
    return select_device(device, dist_info())


def _launch_torchrun(nproc: int, device: str | None) -> int:
    """`mnistctl train --nproc N …` is `torchrun --standalone --nproc_per_node N -m mnistctl train …`."""
    import subprocess
    import sys

    from mnistctl.runtime import Accelerators, check_nproc

    check_nproc(nproc, device, Accelerators.detect())
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run([*cmd, "-m", "mnistctl", *args]).returncode


@app.command(
    epilog="""\
[bold]Examples[/]

  mnistctl train                                   10 epochs of the default network → digit_model.pt

  mnistctl train --epochs 3 --train-limit 10000    a quick run on the first 10,000 images

  mnistctl train --arch seed                       the original project's network and recipe

  mnistctl train --resume                          continue an interrupted run of digit_model.pt

  mnistctl train --optimizer sgd-nesterov --lr 0.05 -o sgd.pt --json | jq .test_accuracy
"""
)
@handle_errors
def train(
    epochs: Annotated[int, typer.Option("--epochs", "-e", min=1, help="Passes over the training set.")] = 10,
    arch: Annotated[str, typer.Option("--arch", help="Network: compact (the default) or seed (the original).")] = (
        "compact"
    ),
    optimizer: Annotated[
        str | None,
        typer.Option(
            "--optimizer", help="adam, adamw, sgd, sgd-nesterov, rmsprop or adadelta. \\[default: the arch's recipe]"
        ),
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate. \\[default: the recipe's]")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", min=1, help="Images per step.")] = None,
    schedule: Annotated[
        str | None, typer.Option("--schedule", help="onecycle, cosine, step or constant. \\[default: the recipe's]")
    ] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", help="L2 / decoupled weight decay.")] = None,
    label_smoothing: Annotated[float | None, typer.Option("--label-smoothing", min=0.0, max=0.5)] = None,
    augment: Annotated[
        bool | None,
        typer.Option("--augment/--no-augment", help="Augment the training images (see --rotate, --scale, --shift)."),
    ] = None,
    rotate: Annotated[
        float | None,
        typer.Option("--rotate", min=0.0, max=45.0, help="Augmentation: random rotation, ± degrees. \\[default: 10]"),
    ] = None,
    scale: Annotated[
        float | None,
        typer.Option("--scale", min=0.0, max=0.5, help="Augmentation: random scale, ± fraction. \\[default: 0.1]"),
    ] = None,
    shift: Annotated[
        float | None,
        typer.Option("--shift", min=0.0, max=8.0, help="Augmentation: random shift, ± pixels. \\[default: 2]"),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Fixes shuffling, initial weights and augmentation.")] = 0,
    train_limit: Annotated[
        int | None, typer.Option("--train-limit", min=1, help="Use only the first N training images.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", envvar="MNISTCTL_MODEL", help="Checkpoint to write after every epoch.", show_default=False
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite --out even if it holds another architecture or file.")
    ] = False,
    device: DeviceOpt = None,
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision (bf16 autocast).")] = False,
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last",
            help="NHWC memory layout, a speed knob (see the README). \\[default: the recipe's: on for compact]",
            show_default=False,
        ),
    ] = None,
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (a speed knob; needs a C compiler).")
    ] = False,
    threads: ThreadsOpt = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc", min=1, help="Train data-parallel in N processes (starts torchrun; one GPU or CPU share each)."
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    mirror: MirrorOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a digit classifier on MNIST; write a checkpoint after every epoch.

    Data-parallel: `torchrun --standalone --nproc_per_node N -m mnistctl train …` (or --nproc N); the
    batch size is the global one, and only rank 0 prints and writes.
    """
    from mnistctl import report
    from mnistctl.checkpoint import load_checkpoint, peek_arch
    from mnistctl.data.mnist import load_mnist
    from mnistctl.errors import MnistctlError
    from mnistctl.fsutil import check_writable
    from mnistctl.runtime import dist_info, shutdown_distributed
    from mnistctl.train import TrainConfig, fit

    dist = dist_info()
    if nproc is not None and nproc > 1 and not dist.enabled:
        raise typer.Exit(_launch_torchrun(nproc, device))
    if not dist.is_main:  # only rank 0 talks
        quiet, json_out = True, False
    path = _model_path(out)
    config = TrainConfig(
        arch=arch,
        epochs=epochs,
        optimizer=optimizer,
        lr=lr,
        batch_size=batch_size,
        schedule=schedule,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        augment=augment,
        rotate=rotate,
        scale=scale,
        shift=shift,
        seed=seed,
        train_limit=train_limit,
        amp=amp,
        channels_last=channels_last,
        compile=compile_model,
    )
    config.resolved()  # validate before any slow work
    if dist.is_main:
        check_writable(path)
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(path)
        if checkpoint.get("optimizer") is None:
            raise MnistctlError(f"{path} holds weights only, no training state to resume", "train without --resume")
    elif path.exists() and not force and dist.is_main:
        existing = peek_arch(path)
        if existing is None:
            raise MnistctlError(f"{path} exists and is not an mnistctl checkpoint", "pass --force to overwrite it")
        if existing != arch:
            raise MnistctlError(
                f"{path} holds a {existing!r} model, not {arch!r}", "pass --force to overwrite it, or -o another path"
            )

    torch_device = _setup_device(device, threads)
    directory = _data_dir(data_dir)
    _ensure_data(directory, mirror, quiet)
    data = load_mnist(directory)
    live = report.RichTrainProgress() if report.progress_enabled(quiet) else None
    plain = report.EpochLines() if not quiet and live is None and not json_out else None
    callbacks = report.Callbacks(live, plain, report.JsonEpochs() if json_out else None)
    try:
        result = fit(config, data, torch_device, out=path, resume=checkpoint, callbacks=callbacks)
    finally:
        shutdown_distributed()
    if not dist.is_main:
        return
    final = result.final
    summary = {
        "event": "summary",
        "checkpoint": result.checkpoint,
        "arch": result.config.arch,
        "parameters": result.parameters,
        "device": result.device,
        "epochs": final.epoch,
        "test_accuracy": final.test_accuracy,
        "test_loss": final.test_loss,
        "seconds": result.seconds,
        "config": result.config.__dict__,
    }
    if json_out:
        report.print_json(summary)
        return
    report.out.print(report.epochs_table(result.history, title=f"{result.config.arch} on {result.device}"))
    report.log(
        f"Saved {path} (test accuracy {final.test_accuracy:.2%} after epoch {final.epoch}, "
        f"{result.seconds:.1f}s of training).",
        quiet=quiet,
    )


@app.command(
    name="eval",
    epilog="""\
[bold]Examples[/]

  mnistctl eval                                    digit_model.pt on the 10,000 test images

  mnistctl eval -m seed.pt --split train

  mnistctl eval --save-errors errors/              write every misclassified digit as a PNG

  mnistctl eval --json | jq .accuracy
""",
)
@handle_errors
def eval_(
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", envvar="MNISTCTL_MODEL", help="Checkpoint to evaluate.", show_default=False),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="test (10,000 images) or train (60,000).")] = "test",
    top: Annotated[int, typer.Option("--top", min=0, help="How many of the most confident mistakes to list.")] = 10,
    save_errors: Annotated[
        Path | None, typer.Option("--save-errors", help="Write each misclassified digit as a PNG into this directory.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")] = 2000,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    data_dir: DataDirOpt = None,
    mirror: MirrorOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a checkpoint: accuracy, loss, confusion matrix, per-class scores, confident mistakes."""
    import time

    from mnistctl import report
    from mnistctl.checkpoint import build_model, load_checkpoint
    from mnistctl.data.mnist import load_split, normalise
    from mnistctl.errors import UsageError
    from mnistctl.evaluate import predict_logits, save_error_images, summarise

    if split not in ("test", "train"):
        raise UsageError(f"unknown split {split!r}", "use --split test or --split train")
    path = _model_path(model)
    checkpoint = load_checkpoint(path)
    net = build_model(checkpoint)
    torch_device = _setup_device(device, threads)
    directory = _data_dir(data_dir)
    _ensure_data(directory, mirror, quiet)
    images, labels = load_split(directory, split)
    norm = checkpoint["normalization"]
    start = time.perf_counter()
    logits = predict_logits(
        net.to(torch_device), normalise(images, norm["mean"], norm["std"]), torch_device, batch_size
    )
    result = summarise(split, logits, labels, top_mistakes=top)
    result.seconds = time.perf_counter() - start
    saved = save_error_images(str(save_errors), images, labels, logits) if save_errors else None

    if json_out:
        report.print_json({"model": str(path), "arch": checkpoint["arch"], **result.to_dict(), "saved_errors": saved})
        return
    report.out.print(
        f"[bold]{path}[/] ({checkpoint['arch']}) on the {split} set: accuracy [bold]{result.accuracy:.2%}[/] "
        f"({result.errors} errors in {result.count:,}), loss {result.loss:.4f}"
    )
    report.out.print(report.confusion_table(result.confusion))
    report.out.print(report.per_class_table(result.per_class))
    if result.mistakes:
        report.out.print(report.mistakes_table(result.mistakes))
    if saved is not None:
        report.log(f"Wrote {saved} misclassified digit(s) to {save_errors}.", quiet=quiet)


@app.command(
    name="compare-optimizers",
    epilog="""\
[bold]Examples[/]

  mnistctl compare-optimizers                      the original question: Adam 1e-3 vs SGD-Nesterov 1e-3

  mnistctl compare-optimizers --epochs 2 --train-limit 10000 --plot curves.png

  mnistctl compare-optimizers --arch compact --batch-size 128 --optimizers adam,adamw,sgd-nesterov,rmsprop \\\\
      --lr adam=1e-3,adamw=3e-3,sgd-nesterov=0.05,rmsprop=1e-3 --csv history.csv

  mnistctl compare-optimizers --resume             skip the runs the results file already holds
""",
)
@handle_errors
def compare_optimizers(
    optimizers: Annotated[
        str,
        typer.Option("--optimizers", help="Comma-separated: adam, adamw, sgd, sgd-nesterov, rmsprop, adadelta."),
    ] = "adam,sgd-nesterov",
    lr: Annotated[
        str | None,
        typer.Option(
            "--lr",
            help="One rate for all, or NAME=RATE pairs: adam=1e-3,sgd-nesterov=1e-3. "
            "\\[default: adam and sgd-nesterov 1e-3 as in the original project; others their usual rate]",
        ),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", "-e", min=1, help="Epochs per optimizer.")] = 10,
    arch: Annotated[str, typer.Option("--arch", help="seed (the original network) or compact.")] = "seed",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per step.")] = 32,
    schedule: Annotated[str, typer.Option("--schedule", help="onecycle, cosine, step or constant.")] = "constant",
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Augment the training images.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Initial weights, batch order and augmentation.")] = 0,
    train_limit: Annotated[
        int | None, typer.Option("--train-limit", min=1, help="Use only the first N training images.")
    ] = None,
    results: Annotated[
        Path, typer.Option("--results", help="JSON file each finished run is saved to, for --resume.")
    ] = Path("compare-results.json"),
    resume: Annotated[bool, typer.Option("--resume", help="Skip runs already in --results.")] = False,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write the per-epoch history as CSV.")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write loss and accuracy curves as a PNG (needs matplotlib).")
    ] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    data_dir: DataDirOpt = None,
    mirror: MirrorOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the same model once per optimizer — same data, seed and initial weights — and compare.

    The defaults repeat the original project's comparison: its network (--arch seed), batch 32, no
    augmentation, a constant rate, Adam 1e-3 against SGD with Nesterov momentum 0.9 at 1e-3.
    """
    from mnistctl import report
    from mnistctl.compare import compare_optimizers as run_comparison
    from mnistctl.compare import history_csv, parse_lrs, parse_optimizers
    from mnistctl.data.mnist import load_mnist
    from mnistctl.fsutil import check_writable, write_text_atomic
    from mnistctl.train import TrainConfig

    names = parse_optimizers(optimizers)
    rates = parse_lrs(lr, names)
    base = TrainConfig(
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        schedule=schedule,
        augment=augment,
        seed=seed,
        train_limit=train_limit,
        weight_decay=0.0,
        label_smoothing=0.0,
    )
    base.resolved()
    for path in (results, csv, plot):
        if path is not None:
            check_writable(path)
    if plot is not None:
        report.check_plotting()
    torch_device = _setup_device(device, threads)
    directory = _data_dir(data_dir)
    _ensure_data(directory, mirror, quiet)
    data = load_mnist(directory)

    def callbacks_for(name: str, index: int, total: int):
        label = f"{name} ({index}/{total})"
        if report.progress_enabled(quiet):
            return report.RichTrainProgress(label)
        return None if quiet else report.EpochLines(label)

    comparison = run_comparison(
        names, rates, base, data, torch_device, results=results, resume=resume, callbacks_for=callbacks_for
    )
    if comparison.skipped:
        report.log(f"Skipped {', '.join(comparison.skipped)}: already in {results}.", quiet=quiet)
    if csv is not None:
        write_text_atomic(csv, history_csv(comparison))
    if plot is not None:
        report.plot_comparison(comparison, str(plot))
    if json_out:
        report.print_json(comparison.to_dict())
    else:
        report.out.print(report.comparison_table(comparison))
    written = [str(p) for p in (results, csv, plot) if p is not None]
    report.log(f"Wrote {', '.join(written)}.", quiet=quiet)


@app.command(
    epilog="""\
[bold]Examples[/]

  mnistctl predict digit.png                       the digit, its probability and what the network saw

  mnistctl predict scans/ --recursive > answers.tsv

  find scans -name '*.png' | mnistctl predict - | cut -f2 | sort | uniq -c

  mnistctl predict photo.jpg --top-k 2 --json
""",
)
@handle_errors
def predict(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files, directories of images, or - to read paths from stdin (one per line).", show_default=False
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", envvar="MNISTCTL_MODEL", help="Checkpoint to use.", show_default=False),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=0, max=9, help="Also print the next K digits.")] = 0,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into subdirectories.")] = False,
    invert: Annotated[
        str, typer.Option("--invert", help="auto (decide from the border), yes (dark ink on light) or no.")
    ] = "auto",
    no_preprocess: Annotated[
        bool, typer.Option("--no-preprocess", help="Only resize to 28×28: no cropping, fitting or centring.")
    ] = False,
    show: Annotated[bool, typer.Option("--show", help="Draw the 28×28 input the network saw (on stderr if piped).")] = (
        False
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")] = 512,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Threads decoding images (0: decode in the main thread). \\[default: half the cores, at least 1]",
            show_default=False,
        ),
    ] = None,
    device: DeviceOpt = None,
    threads: ThreadsOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="JSON Lines: one object per image, all ten probabilities.")
    ] = (False),
    quiet: QuietOpt = False,
) -> None:
    """Recognise the digit in each image: one line per image, `path<TAB>digit<TAB>confidence`.

    Photos and drawings (dark ink on light paper, any size, off-centre, RGB, JPEG, PNG with alpha) are
    turned into MNIST-style 28×28 inputs first. Bad files are reported one line each on stderr; the rest
    are still predicted, and the exit code is 1 if any failed.
    """
    from mnistctl import report
    from mnistctl.checkpoint import build_model, load_checkpoint
    from mnistctl.errors import UsageError
    from mnistctl.predict import INVERT_CHOICES, expand_inputs, predict_paths, share_cores

    if not inputs:
        raise UsageError("no images given", "pass image files, directories, or - to read paths from stdin")
    if invert not in INVERT_CHOICES:
        raise UsageError(f"unknown --invert value {invert!r}", "use auto, yes or no")
    names: list[str] = []
    for item in inputs:
        if item == "-":
            names += [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
        else:
            names.append(item)
    paths, problems = expand_inputs(names, recursive)
    for problem in problems:
        report.error_line(f"{problem} — check the path")
    checkpoint = load_checkpoint(_model_path(model))
    net = build_model(checkpoint)
    torch_device = _setup_device(device, threads)
    workers = share_cores(torch_device, workers, threads)
    net.to(torch_device)

    single_panel = len(paths) == 1 and not problems and not json_out and report.is_terminal("out")
    failed = len(problems)
    results = predict_paths(
        paths,
        net,
        checkpoint["normalization"],
        torch_device,
        batch_size=batch_size,
        workers=workers,
        preprocess_image=not no_preprocess,
        invert=invert,
        keep_pixels=show or single_panel,
    )
    progress = (
        report.CountProgress("predicting", len(paths)) if len(paths) > 1 and report.progress_enabled(quiet) else None
    )
    try:
        for prediction in results:
            if progress:
                progress.advance()
            if prediction.error is not None:
                failed += 1
                report.error_line(f"{prediction.path}: {prediction.error} — this file was skipped")
                continue
            if single_panel:
                report.out.print(report.prediction_panel(prediction))
                continue
            if json_out:
                report.print_json(report.prediction_json(prediction, top_k))
            else:
                sys.stdout.write(report.prediction_line(prediction, top_k) + "\n")
                sys.stdout.flush()
            if show and prediction.pixels is not None:
                report.err.print(report.digit_preview(prediction.pixels, report.err.is_terminal))
    finally:
        if progress:
            progress.stop()
    if failed:
        raise typer.Exit(1)


def _reflow(doc: str) -> str:
    """A docstring with each paragraph on one line: Typer's "rich" help keeps source line breaks, which
    would otherwise show as ragged lines wherever the terminal is wider or narrower than the source."""
    import inspect

    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


for _info in app.registered_commands:
    if _info.callback is not None and _info.callback.__doc__:
        _info.callback.__doc__ = _reflow(_info.callback.__doc__)
