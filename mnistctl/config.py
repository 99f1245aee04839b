"""What a training run is: :class:`TrainConfig`, and the one table of defaults it is filled from.

Every option of ``mnistctl train`` that the user leaves out is ``None`` here and comes from the recipe of the
chosen architecture (:data:`RECIPES`). Nothing in this module imports torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from mnistctl.errors import UsageError
from mnistctl.registry import OPTIMIZERS, PRECISIONS, SCHEDULES, Axis

# A learning rate that works for each optimizer when one is chosen without --lr (from the optimizer registry).
DEFAULT_LR = {name: kind.default_lr for name, kind in OPTIMIZERS.entries.items()}

# The network `train` uses when --arch is not given, by the class of the training device.
DEFAULT_ARCH = {"cpu": "compact", "gpu": "wide"}
DEFAULT_EPOCHS = 10
# Reading: below this probability the reader answers "unsure" (?) instead of naming a digit (``--min-confidence``),
# chosen from measurements on photos of digits and on things that are not (bench/trust.py, docs/benchmarks.md).
MIN_CONFIDENCE = 0.5

# compare-optimizers' default comparison, the original project's: Adam 1e-3 against SGD with Nesterov momentum
# 0.9 at 1e-3 (the optimizers it compares when --optimizers is not given, each at this rate unless --lr says).
COMPARE_LRS = {"adam": 1e-3, "sgd-nesterov": 1e-3}

# Augmentation of the recipes that have it (see docs/benchmarks.md for how each value was chosen).
_AUGMENT = {"augment": True, "rotate": 15.0, "scale": 0.15, "shift": 2.0, "elastic": 1.5}

# Each architecture's recipe: what `mnistctl train --arch NAME` uses for the options left unset.
RECIPES: dict[str, dict[str, Any]] = {
    # CPUs: ≥ 99.6 % in 10 epochs (median of 3 seeds) at ≥ 8× the original recipe's speed per epoch.
    "compact": {
        "optimizer": "sgd-nesterov",
        "lr": 0.15,
        "batch_size": 128,
        "schedule": "onecycle",
        "weight_decay": 5e-4,
        "label_smoothing": 0.0,
        **_AUGMENT,
        "ema": 0.999,
        "channels_last": True,
        "negatives": 0.2,
    },
    # GPUs: a wider network and bigger batches (width and batch are nearly free there; launches are not).
    "wide": {
        "optimizer": "sgd-nesterov",
        "lr": 0.3,
        "batch_size": 512,
        "schedule": "onecycle",
        "weight_decay": 5e-4,
        "label_smoothing": 0.0,
        **_AUGMENT,
        "ema": 0.995,
        "channels_last": True,
        "negatives": 0.2,
    },
    # The original project: Adam 1e-3, batch 32, constant rate, no augmentation (but we shuffle).
    "seed": {
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 32,
        "schedule": "constant",
        "weight_decay": 0.0,
        "label_smoothing": 0.0,
        **_AUGMENT,
        "augment": False,
        "ema": 0.0,
        "channels_last": False,
        "negatives": 0.0,
    },
}

# The architectures, by name: each has a recipe here and a network in models.ARCHITECTURES (same names).
ARCHS: Axis[dict[str, Any]] = Axis("architecture", RECIPES)


@dataclass(frozen=True)
class Range:
    """The values one numeric option may take, declared once: the CLI's min/max and :meth:`TrainConfig.validate`
    both read it. ``high`` None: no upper bound."""

    option: str
    low: float
    high: float | None = None

    @property
    def typer(self) -> dict[str, float]:
        """The bounds as typer.Option's ``min=``/``max=``."""
        return {"min": self.low} if self.high is None else {"min": self.low, "max": self.high}

    def check(self, value: float | None) -> None:
        if value is None:
            return
        if self.high is None:
            if value < self.low:
                raise UsageError(
                    f"{self.option} must be at least {_number(self.low)}, not {value}", "pass a positive number"
                )
        elif not (math.isfinite(value) and self.low <= value <= self.high):
            raise UsageError(
                f"{self.option} must be between {_number(self.low)} and {_number(self.high)}, not {_number(value)}",
                "pass a value in that range",
            )


# The ranges of TrainConfig's numeric fields (by field name); --lr and --weight-decay have their own checks.
RANGES = {
    "epochs": Range("--epochs", 1),
    "batch_size": Range("--batch-size", 1),
    "train_limit": Range("--train-limit", 1),
    "ema": Range("--ema", 0.0, 0.9999),
    "label_smoothing": Range("--label-smoothing", 0.0, 0.5),
    "rotate": Range("--rotate", 0.0, 45.0),
    "scale": Range("--scale", 0.0, 0.5),
    "shift": Range("--shift", 0.0, 8.0),
    "elastic": Range("--elastic", 0.0, 6.0),
    "seed": Range("--seed", 0, 2**32 - 1),
    "negatives": Range("--negatives", 0.0, 1.0),
}


AUGMENTATION = tuple(k for k in _AUGMENT if k != "augment")  # the options that act only where images are augmented


@dataclass
class TrainConfig:
    """Everything that determines a training run. ``None`` means "the default" (see :meth:`resolved`)."""

    arch: str | None = None
    epochs: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    schedule: str | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    augment: bool | None = None
    rotate: float | None = None  # degrees, ±
    scale: float | None = None  # ±fraction
    shift: float | None = None  # pixels, ±; whole pixels (cheaper) when there is no rotation or scaling
    elastic: float | None = None  # pixels, up to: a smooth random warp
    ema: float | None = None  # decay of the weights' moving average that is evaluated and saved; 0: none
    seed: int | None = None
    train_limit: int | None = None
    precision: str | None = None  # fp32, bf16 or fp16 (autocast)
    channels_last: bool | None = None
    # Drawn things that are not digits, as a fraction of the training images, taught as an eleventh class
    # ("not a digit"): what lets the reader decline them. 0: a ten-class model.
    negatives: float | None = None
    compile: bool = False
    momentum: float = 0.9

    def negatives_for(self, digits: int) -> int:
        """How many non-digits a run on ``digits`` training images adds (``negatives``, a fraction of them)."""
        return round((self.negatives or 0) * digits)

    def arch_for(self, device_kind: str) -> str:
        """The architecture to train: ``--arch``, else the default for the device kind ("cpu" or "gpu")."""
        return self.arch or DEFAULT_ARCH[device_kind]

    def resolved(self, device_kind: str = "cpu", precision: str = "fp32") -> TrainConfig:
        """A copy with every ``None`` filled in, validated: the architecture from the device kind ("cpu" or
        "gpu"), the rest from that architecture's recipe; ``precision`` is the device's default."""
        self.validate()
        arch = self.arch_for(device_kind)
        recipe = recipe_for(arch)
        base = {"arch": arch, "epochs": DEFAULT_EPOCHS, "seed": 0, "precision": precision, **recipe}
        filled = {key: value for key, value in base.items() if getattr(self, key) is None}
        if self.optimizer is not None and self.lr is None and self.optimizer != recipe["optimizer"]:
            filled["lr"] = DEFAULT_LR[self.optimizer]
        cfg = replace(self, **filled)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Refuse values no run could use, with the option's name and what to pass instead."""
        ARCHS.check(self.arch)
        for name, allowed in RANGES.items():
            allowed.check(getattr(self, name))
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr must be a positive number, not {self.lr}", "pass e.g. --lr 1e-3")
        if self.weight_decay is not None and not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UsageError(f"--weight-decay must be 0 or more, not {self.weight_decay}", "pass e.g. 5e-4")
        if self.negatives and self.arch == "seed":
            raise UsageError("the seed network has no 'not a digit' class", "pass --negatives 0 with --arch seed")
        OPTIMIZERS.check(self.optimizer)
        SCHEDULES.check(self.schedule)
        PRECISIONS.check(self.precision)

    def check_augmentation(self) -> None:
        """Refuse ``--rotate``, ``--scale``, ``--shift`` or ``--elastic`` given for a run that augments nothing
        (``--no-augment``, or a recipe without augmentation): they would do nothing, silently."""
        given = [name for name in AUGMENTATION if getattr(self, name) is not None]
        archs = [self.arch] if self.arch else list(DEFAULT_ARCH.values())
        augments = self.augment if self.augment is not None else any(recipe_for(a)["augment"] for a in archs)
        if given and not augments:
            options = ", ".join(f"--{name}" for name in given)
            if self.augment is False:
                raise UsageError(f"{options} would do nothing with --no-augment", f"drop --no-augment, or {options}")
            why = f"in the {self.arch} recipe, which augments nothing"
            raise UsageError(f"{options} would do nothing {why}", f"add --augment, or leave {options} out")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        # A run stored before negatives existed was trained without them (its network has ten classes).
        return cls(**{"negatives": 0.0, **{k: v for k, v in values.items() if k in known}})


def describe_defaults() -> str:
    """What each class of device trains by default, in a sentence (for `train --help`)."""
    parts = []
    for kind, arch in DEFAULT_ARCH.items():
        r = RECIPES[arch]
        parts.append(
            f"on a {kind.upper()}, {arch} in batches of {r['batch_size']}, {r['optimizer']} at {r['lr']:g} "
            f"({r['schedule']}), moving average {r['ema']:g}"
        )
    return "; ".join(parts) + ", both in bf16 where the device computes it natively, else fp32"


def recipe_for(arch: str) -> dict[str, Any]:
    """The recipe of ``arch``; an unknown name is a usage error that lists the architectures."""
    return ARCHS[arch]


def _number(value: float) -> str:
    """Whole numbers in full (4294967295, not 4.29497e+09), others as %g."""
    return str(value) if isinstance(value, int) else f"{value:g}"
