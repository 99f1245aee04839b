"""What ``mnistctl eval`` reports, computed from logits and true labels: pure functions, no I/O.

Loss, accuracy, the confusion matrix, per-class precision/recall/F1 and the most confident mistakes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class ClassStats:
    digit: int
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Mistake:
    index: int
    true: int
    predicted: int
    confidence: float


@dataclass
class EvalResult:
    split: str
    count: int
    loss: float
    accuracy: float
    confusion: list[list[int]]  # rows: true digit, columns: predicted digit
    per_class: list[ClassStats]
    mistakes: list[Mistake] = field(default_factory=list)  # most confident first
    errors: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, classes: int = 10) -> torch.Tensor:
    return torch.bincount(labels * classes + predicted, minlength=classes * classes).view(classes, classes)


def per_class_stats(confusion: torch.Tensor) -> list[ClassStats]:
    cm = confusion.double()
    tp, predicted, actual = cm.diag(), cm.sum(0), cm.sum(1)
    precision = tp / predicted.clamp(min=1)
    recall = tp / actual.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return [
        ClassStats(d, round(float(precision[d]), 6), round(float(recall[d]), 6), round(float(f1[d]), 6), int(actual[d]))
        for d in range(cm.shape[0])
    ]


def misclassified(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices of the images the network got wrong, and the digit it read in each of them."""
    predicted = logits.argmax(1)
    wrong = (predicted != labels).nonzero().flatten()
    return wrong, predicted[wrong]


def summarise(split: str, logits: torch.Tensor, labels: torch.Tensor, top_mistakes: int = 10) -> EvalResult:
    """Everything ``mnistctl eval`` reports, from logits and true labels."""
    labels = labels.long()
    count = len(labels)
    confidence, predicted = logits.softmax(1).max(1)
    wrong = (predicted != labels).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:top_mistakes]
    cm = confusion_matrix(labels, predicted)
    return EvalResult(
        split=split,
        count=count,
        loss=float(F.cross_entropy(logits, labels)) if count else float("nan"),
        accuracy=(count - len(wrong)) / count if count else float("nan"),
        confusion=cm.tolist(),
        per_class=per_class_stats(cm),
        mistakes=[Mistake(int(i), int(labels[i]), int(predicted[i]), round(float(confidence[i]), 6)) for i in order],
        errors=len(wrong),
    )


# --------------------------------------------------------------------------------------------- calibration


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """How far confidence is from accuracy: answers grouped by confidence into ``bins`` equal-width bins, the
    gap between each bin's mean confidence and its fraction right, weighted by the bin's share of the answers
    (0: a confidence of c is right a fraction c of the time)."""
    confidence, correct = confidence.double().flatten(), correct.double().flatten()
    if len(confidence) == 0:
        return float("nan")
    which = (confidence * bins).long().clamp(0, bins - 1)  # bin i holds (i/bins, (i+1)/bins]; 1.0 the last
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += float(inside.double().mean()) * abs(float(confidence[inside].mean() - correct[inside].mean()))
    return error


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, low: float = 0.05, high: float = 20.0) -> float:
    """The temperature T (``low`` to ``high``) whose ``softmax(logits / T)`` gives ``labels`` the least negative
    log-likelihood: temperature scaling (Guo et al., 2017). One number, so the likeliest class never changes.
    The likelihood is unimodal in log T: a golden-section search finds it to 0.1 %."""
    logits, labels = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), labels))

    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    while b - a > 1e-3:
        if nll(c) < nll(d):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    return math.exp((a + b) / 2)
