"""What ``mnistctl eval`` reports, computed from logits and true labels: pure functions, no I/O.

Loss, accuracy, the confusion matrix, per-class precision/recall/F1 and the most confident mistakes.
"""

from __future__ import annotations

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
