"""`mnistctl info`: what a user pastes into a bug report."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from mnistctl import __version__
from mnistctl.checkpoint import find_model
from mnistctl.data.mnist import check_files
from mnistctl.errors import MnistctlError
from mnistctl.runtime import (
    NATIVE_BF16,
    Accelerators,
    default_precision,
    describe_devices,
    dist_info,
    rank_device_name,
    read_cpu_flags,
    resolve_device_name,
    versions,
)


def collect_info(data_dir: Path) -> dict[str, Any]:
    import torch

    acc = Accelerators.detect()
    files = check_files(data_dir)
    model = _model()
    try:
        auto = resolve_device_name(os.environ.get("MNISTCTL_DEVICE") or "auto", acc)
    except Exception as exc:  # a bad MNISTCTL_DEVICE is worth reporting, not failing on
        auto = f"invalid MNISTCTL_DEVICE ({exc})"
    dist = dist_info()
    rank_device = auto
    if auto.startswith("cuda"):
        try:
            rank_device = rank_device_name(auto, dist, acc)
        except Exception as exc:
            rank_device = f"none ({exc})"
    return {
        "mnistctl": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **versions(),
        "threads": torch.get_num_threads(),
        "devices": describe_devices(acc),
        "auto_device": auto,
        "data_dir": str(data_dir),
        "data_ok": all(f.state == "present" for f in files),
        "data_files": [{"name": f.name, "path": f.path, "state": f.state} for f in files],
        "model": model,
        "precision": _precision(auto),
        "cpu_native_bf16": bool(NATIVE_BF16 & read_cpu_flags()),
        "distributed": {
            "rank": dist.rank,
            "world_size": dist.world_size,
            "local_rank": dist.local_rank,
            "device": rank_device,
            "backend": "nccl" if rank_device.startswith("cuda") else "gloo",
            "rule": "under torchrun, local rank i uses cuda:i on GPU machines, else the CPU (gloo)",
        },
    }


def _model() -> dict[str, Any]:
    """Which checkpoint `eval` and `predict` would use without -m (and why), or why there is none."""
    try:
        path, origin = find_model(None)
    except MnistctlError as exc:
        return {"path": None, "source": None, "exists": False, "problem": exc.message}
    return {"path": str(path), "source": origin, "exists": path.is_file()}


def _precision(device: str) -> str:
    """What `train` would use on the automatic device."""
    import torch

    try:
        return default_precision(torch.device(device))
    except RuntimeError:
        return "unknown"
