"""The training loop: in-memory batches, batched augmentation, optimizers, schedules, a checkpoint each epoch.

Every epoch's shuffling and augmentation come from a generator seeded with (seed, epoch), and the global
RNG state is saved in the checkpoint, so a run stopped after epoch k and resumed ends bit-identical (on the
CPU) to one that was never stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnistctl.data.mnist import MnistData, normalise
from mnistctl.errors import MnistctlError, UsageError
from mnistctl.evaluate import quick_eval
from mnistctl.models import DEFAULT_ARCH, get_architecture
from mnistctl.runtime import autocast

OPTIMIZERS = ("adam", "adamw", "sgd", "sgd-nesterov", "rmsprop", "adadelta")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
# A learning rate that works for each optimizer when none is given (for the default architecture).
DEFAULT_LR = {
    "adam": 1e-3,
    "adamw": 3e-3,
    "sgd": 0.05,
    "sgd-nesterov": 0.05,
    "rmsprop": 1e-3,
    "adadelta": 1.0,
}
# Each architecture's own recipe: what `mnistctl train --arch NAME` uses for options left unset.
RECIPES: dict[str, dict[str, Any]] = {
    "compact": {
        "optimizer": "adamw",
        "lr": 3e-3,
        "batch_size": 128,
        "schedule": "onecycle",
        "weight_decay": 1e-2,
        "augment": True,
        "rotate": 10.0,
        "scale": 0.1,
        "shift": 2.0,
        "label_smoothing": 0.0,
    },
    # The original project: Adam 1e-3, batch 32, constant rate, no augmentation (but we shuffle).
    "seed": {
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 32,
        "schedule": "constant",
        "weight_decay": 0.0,
        "augment": False,
        "rotate": 10.0,
        "scale": 0.1,
        "shift": 2.0,
        "label_smoothing": 0.0,
    },
}


@dataclass
class TrainConfig:
    """Everything that determines a training run. ``None`` means "the architecture's recipe"."""

    arch: str = DEFAULT_ARCH
    epochs: int = 10
    optimizer: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    schedule: str | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    label_smoothing: float | None = None
    augment: bool | None = None
    rotate: float | None = None  # degrees, ±
    scale: float | None = None  # ±fraction
    shift: float | None = None  # pixels, ±; whole pixels (cheaper) when there is no rotation or scaling
    seed: int = 0
    train_limit: int | None = None
    amp: bool = False
    channels_last: bool | None = None
    compile: bool = False

    def resolved(self) -> TrainConfig:
        """A copy with every ``None`` filled from the architecture's recipe, validated."""
        arch = get_architecture(self.arch)
        self.validate()
        recipe = RECIPES[self.arch]
        values = asdict(self)
        for key, default in {**recipe, "channels_last": arch.channels_last}.items():
            if values.get(key) is None:
                values[key] = default
        if self.optimizer is not None and self.lr is None and self.optimizer != recipe["optimizer"]:
            values["lr"] = DEFAULT_LR[self.optimizer]
        cfg = TrainConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, not {self.epochs}", "pass a positive number")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, not {self.batch_size}", "pass a positive number")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, not {self.lr}", "pass e.g. --lr 1e-3")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}", f"use one of: {', '.join(OPTIMIZERS)}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}", f"use one of: {', '.join(SCHEDULES)}")
        if self.train_limit is not None and self.train_limit < 1:
            raise UsageError(f"--train-limit must be at least 1, not {self.train_limit}", "pass a positive number")
        if self.weight_decay is not None and not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UsageError(f"--weight-decay must be 0 or more, not {self.weight_decay}", "pass e.g. 5e-4")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float  # training and evaluation of this epoch
    images_per_s: float  # training throughput
    lr: float
    elapsed: float = 0.0  # seconds since the run (not this process) started training


@dataclass
class TrainResult:
    config: TrainConfig
    history: list[EpochResult]
    parameters: int
    device: str
    checkpoint: str | None
    seconds: float
    resumed_from: int = 0

    @property
    def final(self) -> EpochResult:
        return self.history[-1]


class TrainingInterrupted(MnistctlError):
    exit_code = 130


class TrainCallbacks:
    """Progress hooks; the default does nothing. ``report`` supplies a Rich one."""

    def on_start(self, config: TrainConfig, steps_per_epoch: int, start_epoch: int, samples: int) -> None: ...

    def on_batch(self, epoch: int, step: int, loss: float, accuracy: float, images_per_s: float) -> None: ...

    def on_epoch(self, result: EpochResult) -> None: ...

    def on_end(self) -> None: ...


# --------------------------------------------------------------------------------------------- pieces


def make_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    """``name``'s optimizer; weight decay applies to weight matrices and kernels, not to biases or BatchNorm."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    params = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd-nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay)
    raise UsageError(f"unknown optimizer {name!r}", f"use one of: {', '.join(OPTIMIZERS)}")


def schedule_factor(name: str, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier at each optimizer step (a pure function, so it needs no saved state)."""
    total = max(1, total_steps)
    warmup = max(1, int(0.2 * total))

    def onecycle(step: int) -> float:  # linear from 1/10 up to 1 over the first 20 %, then linear down to 1/1000
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 - progress * (1.0 - 0.001)

    def cosine(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))

    def step_decay(step: int) -> float:  # ×0.1 at 50 % and 75 % of training
        return 0.1 ** ((step >= total // 2) + (step >= 3 * total // 4))

    return {"onecycle": onecycle, "cosine": cosine, "step": step_decay, "constant": lambda step: 1.0}[name]


def prepare_batch(x: torch.Tensor, u: torch.Tensor | None, cfg: TrainConfig, mean: float, std: float) -> torch.Tensor:
    """A batch as the network trains on it: augmented by ``u`` (see :func:`augment_batch`; None: not at all),
    normalised, in the memory layout ``cfg`` asks for."""
    if u is not None:
        x = augment_batch(x, u, cfg.rotate, cfg.scale, cfg.shift)
    x = (x - mean) / std
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def augment_batch(x: torch.Tensor, u: torch.Tensor, rotate: float, scale: float, shift: float) -> torch.Tensor:
    """Rotate, scale and shift each image of N×1×28×28 pixels in [0, 1] (black fill).

    ``u``: N×4 uniform numbers in [0, 1) drawn for the batch (rotation, scale, x shift, y shift).
    Without rotation and scaling the shift is by whole pixels, which costs a fifth of resampling.
    """
    n, _, h, w = x.shape
    u = u * 2 - 1
    if rotate == 0 and scale == 0:
        return _shift_whole_pixels(x, u[:, 2:], int(round(shift)))
    angle = u[:, 0] * math.radians(rotate)
    s = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    tx, ty = u[:, 2] * (2 * shift / w), u[:, 3] * (2 * shift / h)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _shift_whole_pixels(x: torch.Tensor, u: torch.Tensor, shift: int) -> torch.Tensor:
    """Move each image by (dx, dy) whole pixels, |dx|, |dy| <= shift, filling with black."""
    if shift <= 0:
        return x
    n, c, h, w = x.shape
    d = (u * (shift + 0.5)).round().clamp(-shift, shift).long().to(x.device) + shift  # 0 … 2·shift
    padded = F.pad(x, (shift, shift, shift, shift))
    rows = (d[:, 1, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * shift)
    padded = padded.gather(2, rows)
    cols = (d[:, 0, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return padded.gather(3, cols)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def to_inputs(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 N×28×28 → float N×1×28×28 in [0, 1] on ``device`` (normalised per batch, after augmentation)."""
    return images.to(device).unsqueeze(1).float().div_(255.0)


def shard(length: int, rank: int, world: int) -> slice:
    """This rank's contiguous part of a global batch of ``length`` images."""
    per = math.ceil(length / world)
    return slice(min(length, rank * per), min(length, (rank + 1) * per))


# --------------------------------------------------------------------------------------------- the loop


def fit(
    config: TrainConfig,
    data: MnistData,
    device: torch.device,
    *,
    out: Path | None = None,
    resume: dict[str, Any] | None = None,
    callbacks: TrainCallbacks | None = None,
    initial_state: dict[str, torch.Tensor] | None = None,
    progress_every: int = 20,
) -> TrainResult:
    """Train ``config`` on ``data``; write a checkpoint to ``out`` after every epoch.

    ``resume``: a checkpoint (as loaded) to continue from; its config wins over ``config``.
    ``initial_state``: start from these weights instead of the seeded initialisation.

    Under torchrun (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel: every rank draws the same
    seeded permutation and augmentation numbers for the global batch and takes its own contiguous part;
    only rank 0 evaluates, reports and writes checkpoints.
    """
    from mnistctl.checkpoint import make_checkpoint, save_checkpoint
    from mnistctl.runtime import dist_info, init_distributed, seed_everything

    dist = dist_info()
    init_distributed(device, dist)
    callbacks = (callbacks or TrainCallbacks()) if dist.is_main else TrainCallbacks()
    if resume is not None:
        config = TrainConfig.from_dict(resume["config"])
    cfg = config.resolved()
    arch = get_architecture(cfg.arch)
    mean, std = arch.normalization

    seed_everything(cfg.seed)
    model = arch.build()
    if initial_state is not None:
        model.load_state_dict(initial_state)
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    parameters = sum(p.numel() for p in model.parameters())
    net: nn.Module = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":  # SyncBatchNorm works on GPUs only; on CPU each rank normalises its own part
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    train_x, train_y = data.train_images, data.train_labels
    if cfg.train_limit is not None:
        train_x, train_y = train_x[: cfg.train_limit], train_y[: cfg.train_limit]
    n = len(train_x)
    if n == 0:
        raise MnistctlError("there are no training images", "check the data directory and --train-limit")
    inputs = to_inputs(train_x, device)
    targets = train_y.to(device)
    if dist.is_main:  # rank 0 alone evaluates
        test_inputs = normalise(data.test_images, mean, std).to(device)
        test_targets = data.test_labels.to(device)

    bs = cfg.batch_size
    steps = math.ceil(n / bs)
    optimizer = make_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay, cfg.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(cfg.schedule, steps * cfg.epochs))

    history: list[EpochResult] = []
    start_epoch = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"]["torch"])
        history = [EpochResult(**h) for h in resume["history"]]
        start_epoch = int(resume["epoch"])
        if start_epoch >= cfg.epochs:
            raise MnistctlError(
                f"the checkpoint already finished all {cfg.epochs} epochs",
                "start a new run (without --resume), or write it elsewhere with -o",
            )

    callbacks.on_start(cfg, steps, start_epoch, n)
    run_start = time.perf_counter()
    elapsed_before = history[-1].elapsed if history else 0.0
    try:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            gen = epoch_generator(cfg.seed, epoch)
            order = torch.randperm(n, generator=gen).to(device)
            net.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for step in range(steps):
                idx = order[step * bs : (step + 1) * bs]
                u = torch.rand(len(idx), 4, generator=gen) if cfg.augment else None
                global_len = len(idx)
                if dist.enabled:
                    part = shard(global_len, dist.rank, dist.world_size)
                    idx = idx[part]
                    u = u[part] if u is not None else None
                x = prepare_batch(inputs[idx], u, cfg, mean, std)
                y = targets[idx]
                with autocast(device, cfg.amp):
                    logits = net(x)
                if dist.enabled:
                    # Sum over this rank's images, scaled so that DDP's gradient average is the global mean.
                    summed = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing, reduction="sum")
                    loss = summed * dist.world_size / global_len
                    loss_sum += summed.detach()
                else:
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                    loss_sum += loss.detach() * len(idx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                correct += (logits.argmax(1) == y).sum()
                if (step + 1) % progress_every == 0 or step + 1 == steps:
                    seen = min(n, (step + 1) * bs)
                    local = max(1, seen // dist.world_size)
                    callbacks.on_batch(
                        epoch,
                        step + 1,
                        float(loss_sum) / local,
                        float(correct) / local,
                        seen / max(1e-9, time.perf_counter() - t0),
                    )
            if dist.enabled:
                import torch.distributed as tdist

                totals = torch.stack([loss_sum.double(), correct.double()])
                tdist.all_reduce(totals)
                loss_sum, correct = totals[0], totals[1]
            train_seconds = time.perf_counter() - t0
            result = None
            if dist.is_main:
                test_loss, test_acc = quick_eval(model, test_inputs, test_targets, device, amp=cfg.amp)
                result = EpochResult(
                    epoch=epoch,
                    train_loss=float(loss_sum) / n,
                    train_accuracy=float(correct) / n,
                    test_loss=test_loss,
                    test_accuracy=test_acc,
                    seconds=time.perf_counter() - t0,
                    images_per_s=n / train_seconds,
                    lr=float(optimizer.param_groups[0]["lr"]),
                    elapsed=elapsed_before + time.perf_counter() - run_start,
                )
                history.append(result)
                if out is not None:
                    save_checkpoint(
                        out,
                        make_checkpoint(
                            arch=cfg.arch,
                            arch_config=dict(arch.defaults),
                            state_dict={
                                k: v.detach().cpu() for k, v in model.state_dict().items()
                            },  # no module. prefix
                            normalization=(mean, std),
                            epoch=epoch,
                            config=asdict(cfg),
                            history=[asdict(h) for h in history],
                            metrics={"test_accuracy": test_acc, "test_loss": test_loss},
                            optimizer=_to_cpu(optimizer.state_dict()),
                            scheduler=scheduler.state_dict(),
                            rng={"torch": torch.get_rng_state()},
                        ),
                    )
            if dist.enabled:
                import torch.distributed as tdist

                tdist.barrier()
            if result is not None:
                callbacks.on_epoch(result)
    except KeyboardInterrupt:
        callbacks.on_end()
        done = history[-1].epoch if history else start_epoch
        if out is not None and done > 0:
            raise TrainingInterrupted(
                f"interrupted during epoch {done + 1}; {out} holds the complete epoch {done}",
                f"continue with `mnistctl train --resume -o {out}`",
            ) from None
        raise TrainingInterrupted("interrupted before the first epoch finished", "nothing was saved") from None
    callbacks.on_end()
    return TrainResult(
        cfg,
        history,
        parameters,
        str(device),
        str(out) if out else None,
        time.perf_counter() - run_start,
        start_epoch,
    )


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
