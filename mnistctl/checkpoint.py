"""Checkpoints as a typed object: what one holds (:class:`Checkpoint`), how it is written and read, the network it
describes, and which one ``eval`` and ``predict`` read.

On disk a checkpoint is a dict of tensors and plain values (:func:`~mnistctl.checkfile.make_checkpoint`), saved
atomically and loaded only through ``torch.load(..., weights_only=True)`` once :mod:`mnistctl.archive` has found
the file cheap to read; :mod:`mnistctl.checkfile` then checks what it holds, and only what passes becomes a
:class:`Checkpoint`. It carries a sha256 of its weights and of what decides its network, checked on every load,
so a damaged file is an error rather than slightly different answers. A plain state_dict of the original
project's ``DigitClassifier`` (its ``digit_model.pt``) loads too, as architecture ``seed``, and one of
mnistctl's own networks as that network. When a training run may write or resume one is :mod:`mnistctl.runs`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistctl.archive import read_archive
from mnistctl.checkfile import (  # noqa: F401 - FORMAT, VERSION, weights_digest: re-exported for callers
    FIELDS,
    FORMAT,
    VERSION,
    make_checkpoint,
    validate,
    weights_digest,
)
from mnistctl.errors import MnistctlError, first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

RETRAIN = "train one with `mnistctl train`, or pass another with -m/--model"


@dataclass(frozen=True)
class TrainingState:
    """What ``--resume`` continues besides the weights. A checkpoint without it holds weights only."""

    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None  # None only in a damaged file: resuming it is refused
    rng: dict[str, Any] | None  # {"torch": the CPU generator's state}; None as for the scheduler
    scaler: dict[str, Any] | None = None  # fp16's loss scale ({} in other precisions)
    model_state: dict[str, torch.Tensor] | None = None  # with an EMA: the weights trained (the average is saved)
    ema_steps: int = 0  # with an EMA: how many updates the average has had

    def to_dict(self) -> dict[str, Any]:
        """The entries as the file holds them (an entry that is None is left out, but for the first three)."""
        state = {"optimizer": self.optimizer, "scheduler": self.scheduler, "rng": self.rng}
        if self.scaler is not None:
            state["scaler"] = self.scaler
        if self.model_state is not None:
            state |= {"model_state": self.model_state, "ema_steps": self.ema_steps}
        return state


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint that passed validation. ``config`` is the training run's settings as stored (a plain
    state_dict's says where it came from), ``history`` one dict per epoch (as ``engine.EpochResult``), ``extra``
    the entries the format does not name (a bundle's provenance), kept as they are."""

    arch: str
    arch_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]  # with an EMA, the average of the weights: what is evaluated and used
    normalization: tuple[float, float]  # (mean, std) of the pixels (0-1) the network was trained on
    epoch: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # of what wrote the file (to_dict writes today's)
    training: TrainingState | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_training_state(self) -> bool:
        """Whether ``--resume`` has something to continue (else it holds weights only)."""
        return self.training is not None

    @classmethod
    def from_dict(cls, checkpoint: dict[str, Any]) -> Checkpoint:
        """The object of a dict :func:`~mnistctl.checkfile.validate` passed (every entry of FIELDS present)."""
        training = None
        if checkpoint["optimizer"] is not None:
            names = ("optimizer", "scheduler", "rng", "scaler", "model_state", "ema_steps")
            training = TrainingState(**{name: checkpoint[name] for name in names})
        normalization = checkpoint["normalization"]
        return cls(
            arch=checkpoint["arch"],
            arch_config=checkpoint["arch_config"],
            state_dict=checkpoint["state_dict"],
            normalization=(float(normalization["mean"]), float(normalization["std"])),
            epoch=checkpoint["epoch"],
            config=checkpoint["config"],
            history=checkpoint["history"],
            metrics=checkpoint["metrics"],
            versions=checkpoint["versions"],
            training=training,
            extra={key: value for key, value in checkpoint.items() if key not in FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The dict the file holds, in the current format: checksums and versions computed anew."""
        written = make_checkpoint(
            arch=self.arch,
            arch_config=self.arch_config,
            state_dict=self.state_dict,
            normalization=self.normalization,
            epoch=self.epoch,
            config=self.config,
            history=self.history,
            metrics=self.metrics,
            training_state=self.training.to_dict() if self.training else None,
        )
        return {**written, **self.extra}


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint | dict[str, Any]) -> None:
    """Write ``checkpoint`` (or a dict as :func:`make_checkpoint` makes it) to a temporary file beside ``path``
    and move it into place: ``path`` holds the old file or the whole new one, never part of either. It is
    serialised in memory first, so that the file is written by Python, whose errors say why (a full disk), not
    by torch's writer, which does not. It is written into the very file :func:`~mnistctl.fsutil.atomic_file`
    created, never reopened by name, and is on disk (fsynced) before it replaces the old file."""
    import torch

    from mnistctl.fsutil import atomic_file

    buffer = io.BytesIO()
    torch.save(checkpoint.to_dict() if isinstance(checkpoint, Checkpoint) else checkpoint, buffer)
    with atomic_file(path) as f:
        f.write(buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike[str], hint: str = RETRAIN) -> Checkpoint:
    """Load and validate a checkpoint (:mod:`mnistctl.checkfile`); a plain state_dict of one of mnistctl's
    networks, such as the original project's ``digit_model.pt``, is wrapped into one.

    Everything that can go wrong — missing, not a regular file, empty, truncated, damaged, too big to inflate, a
    pickle that would run code, a network mnistctl does not know or will not build, NaN weights, a malformed
    entry — becomes a one-line :class:`MnistctlError` that names the file.
    """
    path = Path(path)
    return Checkpoint.from_dict(validate(read_archive(path, hint), path, hint))


def build_model(checkpoint: Checkpoint, device: torch.device | None = None, precision: str = "fp32") -> nn.Module:
    """The network a checkpoint describes, for inference: its weights loaded (shapes checked), in eval mode,
    in the memory layout it was trained in, on ``device``, running in ``precision``."""
    import torch

    from mnistctl.engine import in_precision
    from mnistctl.models import get_architecture

    model = get_architecture(checkpoint.arch).build(**checkpoint.arch_config)
    try:
        model.load_state_dict(checkpoint.state_dict)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise MnistctlError(
            f"the weights do not fit architecture {checkpoint.arch!r} ({first_line(exc, 200)})",
            "the checkpoint is damaged or was edited; train a new one",
        ) from exc
    if checkpoint.config.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    device = device or torch.device("cpu")
    return in_precision(model.to(device).eval(), precision, device)


# --------------------------------------------------------------------------------------------- which file


def default_model_path() -> Path:
    """``$MNISTCTL_MODEL``, else ``digit_model.pt`` in the working directory, as in the original project."""
    return Path(os.environ.get("MNISTCTL_MODEL") or "digit_model.pt").expanduser()


def bundled_model_path() -> Path:
    """The model that ships inside the package (trained by `bench/bundle.py` with the CPU default recipe)."""
    return _bundled("digit_model.pt")


def bundled_second_path() -> Path:
    """The bundled model's second network (`bench/bundle.py --second`: the same recipe, another seed), which
    readers ask where the bundled model is unsure."""
    return _bundled("second_model.pt")


def _bundled(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("mnistctl") / "weights" / name))


def find_model(explicit: Path | None) -> tuple[Path, str]:
    """The checkpoint ``eval`` and ``predict`` read, and where the choice came from: ``-m`` ("option"), else
    ``$MNISTCTL_MODEL`` ("$MNISTCTL_MODEL"), else ``./digit_model.pt`` if it exists, else the model bundled with
    mnistctl. A model named explicitly (option or variable) is used as named: if it is missing, loading it says
    so, rather than another model answering in its place."""
    if explicit is not None:  # loading it probes it (open_archive): every reason it cannot be read is one line
        return explicit.expanduser(), "option"
    env = os.environ.get("MNISTCTL_MODEL")
    if env:
        path = Path(env).expanduser()
        unset = "unset MNISTCTL_MODEL to use ./digit_model.pt or the bundled model"
        if not path_exists(path, "$MNISTCTL_MODEL", f"fix the path, or {unset}"):
            raise MnistctlError(
                f"$MNISTCTL_MODEL names {path}, which does not exist", f"train it with `mnistctl train`, or {unset}"
            )
        return path, "$MNISTCTL_MODEL"
    if path_exists(Path("digit_model.pt"), "the default model", "pass a model with -m"):
        return Path("digit_model.pt"), "./digit_model.pt"
    bundled = bundled_model_path()
    if not bundled.is_file():
        raise MnistctlError(
            "no model found: no -m, $MNISTCTL_MODEL or ./digit_model.pt, and this installation has no bundled model",
            "train one with `mnistctl train`, or pass one with -m",
        )
    return bundled, "the bundled model"


def path_exists(path: Path, what: str, hint: str) -> bool:
    """Whether ``path`` (from ``what``) names something. ``Path.exists`` raises where the system cannot look the
    name up at all — a name over 255 bytes, a directory on the way that may not be searched, a loop of links:
    that is one line saying so, not an unexpected OSError."""
    try:
        return path.exists()
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror or str(exc)
        raise MnistctlError(f"cannot look up {path} ({what}): {reason}", hint) from exc
