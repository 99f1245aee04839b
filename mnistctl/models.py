"""Named architectures: ``seed`` (the original project's network) and the default, ``compact``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


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
    """The default: a small network shaped for CPU speed (29,610 parameters, 1.9 M multiply-adds per image).

    ``PixelUnshuffle(2)`` folds each 2×2 patch into 4 channels, so no layer works on full 28×28 maps (those
    cost a third of the time in a conventional first layer); max-pooling right after each later convolution
    leaves BatchNorm and ReLU a quarter of the pixels. Chosen by measurement: see the README.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(2)]  # 1×28×28 → 4×14×14
        cin, size = 4, 14
        for i, w in enumerate(widths):
            layers.append(nn.Conv2d(cin, w, 3, padding=1, bias=False))
            if i > 0:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers += [nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(cin * size * size, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.features(x), 1)))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each BatchNorm's running statistics into the convolution before it, for inference (in place).

    A BatchNorm right after a convolution always folds; one after a convolution and a max-pool folds when its
    scale is positive in every channel (the max of an increasing map is the map of the max). Any other
    BatchNorm stays. The outputs are the same up to float rounding; a BatchNorm costs a pass over its input.
    """
    if not isinstance(model, CompactNet):
        return model
    if model.training:
        raise ValueError("fold_batchnorm is for inference: put the model in eval mode first")
    kept: list[nn.Module] = []
    conv: nn.Conv2d | None = None
    pooled = False
    with torch.no_grad():
        for layer in model.features:
            if isinstance(layer, nn.Conv2d):
                conv, pooled = layer, False
            elif isinstance(layer, nn.MaxPool2d):
                pooled = True
            elif isinstance(layer, nn.BatchNorm2d) and conv is not None and layer.track_running_stats:
                scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
                if not pooled or bool((scale > 0).all()):
                    shift = layer.bias - layer.running_mean * scale
                    if conv.bias is not None:
                        shift = shift + conv.bias * scale
                    conv.weight.mul_(scale.view(-1, 1, 1, 1))
                    conv.bias = nn.Parameter(shift)
                    conv = None
                    continue
                conv = None  # kept: a BatchNorm after it cannot fold into the convolution before this one
            else:
                conv = None  # ReLU, or anything else, between a convolution and a BatchNorm: no folding
            kept.append(layer)
    model.features = nn.Sequential(*kept).eval()
    return model


@dataclass(frozen=True)
class Architecture:
    name: str
    summary: str
    normalization: tuple[float, float]  # (mean, std) applied to pixels scaled to [0, 1]
    defaults: dict[str, Any]
    channels_last: bool = False  # faster memory layout for this network (measured on CPU; see the README)

    def build(self, **config: Any) -> nn.Module:
        merged = {**self.defaults, **config}
        if self.name == "seed":
            return DigitClassifier()
        return CompactNet(widths=tuple(merged["widths"]), dropout=float(merged.get("dropout", 0.0)))


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

ARCHITECTURES: dict[str, Architecture] = {
    "compact": Architecture(
        "compact",
        "pixel-unshuffle stem, 3 convs (16/32/64) with max-pool and BatchNorm, one linear layer (the default)",
        (MNIST_MEAN, MNIST_STD),
        {"widths": [16, 32, 64], "dropout": 0.0},
        channels_last=True,
    ),
    "seed": Architecture(
        "seed",
        "the original project's DigitClassifier: 3 unpooled convs (32/64/64), one linear layer, inputs in [0, 1]",
        (0.0, 1.0),
        {},
    ),
}
DEFAULT_ARCH = "compact"


def get_architecture(name: str) -> Architecture:
    from mnistctl.errors import UsageError

    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UsageError(f"unknown architecture {name!r}", f"use one of: {', '.join(ARCHITECTURES)}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
