"""Screen training recipes in one process: test accuracy after N epochs and seconds per epoch, per seed.

    python bench/recipes.py --epochs 10 --seeds 0,1,2 default "ema=0.999" "ema=0.999,rotate=15,scale=0.15"
    python bench/recipes.py --epochs 3 --seeds 0 "arch=compact:24/48/64"

Each candidate is a comma-separated list of TrainConfig fields (``name=value``) on top of the CPU default;
``arch=compact:W1/W2/W3`` tries the compact network with other widths. Runs are interleaved seed by seed, so
that a slow spell of the machine hits every candidate alike. This is how the default recipe was chosen; the
figures quoted in docs/benchmarks.md come from bench/train.py, which runs the real command.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from common import machine

from mnistctl.config import TrainConfig
from mnistctl.data.mnist import default_data_dir, load_mnist
from mnistctl.models import ARCHITECTURES, Architecture
from mnistctl.train import fit


def parse(candidate: str) -> dict:
    if candidate == "default":
        return {}
    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    out: dict = {}
    for part in candidate.split(","):
        key, _, value = part.partition("=")
        if key == "arch" and ":" in value:
            name, widths = value.split(":")
            arch = ARCHITECTURES[name]
            variant = f"{name}:{widths}"
            config = {**arch.defaults, "widths": [int(w) for w in widths.split("/")]}
            ARCHITECTURES[variant] = Architecture(variant, arch.summary, arch.factory, arch.normalization, config)
            from mnistctl.config import RECIPES

            RECIPES[variant] = RECIPES[name]
            out["arch"] = variant
        elif "bool" in str(fields[key]):
            out[key] = value.lower() in ("1", "true", "yes")
        elif "int" in str(fields[key]) and "float" not in str(fields[key]):
            out[key] = int(value)
        elif "float" in str(fields[key]):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--data-dir", default=str(default_data_dir()))
    args = parser.parse_args()

    data = load_mnist(args.data_dir)
    print(f"{machine()}, torch {torch.__version__}")
    results: dict[str, list[tuple[float, float, float]]] = {c: [] for c in args.candidates}
    for seed in (int(s) for s in args.seeds.split(",")):
        for candidate in args.candidates:
            config = TrainConfig(epochs=args.epochs, seed=seed, **parse(candidate))
            start = time.perf_counter()
            result = fit(config, data, torch.device("cpu"))
            per_epoch = (time.perf_counter() - start) / args.epochs
            best = max(h.test_accuracy for h in result.history)
            results[candidate].append((result.final.test_accuracy, best, per_epoch))
            print(
                f"{candidate} seed {seed}: {result.final.test_accuracy:.2%} (best {best:.2%}), "
                f"{per_epoch:.1f} s/epoch, {result.config.precision}",
                flush=True,
            )
    print("\n| candidate | accuracy per seed | median | s/epoch |\n|---|---|---|---|")
    for candidate, rows in results.items():
        accs = " / ".join(f"{a:.2%}" for a, _, _ in rows)
        median = statistics.median(a for a, _, _ in rows)
        print(f"| {candidate} | {accs} | {median:.2%} | {statistics.median(s for _, _, s in rows):.1f} |")


if __name__ == "__main__":
    main()
