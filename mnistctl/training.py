"""The `train` use case, from a parsed command line to a finished run: what `mnistctl train` does between
reading its options and printing its result.

:func:`run_training` starts the run again under torchrun when ``--nproc`` asks for processes this one is not
among, picks the device and precision, owns the checkpoint file for the run (:func:`mnistctl.runs.training_run`:
the lock, never replacing a model unasked, what ``--resume`` continues with), reads the data and trains
(:func:`mnistctl.train.fit`). It prints nothing: progress goes to the callbacks it is given, and the data
directory comes from a callable, so that the command line can show a download's progress when MNIST is missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mnistctl.config import TrainConfig
from mnistctl.train import TrainCallbacks, TrainResult


@dataclass(frozen=True)
class TrainRequest:
    """What `mnistctl train` was asked for. In ``config``, a setting left out (None) comes from the recipe for
    the device, or from the run itself with ``resume``."""

    config: TrainConfig
    out: str | None = None  # -o as given; None: $MNISTCTL_MODEL, else ./digit_model.pt
    resume: bool = False
    force: bool = False  # replace whatever ``out`` holds
    device: str | None = None
    threads: int | None = None
    amp: bool | None = None  # --amp / --no-amp; None: the device's default precision
    nproc: int | None = None  # processes to train in (torchrun); None or 1: this one
    argv: Sequence[str] = ()  # the command's arguments, to start it again under torchrun for ``nproc``


@dataclass(frozen=True)
class Relaunched:
    """The run took place in torchrun's processes, started for ``--nproc``; this one only waited for them."""

    returncode: int  # torchrun's exit status, which is this command's


def is_main_process() -> bool:
    """Whether this process speaks for the run: under torchrun only rank 0 reports and writes."""
    from mnistctl.runtime import dist_info

    return dist_info().is_main


def run_training(
    request: TrainRequest, data_dir: Callable[[], Path], callbacks: TrainCallbacks | None = None
) -> TrainResult | Relaunched:
    """Train as ``request`` says and return the result (on every rank; only rank 0's has a history).

    ``data_dir`` is called, once the checkpoint file is known to be ours to write, for the directory holding
    MNIST (downloading it first if needed). The order of the checks is the order of their cost: the options,
    the device, the output path, the lock and what the file holds, and only then the data.
    """
    from mnistctl.checkpoint import default_model_path
    from mnistctl.data.mnist import load_mnist
    from mnistctl.fsutil import output_path
    from mnistctl.runs import training_run
    from mnistctl.runtime import device_kind, dist_info, launch_torchrun, precision_option, setup_device
    from mnistctl.train import fit

    if request.nproc is not None and request.nproc > 1 and dist_info().world_size == 1:
        return Relaunched(launch_torchrun(request.nproc, request.device, request.argv))
    request.config.validate()  # before any slow work
    device = setup_device(request.device, request.threads)
    requested = dataclasses.replace(request.config, precision=precision_option(request.amp, device))
    path = output_path(request.out, "-o") if request.out else default_model_path()
    kind, writer = device_kind(device), dist_info().is_main
    run = training_run(path, requested, resume=request.resume, force=request.force, device_kind=kind, writer=writer)
    with run as (config, checkpoint):
        data = load_mnist(data_dir())
        return fit(config, data, device, out=path, resume=checkpoint, callbacks=callbacks)
