"""fit(): build the network, resume it if asked, train epoch after epoch and write a checkpoint after each.

The loop itself (one epoch, in one process or under torchrun) is :mod:`mnistctl.engine`; the batches are
:mod:`mnistctl.batches`. On the CPU a run stopped after epoch k and resumed ends bit-identical to one never
stopped: every epoch's order and augmentation derive from (seed, epoch), and the RNG state is checkpointed.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistctl.batches import EpochBatches
from mnistctl.checkpoint import make_checkpoint, save_checkpoint
from mnistctl.config import TrainConfig
from mnistctl.data.mnist import MnistData, normalise
from mnistctl.engine import EMA, Dist, EpochStats, Precision, evaluate, in_precision, train_one_epoch
from mnistctl.errors import Interrupted, MnistctlError
from mnistctl.models import Architecture, get_architecture
from mnistctl.runtime import default_precision, device_kind, seed_everything


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
    seconds: float  # of training in this process
    resumed_from: int = 0

    @property
    def final(self) -> EpochResult:
        return self.history[-1]

    def summary(self) -> dict[str, Any]:
        """What ``train --json`` prints last."""
        return {
            "event": "summary",
            "checkpoint": self.checkpoint,
            "arch": self.config.arch,
            "parameters": self.parameters,
            "device": self.device,
            "epochs": self.final.epoch,
            "test_accuracy": self.final.test_accuracy,
            "test_loss": self.final.test_loss,
            "seconds": self.seconds,
            "config": asdict(self.config),
        }


class TrainCallbacks:
    """Progress hooks; the default does nothing. ``report`` supplies the ones that print."""

    shows_batches = False  # on_batch shows something: the loop then reads progress back every few steps

    def on_start(
        self, config: TrainConfig, steps_per_epoch: int, start_epoch: int, samples: int, device: str
    ) -> None: ...

    def on_batch(self, epoch: int, step: int, loss: float, accuracy: float, images_per_s: float) -> None: ...

    def on_epoch(self, result: EpochResult) -> None: ...

    def on_end(self) -> None: ...


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer; weight decay applies to weight matrices and kernels, not biases or BatchNorm."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    params = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr, momentum = cfg.lr, cfg.momentum
    make: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adam": lambda: torch.optim.Adam(params, lr=lr),
        "adamw": lambda: torch.optim.AdamW(params, lr=lr),
        "sgd": lambda: torch.optim.SGD(params, lr=lr, momentum=momentum),
        "sgd-nesterov": lambda: torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True),
        "rmsprop": lambda: torch.optim.RMSprop(params, lr=lr),
        "adadelta": lambda: torch.optim.Adadelta(params, lr=lr),
    }
    return make[cfg.optimizer]()


def schedule_factor(name: str, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier at each optimizer step: a pure function of the step and the planned total,
    so a resumed run needs no saved schedule state and an extended run simply plans for its new total."""
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


def fit(
    config: TrainConfig,
    data: MnistData,
    device: torch.device,
    *,
    out: Path | None = None,
    resume: dict[str, Any] | None = None,
    callbacks: TrainCallbacks | None = None,
    initial_state: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``config`` on ``data``; write a checkpoint to ``out`` after every epoch.

    ``resume``: a checkpoint (as loaded) to continue from, ``config`` being the one to continue with
    (:func:`mnistctl.checkpoint.resume_config`). ``initial_state``: start from these weights instead of the
    seeded initialisation. Under torchrun only rank 0 evaluates, reports and writes.
    """
    cfg = config.resolved(device_kind(device), default_precision(device))
    arch = get_architecture(cfg.arch)
    train_x, train_y = data.train_images[: cfg.train_limit], data.train_labels[: cfg.train_limit]
    if len(train_x) == 0:
        raise MnistctlError("there are no training images", "check the data directory and --train-limit")
    dist = Dist.start(device)
    try:
        if not dist.is_main:
            callbacks = None
        model = _build(cfg, arch, device, initial_state, resume)
        ema = EMA(model, cfg.ema, int(resume.get("ema_steps", 0)) if resume else 0) if cfg.ema else None
        if ema is not None and resume is not None:
            ema.module.load_state_dict(resume["state_dict"])  # the averaged weights are the checkpoint's own
        net = dist.wrap(model, device)
        if cfg.compile:
            net = torch.compile(net)
        batches = EpochBatches(train_x, train_y, cfg, arch.normalization, device, dist.rank, dist.world_size)
        optimizer = make_optimizer(cfg, model)
        steps = batches.steps * cfg.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_factor(cfg.schedule, steps))
        precision = Precision(cfg.precision, device)
        history = _restore(resume, optimizer, scheduler, precision)
        test = (normalise(data.test_images, *arch.normalization).to(device), data.test_labels.to(device))
        loop = _Loop(cfg, arch, model, ema, net, batches, optimizer, scheduler, precision, dist)
        return loop.run(history, test, out, callbacks or TrainCallbacks())
    finally:
        dist.close()


def _build(
    cfg: TrainConfig,
    arch: Architecture,
    device: torch.device,
    initial_state: dict[str, torch.Tensor] | None,
    resume: dict[str, Any] | None,
) -> nn.Module:
    seed_everything(cfg.seed)
    model = arch.build()
    # With an EMA the checkpoint's weights are the average; the ones being trained are kept beside them.
    trained = resume and (resume.get("model_state") or resume["state_dict"])
    for state in (initial_state, trained):
        if state:
            model.load_state_dict(state)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def _restore(
    resume: dict[str, Any] | None, optimizer: torch.optim.Optimizer, scheduler: Any, precision: Precision
) -> list[EpochResult]:
    """Continue ``resume``'s training state. The rate is set from the (new) plan at the step reached, so that a
    run extended to more epochs continues on the plan for its new total from its first step on."""
    if resume is None:
        return []
    optimizer.load_state_dict(resume["optimizer"])
    scheduler.load_state_dict(resume["scheduler"])
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(scheduler.last_epoch)
    if resume.get("scaler"):
        precision.scaler.load_state_dict(resume["scaler"])
    torch.set_rng_state(resume["rng"]["torch"])
    return [EpochResult(**h) for h in resume["history"]]


@dataclass
class _Loop:
    """The epoch loop and what it needs, so that each step of it is a short method."""

    cfg: TrainConfig
    arch: Architecture
    model: nn.Module
    ema: EMA | None
    net: nn.Module
    batches: EpochBatches
    optimizer: torch.optim.Optimizer
    scheduler: Any
    precision: Precision
    dist: Dist
    saved: int = 0  # the last epoch written to the checkpoint by this process

    def run(
        self,
        history: list[EpochResult],
        test: tuple[torch.Tensor, torch.Tensor],
        out: Path | None,
        callbacks: TrainCallbacks,
    ) -> TrainResult:
        start_epoch = history[-1].epoch if history else 0
        elapsed_before = history[-1].elapsed if history else 0.0
        callbacks.on_start(self.cfg, self.batches.steps, start_epoch, len(self.batches), str(self.batches.device))
        run_start = time.perf_counter()
        try:
            for epoch in range(start_epoch + 1, self.cfg.epochs + 1):
                stats = train_one_epoch(
                    self.net,
                    self.batches,
                    epoch,
                    self.optimizer,
                    self.scheduler,
                    self.precision,
                    self.dist,
                    self.cfg.label_smoothing,
                    self.ema,
                    # Reading progress back makes the device wait for the host: only when something shows it.
                    on_progress=functools.partial(callbacks.on_batch, epoch) if _shows_batches(callbacks) else None,
                )
                # The training loss is the epoch's sums all-reduced: every rank holds the same value, so all stop.
                _check_finite(stats.loss, epoch, self.saved or start_epoch, out, self.cfg.lr)
                t0 = time.perf_counter()
                loss, accuracy = self._evaluate(test)
                # The test loss, computed on rank 0 alone, is shared with every rank first: a rank 0 that stopped
                # alone would leave the others waiting in the next collective until its timeout.
                _check_finite(loss, epoch, self.saved or start_epoch, out, self.cfg.lr)
                if self.dist.is_main:
                    elapsed = elapsed_before + time.perf_counter() - run_start
                    history.append(self._result(epoch, stats, loss, accuracy, time.perf_counter() - t0, elapsed))
                    if out is not None:
                        save_checkpoint(out, self.checkpoint(history))
                self.dist.barrier()
                if out is not None:  # every rank knows it (rank 0 saved before the barrier), so says it if stopped
                    self.saved = epoch
                if self.dist.is_main:
                    callbacks.on_epoch(history[-1])
        except KeyboardInterrupt:
            raise _interrupted(self.saved or start_epoch, out) from None
        finally:
            callbacks.on_end()
        parameters = sum(p.numel() for p in self.model.parameters())
        device = str(self.batches.device)
        seconds = time.perf_counter() - run_start
        return TrainResult(self.cfg, history, parameters, device, str(out) if out else None, seconds, start_epoch)

    def _evaluate(self, test: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
        """Test loss and accuracy: computed on rank 0, then the same on every rank (an all-reduce of rank 0's
        values and zeros), so that every rank takes the same decision on them."""
        loss, accuracy = 0.0, 0.0
        if self.dist.is_main:
            network = in_precision(self.evaluated, self.cfg.precision, self.batches.device)
            loss, accuracy = evaluate(network, *test, self.batches.device)
        if not self.dist.enabled:
            return loss, accuracy
        shared = self.dist.sum(torch.tensor([loss, accuracy], dtype=torch.float64, device=self.batches.device))
        return (loss, accuracy) if self.dist.is_main else (float(shared[0]), float(shared[1]))

    def _result(
        self, epoch: int, stats: EpochStats, loss: float, accuracy: float, eval_s: float, elapsed: float
    ) -> EpochResult:
        lr = float(self.optimizer.param_groups[0]["lr"])
        train = (stats.loss, stats.accuracy)
        speed = stats.images / stats.seconds
        return EpochResult(epoch, *train, loss, accuracy, stats.seconds + eval_s, speed, lr, elapsed)

    @property
    def evaluated(self) -> nn.Module:
        """The network that is tested and saved: the weights' moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def checkpoint(self, history: list[EpochResult]) -> dict[str, Any]:
        last = history[-1]
        extra = {"model_state": _to_cpu(self.model.state_dict()), "ema_steps": self.ema.steps} if self.ema else {}
        return make_checkpoint(
            arch=self.cfg.arch,
            arch_config=dict(self.arch.defaults),
            state_dict=_to_cpu(self.evaluated.state_dict()),
            normalization=self.arch.normalization,
            epoch=last.epoch,
            config=asdict(self.cfg),
            history=[asdict(h) for h in history],
            metrics={"test_accuracy": last.test_accuracy, "test_loss": last.test_loss},
            training_state={
                "optimizer": _to_cpu(self.optimizer.state_dict()),
                "scheduler": self.scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state()},
                "scaler": self.precision.scaler.state_dict(),  # fp16's loss scale ({} otherwise)
                **extra,
            },
        )


def _shows_batches(callbacks: TrainCallbacks) -> bool:
    return getattr(callbacks, "shows_batches", False)


def _check_finite(loss: float, epoch: int, saved: int, out: Path | None, lr: float) -> None:
    """A loss that is NaN or infinite means the weights are too: stop before they are saved."""
    if math.isfinite(loss):
        return
    kept = f"; {out} still holds epoch {saved}" if out is not None and saved else "; nothing was saved"
    raise MnistctlError(
        f"training diverged in epoch {epoch}: the loss is {loss}{kept}",
        f"train again with a lower --lr (this run's is {lr:g})",
    )


def _interrupted(done: int, out: Path | None) -> Interrupted:
    """Ctrl-C: what ``out`` holds (the last epoch whose checkpoint was written) and how to go on."""
    if out is not None and done > 0:
        return Interrupted(
            f"interrupted during epoch {done + 1}; {out} holds the complete epoch {done}",
            f"continue with `mnistctl train --resume -o {out}`",
        )
    return Interrupted(
        "interrupted before the first epoch finished, so nothing was saved", "run the same command again to start over"
    )


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
