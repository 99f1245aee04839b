"""Checkpoints: saved atomically with their metadata, loaded only through ``weights_only=True``.

A checkpoint is a dict of tensors and plain values (see :func:`make_checkpoint`). A plain state_dict of the
original project's ``DigitClassifier`` (its ``digit_model.pt``) loads too, as architecture ``seed``.
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

from mnistctl.errors import MnistctlError

FORMAT = "mnistctl-checkpoint"
VERSION = 1


def default_model_path() -> Path:
    """``$MNISTCTL_MODEL``, else ``digit_model.pt`` in the working directory, as in the original project."""
    return Path(os.environ.get("MNISTCTL_MODEL") or "digit_model.pt").expanduser()


def make_checkpoint(
    *,
    arch: str,
    arch_config: dict[str, Any],
    state_dict: dict[str, Any],
    normalization: tuple[float, float],
    epoch: int,
    config: dict[str, Any],
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    optimizer: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    rng: dict[str, Any] | None = None,
) -> dict[str, Any]:
    import torch

    from mnistctl import __version__

    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "arch_config": arch_config,
        "state_dict": state_dict,
        "normalization": {"mean": float(normalization[0]), "std": float(normalization[1])},
        "epoch": epoch,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "rng": rng,
        "config": config,
        "history": history,
        "metrics": metrics,
        "versions": {"mnistctl": __version__, "torch": str(torch.__version__), "python": sys.version.split()[0]},
    }


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to a temporary file beside ``path`` and move it into place."""
    import torch

    from mnistctl.fsutil import atomic_path

    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


SEED_KEYS = {f"model.{i}.{kind}" for i in (0, 2, 4, 7) for kind in ("weight", "bias")}


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate a checkpoint; a plain seed state_dict is wrapped into one.

    Everything that can go wrong — missing, empty, truncated, not a torch file, a pickle that would run
    code, a state_dict of an unknown network — becomes a one-line :class:`MnistctlError`.
    """
    import torch

    path = Path(path)
    retrain = "train one with `mnistctl train`, or pass another with -m/--model"
    if not path.exists():
        raise MnistctlError(f"model file {path} does not exist", retrain)
    if path.is_dir():
        raise MnistctlError(f"model path {path} is a directory", "pass the checkpoint file itself")
    if path.stat().st_size == 0:
        raise MnistctlError(f"model file {path} is empty", retrain)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": our error says it better
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know: those are what can run code when unpickled.
        if "Unsupported global" in str(exc) or "not an allowed global" in str(exc):
            raise MnistctlError(
                f"refusing to load {path}: it contains Python objects that could run code when loaded",
                "only load checkpoints you trust; mnistctl loads weights only",
            ) from exc
        raise MnistctlError(f"{path} is not a PyTorch checkpoint", retrain) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, UnicodeDecodeError) as exc:
        raise MnistctlError(f"{path} is not a readable PyTorch checkpoint ({_first_line(exc)})", retrain) from exc
    return _normalise(obj, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _normalise(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    from mnistctl.models import ARCHITECTURES

    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if obj.get("version", 0) > VERSION:
            raise MnistctlError(
                f"{path} was written by a newer mnistctl (checkpoint format {obj['version']})", "upgrade mnistctl"
            )
        if obj.get("arch") not in ARCHITECTURES:
            raise MnistctlError(
                f"{path} uses an architecture this mnistctl does not know ({obj.get('arch')!r})", "upgrade mnistctl"
            )
        return obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if set(obj) == SEED_KEYS:
            return make_checkpoint(
                arch="seed",
                arch_config={},
                state_dict=obj,
                normalization=ARCHITECTURES["seed"].normalization,
                epoch=0,
                config={"source": "plain state_dict of the original DigitClassifier"},
                history=[],
                metrics={},
            )
        raise MnistctlError(
            f"{path} is a state_dict of a network mnistctl does not know (keys: {', '.join(list(obj)[:4])}, …)",
            "pass a checkpoint written by `mnistctl train` or the original project's digit_model.pt",
        )
    raise MnistctlError(f"{path} is not an mnistctl checkpoint", "pass a file written by `mnistctl train`")


def build_model(checkpoint: dict[str, Any]):
    """The network a checkpoint describes, for inference: its weights loaded (shapes checked), in eval mode,
    BatchNorm folded into the convolutions, in the memory layout that is fastest for it."""
    import torch

    from mnistctl.models import fold_batchnorm, get_architecture

    arch = get_architecture(checkpoint["arch"])
    model = arch.build(**checkpoint.get("arch_config", {}))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise MnistctlError(
            f"the weights do not fit architecture {checkpoint['arch']!r} ({_first_line(exc)})",
            "the checkpoint is damaged or was edited; train a new one",
        ) from exc
    model = fold_batchnorm(model.eval())
    if arch.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def peek_arch(path: Path) -> str | None:
    """The architecture of an existing checkpoint, or None when ``path`` holds no readable checkpoint."""
    try:
        return load_checkpoint(path)["arch"]
    except MnistctlError:
        return None
