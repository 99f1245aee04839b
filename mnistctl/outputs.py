"""Files a command writes besides its checkpoint: the PNG of each mistake (``eval --save-errors``) and the curves
of a comparison (``compare-optimizers --plot``).

These write files, not to the terminal, so they live in the core rather than in ``report``, which only renders.
Each file is written atomically (``fsutil.atomic_file``, into the very file it created): a reader never sees
half a PNG, and a failure leaves no partial file behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistctl.errors import MnistctlError
from mnistctl.fsutil import atomic_file


def save_mistakes(directory: Path, images: Any, labels: Any, indices: Any, predicted: Any) -> int:
    """Write each misclassified digit (``images[i]`` for ``i`` in ``indices``, read as ``predicted``) as
    ``<index>_true<T>_pred<P>.png``; return how many."""
    from torchvision.utils import save_image

    directory.mkdir(parents=True, exist_ok=True)
    for i, digit in zip(indices.tolist(), predicted.tolist(), strict=True):
        target = directory / f"{i:05d}_true{int(labels[i])}_pred{digit}.png"
        with atomic_file(target) as f:
            save_image(images[i].float().div(255), f, format="png")
    return len(indices)


def check_plotting() -> None:
    """Fail before the work, not after it, when --plot cannot be honoured."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise MnistctlError(
            "--plot needs matplotlib, which is not installed", "pip install 'mnistctl[plot]' (or drop --plot)"
        )


def plot_comparison(comparison: Any, path: str, title: str) -> None:
    """Training loss and test accuracy per epoch for every optimizer, as a PNG (needs matplotlib). ``title`` says
    what the runs shared (the CLI passes the comparison table's own title, so the two read alike)."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in comparison.runs:
        epochs = [h.epoch for h in run.history]
        label = f"{run.optimizer} (lr {run.lr:g})"
        ax_loss.plot(epochs, [h.train_loss for h in run.history], marker="o", label=label)
        ax_acc.plot(epochs, [100 * h.test_accuracy for h in run.history], marker="o", label=label)
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    ax_loss.set_yscale("log")
    ax_acc.set(title="test accuracy", xlabel="epoch", ylabel="%")
    from matplotlib.ticker import MaxNLocator

    epochs = sorted({h.epoch for run in comparison.runs for h in run.history})
    for ax in (ax_loss, ax_acc):
        if len(epochs) <= 12:  # a tick for each epoch (one epoch: a single tick, not 0.95 … 1.05)
            ax.set_xticks(epochs)
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
