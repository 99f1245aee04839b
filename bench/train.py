"""Training speed and accuracy: the original recipe against the default, measured as a user runs them.

    python bench/train.py --epochs 1                       # quick ratio: original recipe vs default
    python bench/train.py --epochs 10 --seeds 0,1,2 --original-epochs 1   # the default's figure, 3 seeds, and the ratio
    python bench/train.py --epochs 10 --extra="--arch compact --batch-size 256"   # any other recipe

Each run is the real command (`mnistctl train … --json`) in a subprocess; times are wall-clock seconds from
starting the process, so they include start-up, loading the data and the evaluation after every epoch.
MNIST must be in the data directory (run `mnistctl download --mirror ../shared/mnist` first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import machine, mnistctl_command

# The original project: its network, Adam 1e-3, batch 32, no augmentation, plain fp32 (it had no autocast).
ORIGINAL = ["--arch", "seed", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "32", "--no-augment", "--no-amp"]


def run(label: str, args: list[str], epochs: int, seed: int, out_dir: Path) -> dict:
    cmd = [
        *mnistctl_command(),
        "train",
        "--epochs",
        str(epochs),
        "--seed",
        str(seed),
        "--json",
        "-q",
        "--force",
        "-o",
        str(out_dir / f"{label}-{seed}.pt"),
        *args,
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    epochs_seen, t99 = [], None
    summary = None
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "epoch":
            epochs_seen.append(event)
            if t99 is None and event["test_accuracy"] >= 0.99:
                t99 = event["elapsed"]  # seconds of training (and per-epoch evaluation) when it was reached
        else:
            summary = event
    if proc.wait() != 0 or summary is None:
        raise SystemExit(f"{label}: `{shlex.join(cmd)}` failed")
    wall = time.perf_counter() - start
    return {
        "label": label,
        "seed": seed,
        "epochs": epochs,
        "wall": wall,
        "per_epoch": statistics.mean(e["seconds"] for e in epochs_seen),
        "training": summary["seconds"],
        "images_per_s": statistics.mean(e["images_per_s"] for e in epochs_seen),
        "t99": t99,
        "accuracy": summary["test_accuracy"],
        "parameters": summary["parameters"],
        "device": summary["device"],
        "precision": summary["config"]["precision"],
        "recipe": recipe(summary["config"]),
        "command": "mnistctl train " + shlex.join(["--epochs", str(epochs), "--seed", str(seed), *args]),
    }


def recipe(config: dict) -> str:
    """The settings that make a recipe, as `mnistctl train` options would spell them."""
    aug = (
        f"rotate {config['rotate']:g}, scale {config['scale']:g}, shift {config['shift']:g}"
        if config["augment"]
        else "no aug"
    )
    return (
        f"{config['arch']}, {config['optimizer']} lr {config['lr']:g}, batch {config['batch_size']}, "
        f"{config['schedule']}, wd {config['weight_decay']:g}, ls {config['label_smoothing']:g}, {aug}, "
        f"ema {config.get('ema', 0):g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds for the default recipe")
    parser.add_argument("--no-original", action="store_true", help="skip the original recipe")
    parser.add_argument(
        "--original-epochs",
        type=int,
        help="epochs of the original recipe (default: --epochs); its s/epoch is the ratio's",
    )
    parser.add_argument("--extra", default="", help="options for the 'default' runs (e.g. a candidate recipe)")
    args = parser.parse_args()

    print(
        f"machine: {machine()}, Python {platform.python_version()}, "
        f"data dir {os.environ.get('MNISTCTL_DATA_DIR', '(default)')}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_original:
            rows.append(run("original", ORIGINAL, args.original_epochs or args.epochs, 0, Path(tmp)))
            print(rows[-1], flush=True)
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(run("default", shlex.split(args.extra), args.epochs, seed, Path(tmp)))
            print(rows[-1], flush=True)

    print(
        "\n| recipe | device | precision | seed | epochs | whole command s | training s | s/epoch | train img/s "
        "| training s to 99 % | test accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t99 = f"{r['t99']:.1f} s" if r["t99"] is not None else "not reached"
        print(
            f"| {r['label']} | {r['device']} | {r['precision']} | {r['seed']} | {r['epochs']} | {r['wall']:.1f} | "
            f"{r['training']:.1f} | {r['per_epoch']:.2f} | {r['images_per_s']:,.0f} | {t99} | {r['accuracy']:.2%} |"
        )
    defaults = [r for r in rows if r["label"] == "default"]
    if len(defaults) > 1:
        accs = sorted(r["accuracy"] for r in defaults)
        print(
            f"\ndefault: median accuracy {statistics.median(accs):.2%} over {len(accs)} seeds, "
            f"median whole command {statistics.median(r['wall'] for r in defaults):.1f} s"
        )
    originals = [r for r in rows if r["label"] == "original"]
    if originals and defaults:
        ratio = originals[0]["per_epoch"] / statistics.mean(r["per_epoch"] for r in defaults)
        print(f"speed ratio (s/epoch, original / default): {ratio:.1f}x")
    for r in rows:
        print(f"{r['label']}: {r['command']}\n    recipe: {r['recipe']}")


if __name__ == "__main__":
    main()
