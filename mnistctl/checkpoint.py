"""Checkpoints: what they hold, how they are written and read, and when a run may write or resume one.

A checkpoint is a dict of tensors and plain values (:func:`make_checkpoint`), saved atomically and loaded only
through ``torch.load(..., weights_only=True)``. It carries a sha256 of its weights, checked on every load, so
a damaged file is an error rather than slightly different answers. A plain state_dict of the original
project's ``DigitClassifier`` (its ``digit_model.pt``) loads too, as architecture ``seed``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistctl.config import TrainConfig
from mnistctl.errors import MnistctlError, UsageError, first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "mnistctl-checkpoint"
VERSION = 2  # 2: weights_sha256
RETRAIN = "train one with `mnistctl train`, or pass another with -m/--model"


def default_model_path() -> Path:
    """``$MNISTCTL_MODEL``, else ``digit_model.pt`` in the working directory, as in the original project."""
    return Path(os.environ.get("MNISTCTL_MODEL") or "digit_model.pt").expanduser()


def bundled_model_path() -> Path:
    """The model that ships inside the package (trained by `bench/bundle.py` with the CPU default recipe)."""
    from importlib.resources import files

    return Path(str(files("mnistctl") / "weights" / "digit_model.pt"))


def find_model(explicit: Path | None) -> tuple[Path, str]:
    """The checkpoint ``eval`` and ``predict`` read, and where the choice came from: ``-m`` ("option"), else
    ``$MNISTCTL_MODEL`` ("$MNISTCTL_MODEL"), else ``./digit_model.pt`` if it exists, else the model bundled with
    mnistctl. A model named explicitly (option or variable) is used as named: if it is missing, loading it says
    so, rather than another model answering in its place."""
    if explicit is not None:
        return explicit.expanduser(), "option"
    env = os.environ.get("MNISTCTL_MODEL")
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise MnistctlError(
                f"$MNISTCTL_MODEL names {path}, which does not exist",
                "train it with `mnistctl train`, or unset MNISTCTL_MODEL to use ./digit_model.pt or the bundled model",
            )
        return path, "$MNISTCTL_MODEL"
    if Path("digit_model.pt").is_file():
        return Path("digit_model.pt"), "./digit_model.pt"
    bundled = bundled_model_path()
    if not bundled.is_file():
        raise MnistctlError(
            "no model found: no -m, $MNISTCTL_MODEL or ./digit_model.pt, and this installation has no bundled model",
            "train one with `mnistctl train`, or pass one with -m",
        )
    return bundled, "the bundled model"


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    import torch

    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    training_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A checkpoint dict. ``training_state`` (optimizer, scheduler, RNG) is what ``--resume`` needs; a
    checkpoint without it holds weights only."""
    import torch

    from mnistctl import __version__

    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "arch_config": arch_config,
        "state_dict": state_dict,
        "weights_sha256": weights_digest(state_dict),
        **_training_digest(training_state),
        "normalization": {"mean": float(normalization[0]), "std": float(normalization[1])},
        "epoch": epoch,
        **(training_state or {"optimizer": None, "scheduler": None, "rng": None}),
        "config": config,
        "history": history,
        "metrics": metrics,
        "versions": {"mnistctl": __version__, "torch": str(torch.__version__), "python": sys.version.split()[0]},
    }


def _training_digest(training_state: dict[str, Any] | None) -> dict[str, str]:
    """With an EMA, the weights being trained (what --resume continues) are kept beside the average: checked too."""
    model_state = (training_state or {}).get("model_state")
    return {"model_state_sha256": weights_digest(model_state)} if model_state else {}


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to a temporary file beside ``path`` and move it into place."""
    import torch

    from mnistctl.fsutil import atomic_path

    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


SEED_KEYS = {f"model.{i}.{kind}" for i in (0, 2, 4, 7) for kind in ("weight", "bias")}


def load_checkpoint(path: str | os.PathLike[str], hint: str = RETRAIN) -> dict[str, Any]:
    """Load and validate a checkpoint; a plain seed state_dict is wrapped into one.

    Everything that can go wrong — missing, empty, truncated, damaged, not a torch file, a pickle that would run
    code, a state_dict of an unknown network — becomes a one-line :class:`MnistctlError`.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise MnistctlError(f"model file {path} does not exist", hint)
    if path.is_dir():
        raise MnistctlError(f"model path {path} is a directory", "pass the checkpoint file itself")
    if path.stat().st_size == 0:
        raise MnistctlError(f"model file {path} is empty", hint)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": our error says it better
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know: those are what can run code when unpickled.
        if "global" in str(exc).lower() or _pickle_calls_code(path):
            raise MnistctlError(
                f"refusing to load {path}: loading it would run the Python code or objects it holds",
                "only load checkpoints you trust; mnistctl loads weights only (train one with `mnistctl train`)",
            ) from exc
        raise MnistctlError(f"{path} is not a PyTorch checkpoint", hint) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, UnicodeDecodeError) as exc:
        raise MnistctlError(f"{path} is not a readable PyTorch checkpoint ({first_line(exc, 200)})", hint) from exc
    return _validate(obj, path, hint)


CALLS = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def _pickle_calls_code(path: Path) -> bool:
    """Whether ``path`` is a plain pickle that imports or calls something when loaded (read, never run)."""
    import pickletools

    try:
        with path.open("rb") as f:
            return any(op.name in CALLS for op, _, _ in pickletools.genops(f))
    except Exception:  # noqa: BLE001 - not a pickle at all: it calls nothing
        return False


def _validate(obj: Any, path: Path, hint: str) -> dict[str, Any]:
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
        # No checksums in version 1; model_state (the weights being trained) only in runs with an EMA.
        for weights, digest in (("state_dict", "weights_sha256"), ("model_state", "model_state_sha256")):
            expected = obj.get(digest)
            if expected is not None and _digest_or_none(obj.get(weights)) != expected:
                raise MnistctlError(f"{path} is corrupt: its weights do not match their checksum", hint)
        obj.setdefault("config", {})
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


def _digest_or_none(state_dict: Any) -> str | None:
    try:
        return weights_digest(state_dict)
    except (AttributeError, TypeError, RuntimeError):
        return None


def build_model(checkpoint: dict[str, Any], device: torch.device | None = None, precision: str = "fp32") -> nn.Module:
    """The network a checkpoint describes, for inference: its weights loaded (shapes checked), in eval mode,
    in the memory layout it was trained in, on ``device``, running in ``precision``."""
    import torch

    from mnistctl.engine import in_precision
    from mnistctl.models import get_architecture

    model = get_architecture(checkpoint["arch"]).build(**checkpoint.get("arch_config", {}))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise MnistctlError(
            f"the weights do not fit architecture {checkpoint['arch']!r} ({first_line(exc, 200)})",
            "the checkpoint is damaged or was edited; train a new one",
        ) from exc
    if checkpoint["config"].get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    device = device or torch.device("cpu")
    return in_precision(model.to(device).eval(), precision, device)


@contextlib.contextmanager
def training_run(
    path: Path, requested: TrainConfig, *, resume: bool, force: bool, device_kind: str = "cpu", writer: bool = True
) -> Iterator[tuple[TrainConfig, dict[str, Any] | None]]:
    """Own ``path`` for a training run: yield the config to train and the checkpoint to resume (or None).

    The writer (rank 0 under torchrun) checks that ``path`` can be written and holds an exclusive lock on it
    for the whole run, so a second run with the same ``-o`` stops at once instead of overwriting this one's
    checkpoints. A new run may replace ``path`` only if it is absent (or with ``force``); ``resume`` continues it
    (:func:`resume_config`).
    """
    from mnistctl.fsutil import check_writable, exclusive_lock

    if writer:
        check_writable(path)
    lock = exclusive_lock(path.with_name(f".{path.name}.lock"), wait=False, what=str(path))
    with lock if writer else contextlib.nullcontext():
        if resume:
            checkpoint = load_checkpoint(path, hint="pass the run's checkpoint with -o, or start a new run")
            yield resume_config(checkpoint, path, requested), checkpoint
            return
        if writer and not force:
            check_overwrite(path, requested.arch_for(device_kind))
        yield requested, None


def check_overwrite(path: Path, arch: str) -> None:
    """A new run may replace ``path`` only if it is absent (or with ``--force``): a trained model is never lost to
    a typo or a forgotten ``-o``."""
    if not path.exists():
        return
    try:
        checkpoint = load_checkpoint(path)
    except MnistctlError:
        raise MnistctlError(
            f"{path} exists and is not an mnistctl checkpoint", "pass --force to overwrite it"
        ) from None
    existing, done, planned = checkpoint["arch"], checkpoint["epoch"], checkpoint["config"].get("epochs")
    resumable = checkpoint.get("optimizer") is not None
    if resumable and planned and done < planned:
        raise MnistctlError(
            f"{path} holds an unfinished run ({done} of {planned} epochs)",
            "continue it with --resume, or pass --force to start over",
        )
    accuracy = checkpoint.get("metrics", {}).get("test_accuracy")
    held = f"a trained {existing!r} model ({done} epoch(s)" + (f", {accuracy:.2%}" if accuracy else "") + ")"
    extend = f"train it further with `--resume --epochs {done + 10}`, " if resumable and existing == arch else ""
    raise MnistctlError(
        f"{path} already holds {held}", f"{extend}write elsewhere with -o, or pass --force to replace it"
    )


# Options that change how a run is computed, not what it learns: a resumed run may set them anew. Precision is
# one: left out, it is the (new) device's default, so a run started on a GPU in bf16 goes on in fp32 on an
# AVX2 CPU rather than in emulated bf16.
SPEED_ONLY = ("compile", "channels_last", "precision")


def resume_config(checkpoint: dict[str, Any], path: Path, requested: TrainConfig) -> TrainConfig:
    """The configuration to continue ``checkpoint`` with: the one it was trained with, with a new ``epochs``
    total if one was asked for. Any other option given (not ``None``) that differs from the run's is refused."""
    if checkpoint.get("optimizer") is None:
        raise MnistctlError(f"{path} holds weights only, no training state to resume", "train without --resume")
    stored = TrainConfig.from_dict(checkpoint["config"])
    conflicts = [
        f"{_flag(name, value)} (the run has {getattr(stored, name)!r})"
        for name, value in vars(requested).items()
        if name not in ("epochs", *SPEED_ONLY) and value is not None and value != getattr(stored, name)
    ]
    if conflicts:
        raise UsageError(
            f"--resume continues {path} with the settings it was trained with; these options differ: "
            + ", ".join(conflicts),
            "leave them out, or start a new run (another -o, or --force)",
        )
    done = int(checkpoint["epoch"])
    epochs = requested.epochs or stored.epochs
    if epochs <= done:
        state = f"already finished all {done} epochs" if done >= stored.epochs else f"has trained {done} epochs"
        raise MnistctlError(f"{path} {state}", f"pass --epochs N, N above {done}, to train it further")
    speed = {name: getattr(requested, name) for name in SPEED_ONLY}
    return TrainConfig.from_dict({**vars(stored), "epochs": epochs, **speed})


def _flag(name: str, value: Any) -> str:
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return option if value else option.replace("--", "--no-", 1)
    return f"{option} {value}"
