"""The `mnistctl` command line: options, one call into the core, rendering. Nothing else lives here.

The options and Typer's classes are in ``options``; what a failure prints and exits with, in ``failures``
(every command runs inside it, through ``options.Command``). No torch import at module level: `mnistctl --help`
and `mnistctl download` must not pay for it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from mnistctl.cli import options as opt
from mnistctl.cli import serve as serve_command
from mnistctl.cli.loading import mnist_data_dir, model_reader
from mnistctl.config import MIN_CONFIDENCE, describe_defaults

app = typer.Typer(
    name="mnistctl",
    cls=opt.Group,
    help="Recognise handwritten digits: download MNIST, train a CNN, evaluate it, read digits in your images.",
    epilog="[bold]Examples[/]\n\n"
    "  mnistctl predict digit.png                read a digit (a trained model is included)\n\n"
    "  mnistctl predict --multi number.jpg       read every digit of a number\n\n"
    "  mnistctl download --mirror ~/mnist        fetch MNIST from a local copy\n\n"
    "  mnistctl train --epochs 10                train your own network\n\n"
    "  mnistctl eval                             accuracy, confusion matrix\n\n"
    "  mnistctl compare-optimizers --plot c.png  Adam vs SGD, with curves\n\n"
    "[dim]Add --help after any command for its options and more examples.[/]",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _command(name: str | None = None, *, help: str, examples: str) -> Any:  # noqa: A002 - Typer's word
    """Register a command with its help, a short help (its first sentence) and its examples."""
    short = help.split(". ")[0].split(": ")[0].rstrip(".")
    return app.command(name, cls=opt.Command, help=help, short_help=short, epilog=opt.examples_epilog(examples))


@app.callback()
def main(version: opt.Version = False, debug: opt.Debug = False) -> None:
    if debug:
        os.environ["MNISTCTL_DEBUG"] = "1"  # read by the error handler, and by processes we start (torchrun)


# --------------------------------------------------------------------------------------------- commands


@_command(
    help="Fetch the four MNIST files into the data directory and verify their checksums.",
    examples="""
mnistctl download                               from the public mirrors
mnistctl download --mirror /media/usb/mnist     from a directory (offline)
mnistctl download --data-dir ./data --force     fetch again even if present
""",
)
def download(
    data_dir: opt.DataDir = None,
    mirror: opt.Mirror = None,
    force: opt.Force = False,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
) -> None:
    from mnistctl import report
    from mnistctl.data.download import DownloadError, download_mnist
    from mnistctl.data.mnist import raw_dir, resolve_data_dir

    directory = resolve_data_dir(data_dir)
    try:
        with report.download_progress(quiet) as progress:
            results = download_mnist(directory, mirror=mirror, force=force, progress=progress)
    except DownloadError as exc:
        if json_out:
            report.print_json({"data_dir": str(raw_dir(directory)), "files": [r.to_dict() for r in exc.results]})
        raise
    if json_out:
        report.print_json({"data_dir": str(raw_dir(directory)), "files": [r.to_dict() for r in results]})
    else:
        report.show_result(report.download_table(results, str(raw_dir(directory))))
        report.log(report.download_summary(results), quiet=quiet)


@_command(
    help="Train a digit classifier on MNIST; write a checkpoint after every epoch. Options left out come from "
    f"the recipe for the device: {describe_defaults()}.\n\nData-parallel: --nproc N, or `torchrun --standalone "
    "--nproc_per_node N -m mnistctl train …`; the batch size is the global one, and only rank 0 prints and writes.",
    examples="""
mnistctl train                                   10 epochs of the default network → digit_model.pt
mnistctl train --epochs 3 --train-limit 10000    a quick run on the first 10,000 images
mnistctl train --arch seed                       the original project's network and recipe
mnistctl train --resume                          continue an interrupted run of digit_model.pt
mnistctl train --resume --epochs 20              train a finished 10-epoch run 10 epochs more
""",
)
def train(
    epochs: opt.Epochs = None,
    arch: opt.Arch = None,
    optimizer: opt.Optimizer = None,
    lr: opt.Lr = None,
    batch_size: opt.TrainBatch = None,
    schedule: opt.Schedule = None,
    weight_decay: opt.WeightDecay = None,
    label_smoothing: opt.LabelSmoothing = None,
    ema: opt.Ema = None,
    augment: opt.Augment = None,
    rotate: opt.Rotate = None,
    scale: opt.Scale = None,
    shift: opt.Shift = None,
    elastic: opt.Elastic = None,
    negatives: opt.Negatives = None,
    seed: opt.Seed = None,
    train_limit: opt.TrainLimit = None,
    out: opt.Out = None,
    resume: opt.Resume = False,
    force: opt.Overwrite = False,
    device: opt.Device = None,
    amp: opt.Amp = None,
    channels_last: opt.ChannelsLast = None,
    compile_model: opt.Compile = False,
    threads: opt.Threads = None,
    nproc: opt.Nproc = None,
    data_dir: opt.DataDir = None,
    mirror: opt.Mirror = None,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
) -> None:
    from mnistctl import report
    from mnistctl.config import TrainConfig
    from mnistctl.training import Relaunched, TrainRequest, is_main_process, run_training

    main_rank = is_main_process()  # under torchrun, only rank 0 prints
    quiet, json_out = (quiet, json_out) if main_rank else (True, False)
    config = TrainConfig(
        arch=arch, epochs=epochs, optimizer=optimizer, lr=lr, batch_size=batch_size, schedule=schedule,
        weight_decay=weight_decay, label_smoothing=label_smoothing, augment=augment, rotate=rotate, scale=scale,
        shift=shift, elastic=elastic, ema=ema, seed=seed, train_limit=train_limit, channels_last=channels_last,
        negatives=negatives, compile=compile_model,
    )  # fmt: skip
    if not resume:  # a resumed run's options are checked against the run's own
        config.check_augmentation()
    request = TrainRequest(
        config, out=out, resume=resume, force=force, device=device, threads=threads, amp=amp, nproc=nproc,
        argv=sys.argv[1:],
    )  # fmt: skip
    callbacks = report.train_callbacks(quiet=quiet, json_out=json_out)
    result = run_training(request, lambda: mnist_data_dir(data_dir, mirror, quiet), callbacks)
    if isinstance(result, Relaunched):
        raise typer.Exit(result.returncode)
    if not main_rank:
        return
    if json_out:
        report.print_json(result.summary())
        return
    report.show_result(report.epochs_table(result.history, title=f"{result.config.arch} on {result.device}"))
    report.log(report.train_summary(result, result.checkpoint), quiet=quiet)


@_command(
    "eval",
    help="Evaluate a checkpoint: accuracy, loss, confusion matrix, per-class scores, confident mistakes.",
    examples="""
mnistctl eval                                    the default model on the 10,000 test images
mnistctl eval -m seed.pt --split train
mnistctl eval --save-errors errors/              write every misclassified digit as a PNG (a new or empty folder)
mnistctl eval --json | jq .accuracy
""",
)
def eval_(
    model: opt.Model = None,
    split: opt.Split = "test",
    top: opt.Top = 10,
    save_errors: opt.SaveErrors = None,
    force: opt.AddToFolder = False,
    batch_size: opt.BatchSize = 2000,
    device: opt.Device = None,
    amp: opt.InferenceAmp = None,
    threads: opt.Threads = None,
    data_dir: opt.DataDir = None,
    mirror: opt.Mirror = None,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
) -> None:
    from mnistctl import report
    from mnistctl.data.mnist import load_split
    from mnistctl.engine import evaluate_split
    from mnistctl.fsutil import check_directory
    from mnistctl.metrics import misclassified
    from mnistctl.outputs import save_mistakes

    if save_errors is not None:
        check_directory(save_errors, "--save-errors", empty=not force)
    reader = model_reader(model, amp, device, threads, quiet, second=False)  # the checkpoint's own accuracy
    path, arch = reader.meta.path, reader.meta.arch
    images, labels = load_split(mnist_data_dir(data_dir, mirror, quiet), split)
    with report.counting(f"evaluating on {split}", len(images), quiet) as advance:
        result, logits = evaluate_split(
            split, reader.network, reader.meta.normalization, images, labels, reader.device,
            batch_size=batch_size, top_mistakes=top, on_batch=advance,
        )  # fmt: skip
    saved = None
    if save_errors is not None:
        saved = save_mistakes(save_errors, images, labels, *misclassified(logits, labels))
    if json_out:
        report.print_json({"model": path, "arch": arch, **result.to_dict(), "saved_errors": saved})
        return
    for renderable in report.eval_report(result, path, arch):
        report.show_result(renderable)
    if saved is not None:
        report.log(f"Wrote {saved} misclassified digit(s) to {save_errors}.", quiet=quiet)


@_command(
    help="Recognise the digit in each image (or, with --multi, every digit of a number): one line per image, "
    "`path<TAB>digit<TAB>confidence`.\n\nPhotos and drawings (dark ink on light paper, any size, off-centre, RGB, "
    "JPEG, PNG with alpha) are turned into MNIST-style 28×28 inputs first. Where the reader is unsure (or the "
    "model takes the image for no digit), the digit is ? — a result, not an error. Bad files are reported one "
    "line each on stderr; the rest are still predicted, and the exit code is 1 if any failed.",
    examples="""
mnistctl predict digit.png                       the digit, its probability and what the network saw
mnistctl predict --multi number.jpg              every digit, left to right: path, number, confidence
mnistctl predict scans/ --recursive > answers.tsv
mnistctl predict --min-confidence 0.9 form/*.png  ? wherever the reader is less than 90 % sure
find scans -name '*.png' -print0 | mnistctl predict -0 - | cut -f2 | sort | uniq -c
""",
)
def predict(
    inputs: opt.Inputs = None,
    model: opt.Model = None,
    multi: opt.Multi = False,
    top_k: opt.TopK = 0,
    min_confidence: opt.MinConfidence = MIN_CONFIDENCE,
    always_answer: opt.AlwaysAnswer = False,
    recursive: opt.Recursive = False,
    null: opt.Null = False,
    invert: opt.Invert = "auto",
    no_preprocess: opt.NoPreprocess = False,
    show: opt.Show = False,
    batch_size: opt.BatchSize = 512,
    workers: opt.Workers = None,
    device: opt.Device = None,
    amp: opt.InferenceAmp = None,
    threads: opt.PredictThreads = None,
    json_out: opt.JsonLines = False,
    quiet: opt.Quiet = False,
) -> None:
    from mnistctl import report
    from mnistctl.errors import UsageError
    from mnistctl.inputs import expand_inputs, read_path_list
    from mnistctl.reader import default_workers
    from mnistctl.runtime import leave_cores

    if not inputs:
        raise UsageError("no images given", "pass image files, directories, or - to read paths from stdin")
    if multi and top_k and not json_out:  # a line holds one number: no room for each digit's runners-up
        raise UsageError("--top-k with --multi is shown only in --json", "add --json, or leave out --top-k")
    if multi and no_preprocess:
        raise UsageError("--multi needs the preprocessing that finds each digit", "leave out --no-preprocess")
    if "-" in inputs and sys.stdin.isatty():
        separator = "NUL-separated" if null else "one per line"
        report.log(f"Reading image paths from stdin ({separator}); end the list with Ctrl-D.", quiet=quiet)
    names = [n for item in inputs for n in (read_path_list(sys.stdin.buffer, null=null) if item == "-" else [item])]
    paths, problems = expand_inputs(names, recursive)
    for problem in problems:
        report.path_error(*problem)
    reader = model_reader(model, amp, device, threads, quiet)
    workers = default_workers() if workers is None else workers
    if reader.device.type == "cpu" and threads is None:
        leave_cores(workers)  # torch's threads spin while they wait: they must not compete with the decoding ones
    options = {
        "batch_size": batch_size,
        "workers": workers,
        "invert": invert,
        "min_confidence": min_confidence,
        "always_answer": always_answer,
    }
    if multi:
        results = reader.read_numbers(paths, **options)
    else:
        results = reader.read_digits(paths, preprocess=not no_preprocess, **options)
    panel = len(paths) == 1 and not problems and not json_out and report.is_terminal("out")
    failed = report.print_predictions(
        paths, results, json_out=json_out, top_k=top_k, panel=panel, show=show, quiet=quiet
    )
    if failed or problems:
        raise typer.Exit(1)


@_command(
    "compare-optimizers",
    help="Train the same model once per optimizer — same data, seed and initial weights — and compare.\n\nThe "
    "defaults repeat the original project's comparison: its network (--arch seed), batch 32, no augmentation, "
    "a constant rate, Adam 1e-3 against SGD with Nesterov momentum 0.9 at 1e-3. That is 20 epochs of training: "
    "25 minutes to over an hour on a 2-core CPU (an estimate is printed after the first epoch); --epochs and "
    "--train-limit make it shorter.",
    examples="""
mnistctl compare-optimizers                      the original question: Adam 1e-3 vs SGD-Nesterov 1e-3
mnistctl compare-optimizers --epochs 2 --train-limit 10000 --plot c.png  a quick look, with curves
mnistctl compare-optimizers --lr adam=1e-3,sgd-nesterov=0.05 --csv h.csv  each at its own rate; CSV history
mnistctl compare-optimizers --resume             skip the runs the results file already holds
""",
)
def compare_optimizers(
    optimizers: opt.Optimizers = opt.DEFAULT_COMPARED,
    lr: opt.Lrs = None,
    epochs: opt.CompareEpochs = 10,
    arch: opt.CompareArch = "seed",
    batch_size: opt.CompareBatch = 32,
    schedule: opt.CompareSchedule = "constant",
    augment: opt.CompareAugment = False,
    seed: opt.CompareSeed = 0,
    train_limit: opt.TrainLimit = None,
    results: opt.Results = "compare-results.json",
    resume: opt.SkipDone = False,
    force: opt.CompareForce = False,
    csv: opt.Csv = None,
    plot: opt.Plot = None,
    device: opt.Device = None,
    threads: opt.Threads = None,
    data_dir: opt.DataDir = None,
    mirror: opt.Mirror = None,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
) -> None:
    from mnistctl import report
    from mnistctl.compare import check_outputs, history_csv, parse_lrs, parse_optimizers
    from mnistctl.compare import compare_optimizers as run_comparison
    from mnistctl.config import TrainConfig
    from mnistctl.data.mnist import load_mnist
    from mnistctl.fsutil import write_text_atomic
    from mnistctl.outputs import check_plotting, plot_comparison
    from mnistctl.runtime import setup_device

    names = parse_optimizers(optimizers)
    rates = parse_lrs(lr, names)
    base = TrainConfig(
        arch=arch, epochs=epochs, batch_size=batch_size, schedule=schedule, weight_decay=0.0, label_smoothing=0.0,
        augment=augment, ema=0.0, seed=seed, train_limit=train_limit, precision="fp32",
    )  # fmt: skip
    base.validate()
    outputs = check_outputs(results, csv, plot, resume=resume, force=force, json_out=json_out)
    if plot is not None:
        check_plotting()
    torch_device = setup_device(device, threads)
    data = load_mnist(mnist_data_dir(data_dir, mirror, quiet))
    comparison = run_comparison(
        names, rates, base, data, torch_device, results=outputs.results, resume=resume,
        callbacks_for=lambda name, i, total: report.comparison_callbacks(name, i, total, epochs, quiet=quiet),
    )  # fmt: skip
    if comparison.skipped:
        report.log(f"Skipped {', '.join(comparison.skipped)}: already in {results}.", quiet=quiet)
    if outputs.csv is not None:
        write_text_atomic(outputs.csv, history_csv(comparison))
    if outputs.plot is not None:
        plot_comparison(comparison, str(outputs.plot), report.comparison_title(comparison.base))
    if json_out:
        report.print_json(comparison.to_dict())
    elif csv == "-":  # the CSV is the result on stdout
        report.print_text(history_csv(comparison))
    else:
        report.show_result(report.comparison_table(comparison))
    report.log(f"Wrote {', '.join(str(p) for p in outputs.files)}.", quiet=quiet)


_command(help=serve_command.HELP, examples=serve_command.EXAMPLES)(serve_command.serve)


@_command(
    help="Versions, devices, precision, threads, data files and the model commands would use: for bug reports.",
    examples="""
mnistctl info                 human-readable tables
mnistctl info --json | jq .devices
""",
)
def info(data_dir: opt.DataDir = None, json_out: opt.Json = False) -> None:
    from mnistctl import report
    from mnistctl.data.mnist import resolve_data_dir
    from mnistctl.info import collect_info

    details = collect_info(resolve_data_dir(data_dir, create=False))
    if json_out:
        report.print_json(details)
        return
    for table in report.info_tables(details):
        report.show_result(table)
