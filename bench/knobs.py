"""CPU speed knobs for the default model, one at a time against the default settings.

    python bench/knobs.py                          # 2 epochs on 20,000 images per setting
    python bench/knobs.py --limit 60000 --epochs 1

For each setting: training images/s, seconds per epoch (training + evaluating the 10,000 test images),
and the test accuracy reached, so that a faster setting that learns worse shows up. Speeds are those of the
last epoch; the first epoch's time is shown too, since it includes `torch.compile`'s compilation.
MNIST must be in the data directory (`mnistctl download --mirror ../shared/mnist`).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from common import machine

from mnistctl.data.mnist import default_data_dir, load_mnist
from mnistctl.runtime import default_precision
from mnistctl.train import TrainConfig, fit


def measure(data, epochs: int, limit: int, threads: int, **knobs) -> dict:
    torch.set_num_threads(threads)
    config = TrainConfig(epochs=epochs, train_limit=limit, **knobs)
    start = time.perf_counter()
    result = fit(config, data, torch.device("cpu"))
    total = time.perf_counter() - start
    last = result.history[-1]
    return {
        "images_per_s": last.images_per_s,
        "first_epoch_s": result.history[0].seconds,
        "epoch_s": last.seconds,
        "accuracy": last.test_accuracy,
        "total_s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=20000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data-dir", default=str(default_data_dir()))
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()

    data = load_mnist(args.data_dir)
    cores = os.cpu_count() or 1
    base = TrainConfig().resolved(precision=default_precision(torch.device("cpu")))
    print(
        f"machine: {machine()}, {cores} threads, torch {torch.__version__}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}; "
        f"default: {base.arch}, batch {base.batch_size}, {base.precision}"
    )
    settings: list[tuple[str, int, dict]] = [("default", cores, {})]
    settings += [(f"batch {b}", cores, {"batch_size": b}) for b in (64, 256, 512) if b != base.batch_size]
    settings += [(f"{t} thread(s)", t, {}) for t in range(1, cores) if t != cores]
    layout = (
        ("NCHW (--no-channels-last)", {"channels_last": False})
        if base.channels_last
        else ("channels_last", {"channels_last": True})
    )
    precision = (
        ("fp32 (--no-amp)", {"precision": "fp32"})
        if base.precision == "bf16"
        else ("bf16 autocast (--amp)", {"precision": "bf16"})
    )
    settings += [(layout[0], cores, layout[1]), (precision[0], cores, precision[1])]
    if not args.skip_compile:
        settings.append(("torch.compile", cores, {"compile": True}))

    rows = []
    for name, threads, knobs in settings:
        try:
            row = measure(data, args.epochs, args.limit, threads, **knobs)
        except Exception as exc:  # e.g. torch.compile without a working compiler
            print(f"{name}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", flush=True)
            continue
        rows.append((name, row))
        print(name, {k: round(v, 4) for k, v in row.items()}, flush=True)

    base_speed = rows[0][1]["images_per_s"]
    print(f"\n{args.limit} training images, {args.epochs} epoch(s) per setting\n")
    print("| setting | train img/s | vs default | s/epoch (train + eval) | first epoch s | test accuracy |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['images_per_s']:,.0f} | {r['images_per_s'] / base_speed:.2f}x | {r['epoch_s']:.1f} | "
            f"{r['first_epoch_s']:.1f} | {r['accuracy']:.2%} |"
        )


if __name__ == "__main__":
    main()
