"""When a training run may write or resume a checkpoint: the lock on its file, never replacing a trained model
unasked, and what ``--resume`` continues with (the run's own settings, its training state rehearsed first).

This is policy over :mod:`mnistctl.checkpoint`'s format; :func:`mnistctl.training.run_training` applies it.
"""

from __future__ import annotations

import contextlib
import copy
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnistctl.checkfile import fit_problem
from mnistctl.checkpoint import Checkpoint, load_checkpoint, path_exists
from mnistctl.config import TrainConfig
from mnistctl.errors import MnistctlError, UsageError, first_line

# Options that change how a run is computed, not what it learns: a resumed run may set them anew. Precision is
# one: left out, it is the (new) device's default, so a run started on a GPU in bf16 goes on in fp32 on an
# AVX2 CPU rather than in emulated bf16.
SPEED_ONLY = ("compile", "channels_last", "precision")


@contextlib.contextmanager
def training_run(
    path: Path, requested: TrainConfig, *, resume: bool, force: bool, device_kind: str = "cpu", writer: bool = True
) -> Iterator[tuple[TrainConfig, Checkpoint | None]]:
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
    a typo or a forgotten ``-o``. A file that is there but does not load is named with the reason it does not
    (a newer format, a damaged file, not a checkpoint at all): that reason may be a reason to keep it."""
    if not path_exists(path, "-o", "choose another -o path"):
        return
    try:
        checkpoint = load_checkpoint(path)
    except MnistctlError as exc:
        raise MnistctlError(
            f"{path} exists and does not load as a checkpoint ({_reason(exc.message, path)})",
            "pass --force to overwrite it, or write elsewhere with -o",
        ) from None
    existing, done, planned = checkpoint.arch, checkpoint.epoch, checkpoint.config.get("epochs")
    resumable = checkpoint.has_training_state
    if resumable and planned and done < planned:
        raise MnistctlError(
            f"{path} holds an unfinished run ({done} of {planned} epochs)",
            "continue it with --resume, or pass --force to start over",
        )
    accuracy = checkpoint.metrics.get("test_accuracy")
    held = f"a trained {existing!r} model ({done} epoch(s)" + (f", {accuracy:.2%}" if accuracy else "") + ")"
    extend = f"train it further with `--resume --epochs {done + 10}`, " if resumable and existing == arch else ""
    raise MnistctlError(
        f"{path} already holds {held}", f"{extend}write elsewhere with -o, or pass --force to replace it"
    )


def _reason(message: str, path: Path) -> str:
    """load_checkpoint's message about ``path`` without the path, as a parenthesis in a line that names it."""
    for prefix in (f"model file {path} ", f"model path {path} ", f"refusing to load {path}: ", f"{path} "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def resume_config(checkpoint: Checkpoint, path: Path, requested: TrainConfig) -> TrainConfig:
    """The configuration to continue ``checkpoint`` with: the one it was trained with, with a new ``epochs``
    total if one was asked for. Any other option given (not ``None``) that differs from the run's is refused."""
    if not checkpoint.has_training_state:
        raise MnistctlError(f"{path} holds weights only, no training state to resume", "train without --resume")
    stored = TrainConfig.from_dict(checkpoint.config)
    check_resumable(checkpoint, path, stored)
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
    done = checkpoint.epoch
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


def check_resumable(checkpoint: Checkpoint, path: Path, stored: TrainConfig) -> None:
    """Rehearse what ``train --resume`` does with ``checkpoint``'s training state, on a copy of it and a network on
    the meta device: a state that does not fit its run is an error naming the file now, not an unexpected one later.
    """
    from mnistctl.models import ARCHITECTURES

    def refuse(why: str) -> typing.NoReturn:
        raise MnistctlError(f"{path} cannot be resumed: {why}", "start a new run (another -o, or --force)")

    state = checkpoint.training
    assert state is not None  # resume_config refuses a checkpoint of weights only first
    if stored.arch != checkpoint.arch:
        refuse("its config does not say which network it trains")
    if state.scheduler is None or state.rng is None:
        refuse("it has an optimizer state but no scheduler or RNG state")
    config = stored.resolved()  # what fit() fills in for settings the file leaves out
    arch = ARCHITECTURES[checkpoint.arch]
    network = arch.build_on_meta(**arch.config_for(bool(config.negatives)))  # what fit() trains, at its sizes
    for name, weights in (("state_dict", checkpoint.state_dict), ("model_state", state.model_state)):
        problem = weights is not None and fit_problem(network, weights)
        if problem:
            refuse(f"its {name} is not of the {checkpoint.arch} network that mnistctl trains ({problem})")
    try:
        _rehearse(checkpoint, config, network)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError, OverflowError) as exc:
        refuse(f"its training state does not fit its run ({first_line(exc, 160)})")


def _rehearse(checkpoint: Checkpoint, config: TrainConfig, network: Any) -> None:
    """What ``train.fit`` does with a training state when it resumes, on copies: load the optimizer's state and
    take a step, load the schedule and step it, the scaler, the RNG, the history."""
    import torch

    from mnistctl.engine import EpochResult, make_optimizer
    from mnistctl.registry import schedule_factor

    state = checkpoint.training
    assert state is not None
    optimizer = make_optimizer(config, network)
    optimizer.load_state_dict(copy.deepcopy(state.optimizer))  # a step changes some of it in place
    for parameter in network.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(config.schedule, 1))
    scheduler.load_state_dict(copy.deepcopy(state.scheduler))
    if len(scheduler.base_lrs) != len(optimizer.param_groups):
        raise ValueError(f"{len(scheduler.base_lrs)} learning rates for {len(optimizer.param_groups)} groups")
    scheduler.step()
    if state.scaler:
        torch.amp.GradScaler("cpu").load_state_dict(dict(state.scaler))
    torch.Generator().set_state(state.rng["torch"])
    [EpochResult(**entry) for entry in checkpoint.history]
