"""The networks, by name: ``seed`` (the original project's), ``compact`` (the CPU default) and ``wide`` (the GPU
default: the same shape, twice the width, which a GPU computes in about the same time); and :class:`LineNet`, the
number reader's network for digits that touch."""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mnistctl.config import ARCHS


class DigitClassifier(nn.Module):
    """The original project's network, module for module, so its plain state_dict loads unchanged.

    Three unpooled 3×3 convolutions (32, 64, 64 filters) and one linear layer; trained on inputs in [0, 1].
    """

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 22 * 22, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class CompactNet(nn.Module):
    """A small network shaped for CPU speed (widths 24/48/64: 44,922 parameters, 3.6 M multiply-adds an image).

    ``PixelUnshuffle(2)`` folds each 2×2 patch into 4 channels, so no layer works on full 28×28 maps (those
    cost a third of the time in a conventional first layer); max-pooling right after each later convolution
    leaves BatchNorm and ReLU a quarter of the pixels. Chosen by measurement: see docs/benchmarks.md.
    """

    def __init__(self, widths: tuple[int, ...] = (24, 48, 64), dropout: float = 0.0, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(2)]  # 1×28×28 → 4×14×14
        cin, size = 4, 14
        for i, width in enumerate(widths):
            layers.append(nn.Conv2d(cin, width, 3, padding=1, bias=False))
            if i > 0:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(cin * size * size, classes)  # 11: the ten digits and "not a digit"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.features(x), 1)))


@dataclass(frozen=True)
class Bound:
    """What one argument of an architecture's factory may be when a checkpoint sets it: a number of ``kind``
    from ``low`` to ``high``, or with ``items``, a list of (fewest, most) such numbers. A file names the network
    to build, so it must not be able to ask for one of any size."""

    kind: type  # int or float (an int is a float too, a bool neither)
    low: float
    high: float
    items: tuple[int, int] | None = None

    def allows(self, value: Any) -> bool:
        if self.items is not None:
            fewest, most = self.items
            return isinstance(value, list | tuple) and fewest <= len(value) <= most and all(map(self._one, value))
        return self._one(value)

    def _one(self, value: Any) -> bool:
        kinds = (int, float) if self.kind is float else (self.kind,)
        return isinstance(value, kinds) and not isinstance(value, bool) and self.low <= value <= self.high

    def __str__(self) -> str:
        what = "whole numbers" if self.kind is int else "numbers"
        if self.items is None:
            return f"a {what[:-1]} from {self.low:g} to {self.high:g}"
        return f"a list of {self.items[0]} to {self.items[1]} {what} from {self.low:g} to {self.high:g}"


@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str
    factory: Callable[..., nn.Module]
    normalization: tuple[float, float]  # (mean, std) applied to pixels scaled to [0, 1]
    defaults: dict[str, Any] = field(default_factory=dict)  # the factory's arguments, stored in checkpoints
    bounds: dict[str, Bound] = field(default_factory=dict)  # what a checkpoint may set each of them to

    def build(self, **config: Any) -> nn.Module:
        return self.factory(**{**self.defaults, **config})

    def config_for(self, not_a_digit: bool) -> dict[str, Any]:
        """The settings a run trains this network with: its defaults, and eleven classes with the "not a digit"
        one (a run with drawn non-digits)."""
        return {**self.defaults, "classes": 11} if not_a_digit else dict(self.defaults)

    def build_on_meta(self, **config: Any) -> nn.Module:
        """The network on torch's "meta" device: every shape and dtype, no memory for the values."""
        with torch.device("meta"):
            return self.build(**config)

    def config_problem(self, config: dict[Any, Any]) -> str | None:
        """What in a checkpoint's ``arch_config`` this network cannot be built with, or None."""
        for key, value in config.items():
            if key not in self.bounds:
                return f"{reprlib.repr(key)} is not a setting of the {self.name} network"
            if not self.bounds[key].allows(value):
                return f"{key} must be {self.bounds[key]}"
        return None


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _compact(widths: list[int], dropout: float = 0.0, classes: int = 10) -> nn.Module:
    return CompactNet(tuple(widths), dropout, classes)


# The compact network's settings a checkpoint may hold: at most 4 convolutions (the maps are 1x1 after the
# fourth), at most 512 channels each (a few hundred MB of weights, training state included; wide has 128).
COMPACT_BOUNDS = {
    "widths": Bound(int, 1, 512, items=(1, 4)),
    "dropout": Bound(float, 0.0, 0.9),
    "classes": Bound(int, 10, 11),  # 11: a "not a digit" class after the ten digits
}

# The networks by name: the names of config.ARCHS, in its order (a test checks), each with its recipe there.
ARCHITECTURES: dict[str, Architecture] = {
    "compact": Architecture(
        "compact",
        "pixel-unshuffle stem, 3 convs (24/48/64) with max-pool and BatchNorm, one linear layer",
        _compact,
        (MNIST_MEAN, MNIST_STD),
        {"widths": [24, 48, 64], "dropout": 0.0},
        COMPACT_BOUNDS,
    ),
    "wide": Architecture(
        "wide",
        "the compact network at twice the width (48/96/128): for GPUs, where width is nearly free",
        _compact,
        (MNIST_MEAN, MNIST_STD),
        {"widths": [48, 96, 128], "dropout": 0.0},
        COMPACT_BOUNDS,
    ),
    "seed": Architecture(
        "seed",
        "the original project's DigitClassifier: 3 unpooled convs (32/64/64), one linear layer, inputs in [0, 1]",
        DigitClassifier,
        (0.0, 1.0),
    ),
}


def get_architecture(name: str) -> Architecture:
    """The network ``name``; an unknown one is refused as every architecture name is (``config.ARCHS``)."""
    ARCHS.check(name)
    return ARCHITECTURES[name]


class LineNet(nn.Module):
    """The line network: reads a group of ink whose digits may touch (a strip 28 px high, any multiple of 4
    wide: :func:`~mnistctl.imaging.segment.line_strip`) as a sequence, one output for every 4 px column —
    the ten digits, "not a digit", and "nothing new here" (CTC's blank, last). Convolutions as the compact
    network's bring the strip to 3 rows of 96 channels a column; two convolutions along the line then see about
    two digits' width either side. Trained by bench/line_model.py on MNIST training digits run together."""

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 96), hidden: int = 96, classes: int = 12) -> None:
        super().__init__()
        a, b, c = widths
        self.features = nn.Sequential(
            nn.PixelUnshuffle(2),  # 1×28×W → 4×14×W/2
            nn.Conv2d(4, a, 3, padding=1, bias=False),
            nn.BatchNorm2d(a),
            nn.ReLU(inplace=True),
            nn.Conv2d(a, b, 3, padding=1, bias=False),
            nn.MaxPool2d(2),  # 7×W/4
            nn.BatchNorm2d(b),
            nn.ReLU(inplace=True),
            nn.Conv2d(b, c, 3, padding=1, bias=False),
            nn.MaxPool2d((2, 1)),  # 3×W/4
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        self.sequence = nn.Sequential(
            nn.Conv1d(3 * c, hidden, 3, padding=1, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, hidden, 5, padding=2, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv1d(hidden, classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×1×28×W strips → N×classes×(W/4) scores."""
        return self.sequence(torch.flatten(self.features(x), 1, 2))


class LineEnsemble(nn.Module):
    """Line networks read side by side: each one's log-probabilities at its calibration temperature, stacked.
    They are decoded one by one (:func:`~mnistctl.line.decode_surest`), not averaged frame by frame: networks
    trained from different starting weights put a symbol's peak in different frames, and where one says
    "here" and the other "blank", a mean says blank."""

    def __init__(self, nets: list[nn.Module], temperatures: list[float]) -> None:
        super().__init__()
        if not nets or len(nets) != len(temperatures):
            raise ValueError("one temperature for each network, and at least one network")
        self.nets = nn.ModuleList(nets)
        self.temperatures = list(temperatures)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×1×28×W strips → networks×N×classes×(W/4) log-probabilities."""
        reads = [net(x).float().div(t).log_softmax(1) for net, t in zip(self.nets, self.temperatures, strict=True)]
        return torch.stack(reads)
