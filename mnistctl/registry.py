"""The choices of a training run, each axis in one table: its names (in the order help lists them), what each
name means, and the one check of a value. Help text, the CLI's validation and the code that builds a run all
read these tables, so a name added here is offered, accepted and built everywhere at once.

Nothing here imports torch at import time: ``--help`` reads these tables, and torch is loaded only by the
functions that build an optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mnistctl.errors import UsageError

T = TypeVar("T")


class Axis(Generic[T]):
    """One axis of choices (optimizers, schedules …): names in order, each with its entry."""

    def __init__(self, what: str, entries: dict[str, T]) -> None:
        self.what = what  # "optimizer": as messages name one
        self.entries = entries

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> T:
        self.check(name)
        return self.entries[name]

    def check(self, value: str | None) -> None:
        """Refuse a name that is not on this axis (None is "the default" and passes)."""
        if value is not None and value not in self.entries:
            raise UsageError(f"unknown {self.what} {value!r}", f"use one of: {', '.join(self.entries)}")

    def listed(self) -> str:
        """The names as help shows them: ``a, b or c``."""
        *most, last = self.entries
        return f"{', '.join(most)} or {last}" if most else last


# --------------------------------------------------------------------------------------------- optimizers


def _optim() -> Any:
    """torch.optim, imported when an optimizer is built (never for help or validation)."""
    import torch.optim

    return torch.optim


@dataclass(frozen=True)
class OptimizerKind:
    """An optimizer: the learning rate it gets when chosen without --lr, and how to build it from parameter
    groups, a learning rate and a momentum (used by the SGD ones)."""

    default_lr: float
    build: Callable[[Any, float, float], Any]


OPTIMIZERS: Axis[OptimizerKind] = Axis(
    "optimizer",
    {
        "adam": OptimizerKind(1e-3, lambda params, lr, momentum: _optim().Adam(params, lr=lr)),
        "adamw": OptimizerKind(3e-3, lambda params, lr, momentum: _optim().AdamW(params, lr=lr)),
        "sgd": OptimizerKind(0.05, lambda params, lr, momentum: _optim().SGD(params, lr=lr, momentum=momentum)),
        "sgd-nesterov": OptimizerKind(
            0.05, lambda params, lr, momentum: _optim().SGD(params, lr=lr, momentum=momentum, nesterov=True)
        ),
        "rmsprop": OptimizerKind(1e-3, lambda params, lr, momentum: _optim().RMSprop(params, lr=lr)),
        "adadelta": OptimizerKind(1.0, lambda params, lr, momentum: _optim().Adadelta(params, lr=lr)),
    },
)


def build_optimizer(name: str, params: Any, lr: float, momentum: float) -> Any:
    """The torch optimizer ``name`` over ``params`` (a list of parameter groups)."""
    return OPTIMIZERS[name].build(params, lr, momentum)


# --------------------------------------------------------------------------------------------- schedules
# Each schedule is the learning-rate multiplier at an optimizer step: a pure function of the step and the planned
# total, so a resumed run needs no saved schedule state and an extended run simply plans for its new total.


def _onecycle(step: int, total: int) -> float:
    """Linear from 1/10 up to 1 over the first 20 %, then linear down to 1/1000."""
    warmup = max(1, int(0.2 * total))
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress * (1.0 - 0.001)


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))


def _step_decay(step: int, total: int) -> float:
    """×0.1 at 50 % and 75 % of training."""
    return 0.1 ** ((step >= total // 2) + (step >= 3 * total // 4))


def _constant(step: int, total: int) -> float:
    return 1.0


SCHEDULES: Axis[Callable[[int, int], float]] = Axis(
    "schedule", {"onecycle": _onecycle, "cosine": _cosine, "step": _step_decay, "constant": _constant}
)


def schedule_factor(name: str, total_steps: int) -> Callable[[int], float]:
    """The multiplier of schedule ``name`` at each step of a run planned for ``total_steps`` (for LambdaLR)."""
    schedule, total = SCHEDULES[name], max(1, total_steps)
    return lambda step: schedule(step, total)


# --------------------------------------------------------------------------------------------- precisions

PRECISIONS: Axis[str] = Axis("precision", {"fp32": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast"})
