"""One epoch of training and one pass of evaluation, written once for one process and for torchrun.

:class:`Dist` is torchrun's process group, and does nothing in a single process; :class:`Precision` is the
autocast context with the gradient scaler that fp16 needs (bf16 and fp32 need none). The optimizer a run is
configured with is built here too, and what an epoch's results are is said here: ``train.fit`` builds its run
with them, and ``runs.check_resumable`` rehearses resuming one with them before it starts.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mnistctl.batches import EpochBatches
from mnistctl.config import TrainConfig
from mnistctl.data.mnist import normalise
from mnistctl.metrics import EvalResult, summarise
from mnistctl.registry import build_optimizer
from mnistctl.runtime import DistInfo, dist_info, init_distributed, shutdown_distributed

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Dist:
    """torchrun's view of this process and the collective operations training needs; no-ops alone."""

    def __init__(self, info: DistInfo) -> None:
        self.rank, self.world_size = info.rank, info.world_size
        self.enabled, self.is_main = info.enabled, info.is_main

    @classmethod
    def start(cls, device: torch.device) -> Dist:
        """Join torchrun's process group when there is one (NCCL between GPUs, gloo between CPU processes)."""
        info = dist_info()
        init_distributed(device, info)
        return cls(info)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train: ``model`` itself, or DistributedDataParallel around it."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":  # SyncBatchNorm works on GPUs only; on CPU each rank normalises its own part
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            import torch.distributed as tdist

            tdist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as tdist

            tdist.barrier()

    def close(self) -> None:
        if self.enabled:
            shutdown_distributed()


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of ``precision`` (fp32: none) on ``device``."""
    dtype = DTYPES[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


class Precision:
    """Training in ``fp32``, ``bf16`` or ``fp16`` on ``device``: fp16 scales the loss so that small gradients
    survive (the scaler checks every step for overflow, so fp16 reads one value back from the device a step)."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name, self.device = name, device
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.name, self.device)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


class InPrecision(nn.Module):
    """``module`` run under ``precision``'s autocast, its outputs in float32: a network for inference in the
    precision the device computes fastest (bf16 halves the time of a forward pass on a CPU with AVX512-BF16)."""

    def __init__(self, module: nn.Module, precision: str, device: torch.device) -> None:
        super().__init__()
        self.module, self.precision, self.device = module, precision, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, self.device):
            return self.module(x).float()


def in_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """``model`` as it should run for inference in ``precision`` (itself for fp32)."""
    return model if precision == "fp32" else InPrecision(model, precision, device)


class EMA:
    """An exponential moving average of a model's weights and BatchNorm statistics: a copy, updated after each
    optimizer step, that evaluates better than the weights of any one step. Its decay ramps up from 2/11
    towards ``decay`` over the first steps, so the average follows the fast early changes instead of remembering the
    random initialisation. The step count lives on the host: updating never waits for the device."""

    def __init__(self, model: nn.Module, decay: float, steps: int = 0) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.steps = decay, steps
        self._pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for average, current in self._pairs:
            if average.is_floating_point():
                average.lerp_(current, 1 - d)
            else:
                average.copy_(current)  # BatchNorm's batch counter


@dataclass
class EpochStats:
    loss: float  # mean training loss over the epoch's images
    accuracy: float  # on the (augmented) training images, as seen during the epoch
    seconds: float
    images: int


@dataclass
class EpochResult:
    """What a run reports, and a checkpoint's history holds, for each epoch."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float  # training and evaluation of this epoch
    images_per_s: float  # training throughput
    lr: float
    elapsed: float = 0.0  # seconds since the run (not this process) started training


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer; weight decay applies to weight matrices and kernels, not biases or BatchNorm."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    params = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return build_optimizer(cfg.optimizer, params, cfg.lr, cfg.momentum)


ProgressFn = Callable[[int, float, float, float], None]  # (step, loss so far, accuracy so far, images/s)


def train_one_epoch(
    net: nn.Module,
    batches: EpochBatches,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    precision: Precision,
    dist: Dist,
    label_smoothing: float = 0.0,
    ema: EMA | None = None,
    on_progress: ProgressFn | None = None,
    progress_every: int = 20,
) -> EpochStats:
    """Train ``net`` for one epoch. Loss and accuracy are summed on the device and read back only every
    ``progress_every`` steps, so the device never waits for the host in between."""
    start = time.perf_counter()
    net.train()
    loss_sum = torch.zeros((), device=batches.device)
    correct = torch.zeros((), device=batches.device, dtype=torch.long)
    seen = 0
    for step, (x, y, size) in enumerate(batches.epoch(epoch), 1):
        with precision.autocast():
            logits = net(x)
        # Summed over this rank's images and scaled so that DDP's average of gradients is the global mean.
        summed = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing, reduction="sum")
        precision.backward_and_step(summed * dist.world_size / size, optimizer)
        scheduler.step()
        if ema is not None:
            ema.update()
        loss_sum += summed.detach()
        correct += (logits.argmax(1) == y).sum()
        seen += size
        # The first step too: it shows at once that training has begun, and how fast it goes.
        if on_progress is not None and (step == 1 or step % progress_every == 0 or step == batches.steps):
            local = max(1, seen // dist.world_size)
            elapsed = max(1e-9, time.perf_counter() - start)
            on_progress(step, float(loss_sum) / local, float(correct) / local, seen / elapsed)
    # float32 (not float64, which MPS lacks): exact for counts below 2**24, plenty for a loss sum.
    loss_total, correct_total = dist.sum(torch.stack([loss_sum.float(), correct.float()])).tolist()
    n = len(batches)
    return EpochStats(loss_total / n, correct_total / n, time.perf_counter() - start, n)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    inputs: torch.Tensor,
    device: torch.device,
    batch_size: int = 2000,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """The ten digits' logits (float32, on the CPU) for already-normalised ``inputs``, in large batches; a "not a
    digit" output, where the model has one, is left out: accuracy is the digit read with --always-answer.
    ``on_batch(n)`` is told after each batch how many images it held."""
    model.eval()
    outs = []
    for i in range(0, len(inputs), batch_size):
        outs.append(model(inputs[i : i + batch_size].to(device))[:, :10].float().cpu())
        if on_batch is not None:
            on_batch(len(outs[-1]))
    return torch.cat(outs) if outs else torch.empty(0, 10)


def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on normalised ``inputs``: what training reports after every epoch."""
    logits = predict_logits(model, inputs, device)
    labels = labels.cpu()
    return float(F.cross_entropy(logits, labels)), int((logits.argmax(1) == labels).sum()) / max(1, len(labels))


def evaluate_split(
    split: str,
    model: nn.Module,
    normalization: dict[str, float],
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    *,
    batch_size: int = 2000,
    top_mistakes: int = 10,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[EvalResult, torch.Tensor]:
    """``mnistctl eval``: the report on ``split``'s ``images`` (uint8) and the logits it came from. ``seconds``
    times normalising the images and the forward passes; ``on_batch(n)`` follows their progress."""
    start = time.perf_counter()
    inputs = normalise(images, normalization["mean"], normalization["std"])
    logits = predict_logits(model.to(device), inputs, device, batch_size, on_batch)
    seconds = time.perf_counter() - start
    result = summarise(split, logits, labels, top_mistakes=top_mistakes)
    result.seconds = seconds
    return result, logits
