"""What the reader returns: typed results whose ``to_dict()`` is the one JSON schema (``predict --json`` prints
a file's path followed by exactly that).

No torch here: these are plain values (the probabilities are Python floats, the pixels a numpy array).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in the image's pixels, x1 and y1 exclusive

DECIMALS = 6  # to_dict() rounds probabilities and confidences to this many places (the attributes are exact)


def _number(p: float) -> float | None:
    """A probability as to_dict() gives it: rounded, or None where a broken model made it NaN (JSON has no NaN)."""
    return round(p, DECIMALS) if math.isfinite(p) else None


NOT_A_DIGIT = "not a digit"  # the model's own "not a digit" class is its likeliest answer
UNSURE = "unsure"  # no digit is as likely as the reader's minimum confidence
DECLINED = "?"  # a declined digit, in a TSV line and in a number's text


@dataclass(frozen=True)
class DigitReading:
    """One digit read: the likeliest digit — or None, with the ``reason``, where the reader declines to name one —
    its probability, the ten digits' probabilities, the 28×28 uint8 input the network saw, and, for a digit of
    a number, where it is in the image. ``not_a_digit`` is the probability the model gives its "not a digit"
    class (the ten and it sum to 1), or None for a model without one (the ten then sum to 1)."""

    digit: int | None
    confidence: float
    probabilities: tuple[float, ...]
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)
    box: Box | None = None
    reason: str | None = None  # NOT_A_DIGIT or UNSURE when digit is None
    not_a_digit: float | None = None
    several_digits: bool = field(default=False, compare=False)  # the image looks like a number (read_number)

    @property
    def top_digit(self) -> int:
        """The likeliest digit, declined or not."""
        return max(range(len(self.probabilities)), key=self.probabilities.__getitem__)

    @property
    def shown(self) -> str:
        """The digit as a line shows it: ``?`` where declined."""
        return DECLINED if self.digit is None else str(self.digit)

    def runners_up(self, k: int) -> list[int]:
        """The ``k`` likeliest digits after the one named, likeliest first; where none is named (declined), the
        ``k`` likeliest, so that a declined line still shows which digit came closest."""
        ranked = sorted(range(len(self.probabilities)), key=lambda d: -self.probabilities[d])
        return ranked[:k] if self.digit is None else ranked[1 : 1 + k]

    def to_dict(self, top_k: int = 0, *, pixels: bool = False) -> dict[str, Any]:
        """``{"digit", "confidence", "probabilities"}`` (``"box"`` first for a digit of a number; ``"digit":
        null`` and a ``"reason"`` where declined; ``"not_a_digit"`` for a model with that class), and with
        ``top_k`` the runners-up: ``"top_k": [{"digit", "probability"}, ...]``; with ``pixels``, the 28×28 input
        the network saw as rows of 0-255 (``"pixels"``)."""
        out: dict[str, Any] = {"box": list(self.box)} if self.box is not None else {}
        out["digit"] = self.digit
        if self.reason is not None:
            out["reason"] = self.reason
        out |= {
            "confidence": _number(self.confidence),
            "probabilities": [_number(p) for p in self.probabilities],
        }
        if self.not_a_digit is not None:
            out["not_a_digit"] = _number(self.not_a_digit)
        if top_k:
            out["top_k"] = [{"digit": d, "probability": _number(self.probabilities[d])} for d in self.runners_up(top_k)]
        if pixels and self.pixels is not None:
            out["pixels"] = self.pixels.tolist()
        return out


@dataclass(frozen=True)
class NumberReading:
    """A number read digit by digit, left to right: the digits as text (``?`` for each one declined), the least
    confident digit's confidence, and each digit (with its box)."""

    text: str
    confidence: float
    digits: tuple[DigitReading, ...]

    @classmethod
    def of(cls, digits: list[DigitReading]) -> NumberReading:
        return cls("".join(d.shown for d in digits), min(d.confidence for d in digits), tuple(digits))

    def to_dict(self, top_k: int = 0, *, pixels: bool = False) -> dict[str, Any]:
        """``{"number", "confidence", "digits": [each digit's to_dict(top_k, pixels=pixels)]}``."""
        return {
            "number": self.text,
            "confidence": _number(self.confidence),
            "digits": [d.to_dict(top_k, pixels=pixels) for d in self.digits],
        }


@dataclass(frozen=True)
class ReadFailure:
    """An image that gave no reading, with the one-line reason (what :class:`~mnistctl.imaging.ImageError`
    said: "no such file", "blank image: no ink found" ...). ``read_digits`` yields it in the image's place."""

    error: str

    def to_dict(self, top_k: int = 0, *, pixels: bool = False) -> dict[str, Any]:
        return {"error": self.error}


Reading = DigitReading | NumberReading | ReadFailure


@dataclass(frozen=True)
class ModelMeta:
    """What a reader knows of its model: the file, the network, what it is fed, how it was trained and how well
    it did on MNIST's test set."""

    path: str
    arch: str
    arch_config: dict[str, Any]
    normalization: dict[str, float]  # {"mean", "std"} of the pixels (0-1) the network was trained on
    test_accuracy: float | None  # None for a checkpoint that does not say
    epochs: int
    training: dict[str, Any]  # the training configuration: optimizer, lr, batch size, augmentation ...
    versions: dict[str, str]  # of mnistctl, torch and Python that wrote the file
    device: str  # where the reader runs it
    precision: str  # "fp32", "bf16" or "fp16"
    temperature: float = 1.0  # the logits are divided by it before the softmax: calibration (docs/design.md)
    classes: tuple[str, ...] = tuple("0123456789")  # the model's outputs, "not a digit" last where it has one
    line_model: str | None = None  # the line networks' file, which read digits that touch (None: none)
    second_model: str | None = None  # the second digit network, asked where the first is unsure (None: none)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
