"""fit(): set up a run, resume it if asked, train epoch after epoch and write a checkpoint after each.

The loop itself (one epoch, in one process or under torchrun) is :mod:`mnistctl.engine`; the batches are
:mod:`mnistctl.batches`. On the CPU a run stopped after epoch k and resumed ends bit-identical to one never
stopped: every epoch's order and augmentation derive from (seed, epoch), and the RNG state is checkpointed.
The whole ``train`` use case (torchrun, device, lock, data) is :mod:`mnistctl.training`.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistctl.batches import EpochBatches
from mnistctl.checkpoint import Checkpoint, TrainingState, save_checkpoint
from mnistctl.config import TrainConfig
from mnistctl.data.mnist import MnistData, normalise
from mnistctl.engine import EMA, Dist, EpochResult, Precision, evaluate, in_precision, make_optimizer, train_one_epoch
from mnistctl.errors import Interrupted, MnistctlError
from mnistctl.models import Architecture, get_architecture
from mnistctl.registry import schedule_factor
from mnistctl.runtime import default_precision, device_kind, seed_everything


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


def fit(
    config: TrainConfig,
    data: MnistData,
    device: torch.device,
    *,
    out: Path | None = None,
    resume: Checkpoint | None = None,
    callbacks: TrainCallbacks | None = None,
    initial_state: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``config`` on ``data``; write a checkpoint to ``out`` after every epoch.

    ``resume``: a checkpoint with its training state, to continue from, ``config`` being the one to continue with
    (:func:`mnistctl.runs.resume_config`). ``initial_state``: start from these weights instead of the seeded
    initialisation. Under torchrun only rank 0 evaluates, reports and writes.
    """
    cfg = config.resolved(device_kind(device), default_precision(device))
    arch = get_architecture(cfg.arch)
    train_x, train_y = data.train_images[: cfg.train_limit], data.train_labels[: cfg.train_limit]
    if len(train_x) == 0:
        raise MnistctlError("there are no training images", "check the data directory and --train-limit")
    digits = len(train_x)
    if cfg.negatives:
        train_x, train_y = with_negatives(train_x, train_y, cfg.negatives_for(digits), cfg.seed)
    dist = Dist.start(device)
    try:
        callbacks = (callbacks if dist.is_main else None) or TrainCallbacks()
        batches = EpochBatches(train_x, train_y, cfg, arch.normalization, device, dist.rank, dist.world_size)
        run = _Run(cfg, arch, batches, dist, initial_state)  # set up
        history = run.resume(resume) if resume is not None else []  # resume
        test = (normalise(data.test_images, *arch.normalization).to(device), data.test_labels.to(device))
        start = saved = history[-1].epoch if history else 0  # saved: the last epoch ``out`` holds
        callbacks.on_start(cfg, batches.steps, start, digits, str(device))
        began = time.perf_counter()
        origin = began - (history[-1].elapsed if history else 0.0)  # when the run, not this process, began
        try:
            for epoch in range(start + 1, cfg.epochs + 1):  # the loop
                result = run.epoch(epoch, test, origin, _progress(callbacks, epoch))
                if dist.is_main:
                    history.append(result)
                    if out is not None:
                        save_checkpoint(out, run.checkpoint(history))  # a checkpoint
                dist.barrier()
                if out is not None:  # every rank knows it (rank 0 saved before the barrier), so says it if stopped
                    saved = epoch
                if dist.is_main:
                    callbacks.on_epoch(history[-1])
        except _Diverged as diverged:
            raise diverged.error(saved, out, cfg.lr) from None
        except KeyboardInterrupt:
            raise _interrupted(saved, out) from None
        finally:
            callbacks.on_end()
        seconds = time.perf_counter() - began
        return TrainResult(cfg, history, run.parameters, str(device), str(out) if out else None, seconds, start)
    finally:
        dist.close()


NOT_A_DIGIT_CLASS = 10  # the label of the drawn non-digits: the eleventh output


def with_negatives(
    images: torch.Tensor, labels: torch.Tensor, count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images with ``count`` non-digits after them, labelled :data:`NOT_A_DIGIT_CLASS` (the same on
    every rank: drawn from ``seed``): three in four drawn (letters, symbols, shapes ...), one in four made from
    the training digits themselves (two run together), as a number reader's missed cuts give. Then half as
    many pieces of numbers of training digits written fast, cut by the number reader's own segmentation
    (:func:`~mnistctl.data.negatives.cut_pieces`): half of them digits (labelled so, slivers of their
    neighbours and all), half two digits ("not a digit"): a model with the class reads numbers."""
    import numpy as np

    from mnistctl.data.negatives import cut_pieces, fragments, negatives

    pieces = count // 4
    digits = images.cpu().numpy()
    made = [negatives(count - pieces, seed), fragments(digits, pieces, seed)]
    drawn = torch.from_numpy(np.concatenate(made)).to(images.device, images.dtype)
    marks = torch.full((count,), NOT_A_DIGIT_CLASS, dtype=labels.dtype, device=labels.device)
    cut, cut_labels = cut_pieces(digits, labels.cpu().numpy(), count // 2, seed, NOT_A_DIGIT_CLASS)
    cut_out = torch.from_numpy(cut).to(images.device, images.dtype)
    return torch.cat([images, drawn, cut_out]), torch.cat([labels, marks, torch.from_numpy(cut_labels).to(labels)])


class _Run:
    """One run's network, with the moving average of its weights, and what trains it (optimizer, learning-rate
    plan, precision): built from the run's config alone, so that each stage of :func:`fit` is one call on it."""

    def __init__(
        self,
        cfg: TrainConfig,
        arch: Architecture,
        batches: EpochBatches,
        dist: Dist,
        initial_state: dict[str, torch.Tensor] | None,
    ) -> None:
        self.cfg, self.arch, self.batches, self.dist = cfg, arch, batches, dist
        device = batches.device
        seed_everything(cfg.seed)
        self.arch_config = arch.config_for(bool(cfg.negatives))
        model = arch.build(**self.arch_config)
        if initial_state:
            model.load_state_dict(initial_state)
        model = model.to(device)
        self.model = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
        self.ema = EMA(self.model, cfg.ema) if cfg.ema else None
        self.optimizer = make_optimizer(cfg, self.model)
        plan = schedule_factor(cfg.schedule, batches.steps * cfg.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, plan)
        self.precision = Precision(cfg.precision, device)
        net = dist.wrap(self.model, device)
        self.net = torch.compile(net) if cfg.compile else net

    @property
    def evaluated(self) -> nn.Module:
        """The network that is tested and saved: the weights' moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def resume(self, checkpoint: Checkpoint) -> list[EpochResult]:
        """Continue ``checkpoint``'s run: its weights, training state, RNG; its history is returned. The rate is
        set from the (new) plan at the step reached, so that a run extended to more epochs continues on the plan
        for its new total from its first step on."""
        state = checkpoint.training
        if state is None:
            raise ValueError("a checkpoint of weights only has no run to resume (runs.resume_config says so)")
        # With an EMA the checkpoint's weights are the average; the ones being trained are kept beside them.
        self.model.load_state_dict(state.model_state or checkpoint.state_dict)
        if self.ema is not None:
            self.ema.module.load_state_dict(checkpoint.state_dict)
            self.ema.steps = state.ema_steps
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        rates = zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas, strict=True)
        for group, base, factor in rates:
            group["lr"] = base * factor(self.scheduler.last_epoch)
        if state.scaler:
            self.precision.scaler.load_state_dict(state.scaler)
        torch.set_rng_state(state.rng["torch"])
        return [EpochResult(**h) for h in checkpoint.history]

    def epoch(
        self, epoch: int, test: tuple[torch.Tensor, torch.Tensor], origin: float, on_progress: Any
    ) -> EpochResult:
        """Train one epoch, then test: its results (``elapsed`` counted from ``origin``), or :class:`_Diverged`."""
        stats = train_one_epoch(
            self.net, self.batches, epoch, self.optimizer, self.scheduler, self.precision, self.dist,
            self.cfg.label_smoothing, self.ema, on_progress=on_progress,
        )  # fmt: skip
        # The training loss is the epoch's sums all-reduced: every rank holds the same value, so all stop.
        _Diverged.check(stats.loss, epoch)
        t0 = time.perf_counter()
        loss, accuracy = self._evaluate(test)
        # The test loss, computed on rank 0 alone, is shared with every rank first: a rank 0 that stopped
        # alone would leave the others waiting in the next collective until its timeout.
        _Diverged.check(loss, epoch)
        now = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        train, speed = (stats.loss, stats.accuracy), stats.images / stats.seconds
        return EpochResult(epoch, *train, loss, accuracy, stats.seconds + now - t0, speed, lr, now - origin)

    def _evaluate(self, test: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
        """Test loss and accuracy: computed on rank 0, then the same on every rank (an all-reduce of rank 0's
        values and zeros), so that every rank takes the same decision on them."""
        loss, accuracy, device = 0.0, 0.0, self.batches.device
        if self.dist.is_main:
            loss, accuracy = evaluate(in_precision(self.evaluated, self.cfg.precision, device), *test, device)
        if not self.dist.enabled:
            return loss, accuracy
        shared = self.dist.sum(torch.tensor([loss, accuracy], dtype=torch.float64, device=device))
        return (loss, accuracy) if self.dist.is_main else (float(shared[0]), float(shared[1]))

    def checkpoint(self, history: list[EpochResult]) -> Checkpoint:
        """What ``out`` holds after the last epoch of ``history``: the (averaged) weights and the training state."""
        last = history[-1]
        training = TrainingState(
            optimizer=_to_cpu(self.optimizer.state_dict()),
            scheduler=self.scheduler.state_dict(),
            rng={"torch": torch.get_rng_state()},
            scaler=self.precision.scaler.state_dict(),  # fp16's loss scale ({} otherwise)
            model_state=_to_cpu(self.model.state_dict()) if self.ema else None,
            ema_steps=self.ema.steps if self.ema else 0,
        )
        return Checkpoint(
            arch=self.cfg.arch,
            arch_config=dict(self.arch_config),
            state_dict=_to_cpu(self.evaluated.state_dict()),
            normalization=self.arch.normalization,
            epoch=last.epoch,
            config=asdict(self.cfg),
            history=[asdict(h) for h in history],
            metrics={"test_accuracy": last.test_accuracy, "test_loss": last.test_loss},
            training=training,
        )


def _progress(callbacks: TrainCallbacks, epoch: int) -> Any:
    """The per-step hook of ``epoch``, or None: reading progress back makes the device wait for the host, so
    only when something shows it."""
    shows = getattr(callbacks, "shows_batches", False)
    return functools.partial(callbacks.on_batch, epoch) if shows else None


class _Diverged(Exception):
    """A loss that is NaN or infinite means the weights are too: the run stops before they are saved."""

    def __init__(self, loss: float, epoch: int) -> None:
        super().__init__(loss, epoch)
        self.loss, self.epoch = loss, epoch

    @classmethod
    def check(cls, loss: float, epoch: int) -> None:
        if not math.isfinite(loss):
            raise cls(loss, epoch)

    def error(self, saved: int, out: Path | None, lr: float) -> MnistctlError:
        """The line that says so, with what ``out`` still holds and what to try."""
        kept = f"; {out} still holds epoch {saved}" if out is not None and saved else "; nothing was saved"
        return MnistctlError(
            f"training diverged in epoch {self.epoch}: the loss is {self.loss}{kept}",
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
