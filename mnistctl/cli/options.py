"""The parts of the command line that are not commands: Typer's classes as mnistctl needs them (commands in
workflow order, flags shown without a type, failures said by ``failures``) and the options, declared once.

Each option is an ``Annotated`` type, so a command's signature reads one option a line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from mnistctl.cli import failures
from mnistctl.config import ARCHS, COMPARE_LRS, DEFAULT_ARCH, DEFAULT_EPOCHS, RANGES
from mnistctl.registry import OPTIMIZERS, SCHEDULES


class _ArgumentWithoutType(TyperArgument):
    """An argument whose help names it (``IMAGE``) without Typer's Python type after it (``<list[str]>``)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


# Short value names for help, so that option names and their help fit 80 columns (Typer's ``<int range>``,
# ``<float range>`` and ``<path>`` take a column of their own).
_METAVARS = {"<int range>": "N", "<int>": "N", "<float range>": "X", "<float>": "X", "<path>": "PATH", "<str>": "TEXT"}


class _FlagsWithoutTypes:
    """Help without type noise: plain flags (``--force``, ``--help``), which take no value, show none; other
    options show a short value name (``N``, ``X``, ``PATH``); arguments show their name only."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperArgument):
                param.__class__ = _ArgumentWithoutType
            elif getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            elif param.metavar is None and hasattr(param, "display_type"):
                param.metavar = _METAVARS.get(param.display_type(ctx))
        return params


class Command(_FlagsWithoutTypes, TyperCommand):
    """A command whose own code runs inside the one failure handler (``failures.command_failures``)."""

    def invoke(self, ctx: Any) -> Any:
        with failures.command_failures():
            return super().invoke(ctx)


class Group(_FlagsWithoutTypes, TyperGroup):
    """The app: commands in workflow order, `mnistctl help [COMMAND]`, `--debug` after the command, and the
    process's entry point, whose exit status ``failures.run`` decides."""

    ORDER = ("download", "train", "eval", "predict", "compare-optimizers", "serve", "info")

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted(super().list_commands(ctx), key=lambda n: self.ORDER.index(n) if n in self.ORDER else 99)

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, **extra: Any) -> Any:
        if not extra.pop("standalone_mode", True):
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        typer_main = super().main

        def click_main() -> Any:
            argv = _debug_anywhere(sys.argv[1:] if args is None else list(args))
            if argv[:1] == ["help"]:  # `mnistctl help [COMMAND]`: what `mnistctl [COMMAND] --help` shows
                argv = [*argv[1:], "--help"]
            return typer_main(argv, prog_name, complete_var, standalone_mode=False, **extra)

        failures.run(click_main)


def _debug_anywhere(args: list[str]) -> list[str]:
    """``--debug`` is accepted after the command too (``mnistctl eval --debug``), up to a ``--``: it is taken out
    and turned into ``MNISTCTL_DEBUG=1``, which the error handler and the processes mnistctl starts read."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    os.environ["MNISTCTL_DEBUG"] = "1"
    return [a for a in args[:end] if a != "--debug"] + args[end:]


def _opt(*decls: str, help: str | None = None, panel: str | None = None, **kwargs: Any) -> Any:  # noqa: A002
    return typer.Option(*decls, help=help, rich_help_panel=panel, **kwargs)


RECIPE = "Recipe (default: the device's, see the README)"
AUGMENT = "Augmentation (part of the recipe)"
SPEED = "Speed"

# --------------------------------------------------------------------------------------------- shared


def _print_version(value: bool) -> None:
    if value:
        from mnistctl import __version__

        typer.echo(f"mnistctl {__version__}")
        raise typer.Exit()


Version = Annotated[bool, _opt("--version", "-V", help="Print the version and exit.", callback=_print_version)]
Debug = Annotated[bool, _opt("--debug", envvar="MNISTCTL_DEBUG", help="Full tracebacks instead of one-line errors.")]

Json = Annotated[bool, _opt("--json", help="Machine-readable JSON on stdout instead of tables.")]
Quiet = Annotated[bool, _opt("--quiet", "-q", help="No progress or log lines on stderr (errors only).")]
DataDir = Annotated[
    Path | None,
    _opt(
        "--data-dir",
        envvar="MNISTCTL_DATA_DIR",
        help="Where MNIST lives (<dir>/MNIST/raw). \\[default: ${XDG_CACHE_HOME:-~/.cache}/mnistctl]",
    ),
]
Mirror = Annotated[
    str | None,
    _opt("--mirror", envvar="MNISTCTL_MIRROR", help="Source tried first: http(s) URL, file:// URL or a directory."),
]
Device = Annotated[str | None, _opt("--device", envvar="MNISTCTL_DEVICE", help="auto, cpu, cuda, cuda:N or mps.")]
InferenceAmp = Annotated[bool | None, _opt("--amp/--no-amp", help="Mixed precision. \\[default: the device's]")]
Threads = Annotated[int | None, _opt("--threads", min=1, help="CPU threads for torch. \\[default: one a core]")]
PredictThreads = Annotated[
    int | None,
    _opt(
        "--threads", min=1, help="CPU threads for torch. \\[default on the CPU: the cores less --workers, at least 1]"
    ),
]
Model = Annotated[
    Path | None,
    _opt("--model", "-m", help="Checkpoint. \\[default: $MNISTCTL_MODEL, else ./digit_model.pt, else the bundled one]"),
]
BatchSize = Annotated[int, _opt("--batch-size", "-b", min=1, help="Images per forward pass.")]
Force = Annotated[bool, _opt("--force", help="Fetch again even when valid files are present.")]

# --------------------------------------------------------------------------------------------- train

Epochs = Annotated[
    int | None,
    _opt(
        "--epochs", "-e", **RANGES["epochs"].typer, help=f"Passes over the training set. \\[default: {DEFAULT_EPOCHS}]"
    ),
]
_DEFAULT_ARCHS = ", ".join(f"{arch} on a {kind.upper()}" for kind, arch in DEFAULT_ARCH.items())
Arch = Annotated[str | None, _opt("--arch", help=f"{ARCHS.listed()}. \\[default: {_DEFAULT_ARCHS}]", panel=RECIPE)]
Optimizer = Annotated[str | None, _opt("--optimizer", help=f"{OPTIMIZERS.listed()}.", panel=RECIPE)]
Lr = Annotated[float | None, _opt("--lr", help="Peak learning rate.", panel=RECIPE)]
TrainBatch = Annotated[
    int | None, _opt("--batch-size", "-b", **RANGES["batch_size"].typer, help="Images per step.", panel=RECIPE)
]
Schedule = Annotated[str | None, _opt("--schedule", help=f"{SCHEDULES.listed()}.", panel=RECIPE)]
WeightDecay = Annotated[
    float | None, _opt("--weight-decay", help="Weight decay: decoupled for adamw, L2 for the others.", panel=RECIPE)
]
LabelSmoothing = Annotated[
    float | None,
    _opt(
        "--label-smoothing",
        **RANGES["label_smoothing"].typer,
        help="Smooth the targets: this much of each spread evenly over all the classes.",
        panel=RECIPE,
    ),
]
Ema = Annotated[
    float | None,
    _opt("--ema", **RANGES["ema"].typer, help="Evaluate and save a moving average (0: off).", panel=RECIPE),
]
Augment = Annotated[bool | None, _opt("--augment/--no-augment", help="Augment the training images.", panel=AUGMENT)]
# The four below act only where the images are augmented (--augment, or a recipe that does): train refuses them
# otherwise (TrainConfig.check_augmentation).
Rotate = Annotated[
    float | None, _opt("--rotate", **RANGES["rotate"].typer, help="Random rotation, ± degrees.", panel=AUGMENT)
]
Scale = Annotated[
    float | None, _opt("--scale", **RANGES["scale"].typer, help="Random scale, ± fraction.", panel=AUGMENT)
]
Shift = Annotated[float | None, _opt("--shift", **RANGES["shift"].typer, help="Random shift, ± pixels.", panel=AUGMENT)]
Elastic = Annotated[
    float | None,
    _opt("--elastic", **RANGES["elastic"].typer, help="Random smooth warp, up to N pixels.", panel=AUGMENT),
]
Negatives = Annotated[
    float | None,
    _opt(
        "--negatives",
        **RANGES["negatives"].typer,
        metavar="X",
        help="Non-digits to add, this fraction of the images, as an 11th class ('not a digit'), and half as many again"
        " pieces cut from numbers (half of them digits).",
        panel=RECIPE,
    ),
]
Seed = Annotated[int | None, _opt("--seed", help="Fixes order, initial weights, augmentation. \\[default: 0]")]
TrainLimit = Annotated[
    int | None, _opt("--train-limit", **RANGES["train_limit"].typer, help="Use only the first N training images.")
]
Out = Annotated[
    str | None,
    _opt("--out", "-o", metavar="FILE", help="Checkpoint to write. \\[default: $MNISTCTL_MODEL, else digit_model.pt]"),
]
Resume = Annotated[bool, _opt("--resume", help="Continue the run in --out (with --epochs: to a new total).")]
Overwrite = Annotated[bool, _opt("--force", help="Overwrite --out even if it holds another model or file.")]
Amp = Annotated[bool | None, _opt("--amp/--no-amp", help="Mixed precision. \\[default: the device's]", panel=SPEED)]
ChannelsLast = Annotated[bool | None, _opt("--channels-last/--no-channels-last", help="NHWC layout.", panel=SPEED)]
Compile = Annotated[bool, _opt("--compile", help="torch.compile the model.", panel=SPEED)]
Nproc = Annotated[int | None, _opt("--nproc", min=1, help="Data-parallel in N processes (torchrun).", panel=SPEED)]

# --------------------------------------------------------------------------------------------- eval

Split = Annotated[Literal["test", "train"], _opt("--split", help="test (10,000 images) or train (60,000).")]
Top = Annotated[int, _opt("--top", min=0, help="How many of the most confident mistakes to list.")]
SaveErrors = Annotated[
    Path | None, _opt("--save-errors", help="A new or empty folder to write a PNG of each mistake into.")
]
AddToFolder = Annotated[bool, _opt("--force", help="Write into a --save-errors folder that is not empty.")]

# --------------------------------------------------------------------------------------------- predict

Inputs = Annotated[
    list[str] | None,
    typer.Argument(
        help="Image files, directories, or - to read paths from stdin.", show_default=False, metavar="IMAGE"
    ),
]
Multi = Annotated[bool, _opt("--multi", help="Read every digit in each image, left to right, as one number.")]
TopK = Annotated[
    int, _opt("--top-k", "-k", min=0, max=9, help="Also print the next K digits (the K likeliest where it declines).")
]
MinConfidence = Annotated[
    float,
    _opt(
        "--min-confidence",
        min=0.0,
        max=1.0,
        metavar="P",
        help="Below this probability, answer ? (unsure) instead of a digit.",
    ),
]
AlwaysAnswer = Annotated[
    bool, _opt("--always-answer", help="Name the likeliest digit even when unsure or when it is not a digit.")
]
Recursive = Annotated[bool, _opt("--recursive", "-r", help="Descend into subdirectories.")]
Null = Annotated[bool, _opt("--null", "-0", help="Paths on stdin end with NUL, not newline (find -print0).")]
Invert = Annotated[
    Literal["auto", "yes", "no"], _opt("--invert", help="auto (from the border), yes (dark ink on light) or no.")
]
NoPreprocess = Annotated[bool, _opt("--no-preprocess", help="Only resize to 28×28: no cropping or centring.")]
Show = Annotated[bool, _opt("--show", help="Draw the 28×28 input the network saw (on stderr).")]
Workers = Annotated[int | None, _opt("--workers", min=0, help="Decoding threads. \\[default: half the cores, 1 to 8]")]
JsonLines = Annotated[bool, _opt("--json", help="JSON Lines: one object per image, with all probabilities.")]

# --------------------------------------------------------------------------------------------- compare

Optimizers = Annotated[str, _opt("--optimizers", help=f"Comma-separated, some of: {', '.join(OPTIMIZERS)}.")]
# What --optimizers compares when not given: the original project's question (config.COMPARE_LRS).
DEFAULT_COMPARED = ",".join(COMPARE_LRS)
_COMPARE_LRS = ", ".join(f"{name}={lr:g}" for name, lr in COMPARE_LRS.items())
Lrs = Annotated[
    str | None, _opt("--lr", help=f"One rate, or NAME=RATE pairs. \\[default: {_COMPARE_LRS}; others their own]")
]
CompareEpochs = Annotated[int, _opt("--epochs", "-e", **RANGES["epochs"].typer, help="Epochs per optimizer.")]
CompareArch = Annotated[str, _opt("--arch", help=f"{ARCHS.listed()} (seed: the original network).")]
CompareBatch = Annotated[int, _opt("--batch-size", "-b", **RANGES["batch_size"].typer, help="Images per step.")]
CompareSchedule = Annotated[str, _opt("--schedule", help=f"{SCHEDULES.listed()}.")]
CompareAugment = Annotated[bool, _opt("--augment/--no-augment", help="Augment the training images.")]
CompareSeed = Annotated[int, _opt("--seed", help="Initial weights, batch order and augmentation.")]
Results = Annotated[str, _opt("--results", metavar="FILE", help="JSON file each finished run is saved to.")]
SkipDone = Annotated[bool, _opt("--resume", help="Skip runs already in --results.")]
Csv = Annotated[str | None, _opt("--csv", metavar="FILE", help="Write the per-epoch history as CSV (-: to stdout).")]
Plot = Annotated[
    str | None, _opt("--plot", metavar="FILE", help="Write loss and accuracy curves as a PNG (needs matplotlib).")
]
CompareForce = Annotated[bool, _opt("--force", help="Replace --results even if it holds another comparison or file.")]

# --------------------------------------------------------------------------------------------- serve

Host = Annotated[str, _opt("--host", help="Address to listen on (0.0.0.0: every network; mind who can reach it).")]
Port = Annotated[int, _opt("--port", "-p", min=0, max=65535, help="Port to listen on (0: any free one).")]
MaxUpload = Annotated[float, _opt("--max-upload", min=0.001, max=1024, help="Largest request body, in MB.")]
BatchWait = Annotated[
    float, _opt("--batch-wait", min=0, max=1000, help="Milliseconds a lone request waits to share a forward pass.")
]
ServeWorkers = Annotated[
    int,
    _opt("--workers", "-w", min=1, max=64, help="Server processes, each with its own model, sharing the port (Linux)."),
]
ServeThreads = Annotated[
    int | None,
    _opt(
        "--threads",
        min=1,
        help="CPU threads for torch, in each worker. \\[default on the CPU: its share of the cores less 1, at least 1]",
    ),
]
ServeQuiet = Annotated[
    bool, _opt("--quiet", "-q", help="No line per request on stderr: only starting, stopping and errors.")
]


def examples_epilog(examples: str) -> str:
    """A command's examples (one per line: the command, two spaces, a comment) as its help's epilog: each
    comment, then the command on a line of its own, so that both fit 80 columns."""
    shown = []
    for line in examples.strip().splitlines():
        command, _, comment = (part.strip() for part in line.partition("  "))
        command = command.replace("[", "\\[")  # literal, not Rich markup
        shown.append(f"  [dim]# {comment}[/]\n  {command}" if comment else f"  {command}")
    return "[bold]Examples[/]\n\n" + "\n\n".join(shown)
