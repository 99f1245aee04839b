"""What the bench scripts share: the `mnistctl` command to run, and the machine a figure comes from."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def mnistctl_command() -> list[str]:
    """The installed `mnistctl` script, else `python -m mnistctl` (a checkout on PYTHONPATH, as on a lent GPU)."""
    exe = shutil.which("mnistctl") or str(Path(sys.executable).parent / "mnistctl")
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "mnistctl"]


def machine() -> str:
    """The GPU's name, or the CPU's model, cores and the flags that decide the precision."""
    import torch

    from mnistctl.runtime import cpu_model, read_cpu_flags

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    flags = sorted(read_cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    return f"CPU {cpu_model()} ({os.cpu_count()} cores; {' '.join(flags) or 'no AVX'})"


def load_test_digits(data_dir: Path, mirror: str | None, n: int):  # noqa: ANN201 - two torch tensors
    """The first ``n`` MNIST test digits and their labels (MNIST downloaded from ``mirror`` first if needed)."""
    from mnistctl.data.download import ensure_mnist
    from mnistctl.data.mnist import load_split

    ensure_mnist(data_dir, mirror=mirror)
    images, labels = load_split(data_dir, "test")
    return images[:n], labels[:n]
