"""Loss, accuracy, confusion matrix, per-class precision/recall/F1 and the most confident mistakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    inputs: torch.Tensor,
    device: torch.device,
    batch_size: int = 2000,
    amp: bool = False,
) -> torch.Tensor:
    """Logits (float32, on the CPU) for already-normalised ``inputs``, in large batches."""
    from mnistctl.runtime import autocast

    model.eval()
    outs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size].to(device, non_blocking=True)
        with autocast(device, amp):
            outs.append(model(batch).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0, 10)


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
        from dataclasses import asdict

        return asdict(self)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, classes: int = 10) -> torch.Tensor:
    return torch.bincount(labels * classes + predicted, minlength=classes * classes).view(classes, classes)


def per_class_stats(confusion: torch.Tensor) -> list[ClassStats]:
    cm = confusion.double()
    tp = cm.diag()
    predicted = cm.sum(0)
    actual = cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    return [
        ClassStats(d, round(float(precision[d]), 6), round(float(recall[d]), 6), round(float(f1[d]), 6), int(actual[d]))
        for d in range(cm.shape[0])
    ]


def summarise(split: str, logits: torch.Tensor, labels: torch.Tensor, top_mistakes: int = 10) -> EvalResult:
    """Everything ``mnistctl eval`` reports, from logits and true labels."""
    labels = labels.long()
    loss = float(F.cross_entropy(logits, labels)) if len(labels) else float("nan")
    probs = logits.softmax(1)
    confidence, predicted = probs.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:top_mistakes]
    cm = confusion_matrix(labels, predicted)
    return EvalResult(
        split=split,
        count=len(labels),
        loss=loss,
        accuracy=(len(labels) - len(wrong)) / len(labels) if len(labels) else float("nan"),
        confusion=cm.tolist(),
        per_class=per_class_stats(cm),
        mistakes=[Mistake(int(i), int(labels[i]), int(predicted[i]), round(float(confidence[i]), 6)) for i in order],
        errors=len(wrong),
    )


def quick_eval(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, device: torch.device, amp: bool = False
) -> tuple[float, float]:
    """(loss, accuracy) only: what training reports after every epoch."""
    logits = predict_logits(model, inputs, device, amp=amp)
    loss = float(F.cross_entropy(logits, labels.cpu()))
    return loss, int((logits.argmax(1) == labels.cpu()).sum()) / len(labels)


def save_error_images(directory: str, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor) -> int:
    """Write every misclassified digit as ``<index>_true<T>_pred<P>.png``; return how many."""
    from pathlib import Path

    from PIL import Image

    from mnistctl.fsutil import atomic_path

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    predicted = logits.argmax(1)
    wrong = (predicted != labels).nonzero().flatten().tolist()
    for i in wrong:
        target = out / f"{i:05d}_true{int(labels[i])}_pred{int(predicted[i])}.png"
        image = Image.frombytes("L", (28, 28), bytes(images[i].flatten().tolist()))
        with atomic_path(target) as tmp:
            image.save(tmp, format="PNG")
    return len(wrong)
