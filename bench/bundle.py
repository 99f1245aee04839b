"""Train the model that ships with mnistctl, calibrate it, and write it into the package (weights and metadata).

    python bench/bundle.py                 # mnistctl train --epochs 10 --seed 0 --device cpu, then bundle it
    python bench/bundle.py --from run.pt   # bundle a checkpoint trained earlier with that same command
    python bench/bundle.py --second        # the same with --seed 1: the second network, asked where it is unsure

The bundle's confidence is calibrated (temperature scaling, `bench/trust.py --calibrate`: fitted on photos of
the last 5,000 MNIST test digits and drawn non-digits, none of which the trust bench measures on).

The bundled model must be what `mnistctl train` makes with the CPU default recipe (a test checks that its
recorded recipe is the current one, so changing the default forces a retrained bundle). The file holds the
averaged weights, normalisation, configuration and history, plus how it was made: the exact command, the
mnistctl version, the seed, the machine and the test accuracy. No optimizer state: it cannot be resumed.
MNIST must be in the data directory (`mnistctl download --mirror ../shared/mnist`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import subprocess
import tempfile
from pathlib import Path

from common import machine, mnistctl_command
from trust import calibrate

from mnistctl import __version__
from mnistctl.checkpoint import bundled_model_path, bundled_second_path, load_checkpoint, save_checkpoint
from mnistctl.data.mnist import resolve_data_dir

LIMIT_BYTES = 1 << 20


def command(seed: int) -> list[str]:
    """The command the bundled model comes from: the CPU default recipe, 10 epochs."""
    return ["mnistctl", "train", "--epochs", "10", "--seed", str(seed), "--device", "cpu"]


def train(seed: int, out: Path) -> list[str]:
    """Run the real command (writing to ``out``) and return it as a user would type it."""
    subprocess.run(
        [*mnistctl_command(), *command(seed)[1:], "--force", "-o", str(out), "-q"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return command(seed)


def bundle(source: Path, command: list[str], target: Path) -> dict:
    trained = load_checkpoint(source)
    made = {
        "command": shlex.join(command),
        "mnistctl": __version__,
        "seed": trained.config["seed"],
        "test_accuracy": trained.metrics["test_accuracy"],
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
    }
    # Weights and metadata only: no training state, so the bundle cannot be resumed.
    checkpoint = dataclasses.replace(trained, training=None, extra={"bundle": made})
    target.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(target, checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        calibrate(str(target), resolve_data_dir(None), None, Path(tmp))
    size = target.stat().st_size
    if size > LIMIT_BYTES:
        raise SystemExit(f"{target} is {size:,} bytes, over the 1 MiB the package allows")
    return {**made, "bytes": size, "path": str(target)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--second", action="store_true", help="bundle the second network (default seed 1)")
    parser.add_argument("--seed", type=int, help="default: 0, or 1 with --second")
    parser.add_argument("--from", dest="source", type=Path, help="a checkpoint made by the same command")
    parser.add_argument("--command", help="with --from: the command that made it (default: the usual one)")
    args = parser.parse_args()
    target = bundled_second_path() if args.second else bundled_model_path()
    if args.seed is None:
        args.seed = 1 if args.second else 0
    if args.source:
        made_by = shlex.split(args.command) if args.command else command(args.seed)
        print(json.dumps(bundle(args.source, made_by, target), indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.pt"
        print(json.dumps(bundle(out, train(args.seed, out), target), indent=1))


if __name__ == "__main__":
    main()
