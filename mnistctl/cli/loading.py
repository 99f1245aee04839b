"""What commands load before their work: the model a reader reads with, and MNIST (downloaded when missing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_reader(
    model: Path | None, amp: bool | None, device: str | None, threads: int | None, quiet: bool, second: bool = True
) -> Any:
    """For eval and predict: a reader (the public API's) for the checkpoint ``-m`` names, or the default one
    (said on stderr), on the device, in its precision or as --amp/--no-amp say; ``second`` False: without the
    bundled model's second network (``eval`` measures the checkpoint alone)."""
    from mnistctl import report
    from mnistctl.checkpoint import find_model
    from mnistctl.reader import load_reader

    path, origin = find_model(model)
    if origin != "option":
        report.log(f"Using {origin}." if origin.endswith(str(path)) else f"Using {origin}: {path}.", quiet=quiet)
    precision = None if amp is None else ("amp" if amp else "fp32")
    return load_reader(
        path, device=device, precision=precision, threads=threads, second_model=None if second else False
    )


def mnist_data_dir(data_dir: Path | None, mirror: str | None, quiet: bool) -> Path:
    """The data directory, with MNIST downloaded first (through `download`'s code) when a file is missing."""
    from mnistctl import report
    from mnistctl.data.download import ensure_mnist
    from mnistctl.data.mnist import files_present, resolve_data_dir

    directory = resolve_data_dir(data_dir)
    if not files_present(directory):
        report.log(f"MNIST is not in {directory} yet; downloading it first.", quiet=quiet)
        with report.download_progress(quiet) as progress:
            ensure_mnist(directory, mirror=mirror, progress=progress)
    return directory
