"""The same commands timed on two source trees in one run: this checkout and an older commit (a git worktree).

    python bench/before_after.py --old 426aba3 --mirror ../shared/mnist --rounds 3

Each round runs, for the old tree then the new one (the order alternating between rounds, so that a slow spell
of the shared machine hits both alike), as `python -m mnistctl` with the tree on PYTHONPATH:
- `predict DIR` on the first N (default 10,000) MNIST test digits written as 28×28 PNG files, with the bundled
  model: images/s beyond start-up, N / (whole command - the same command on one file);
- `eval` on the test set with the bundled model: the whole command's seconds;
- `train --epochs 1` (the device's default recipe) into a temporary file: the whole command's seconds.
Prints a Markdown table with both columns, the new/old ratio per round and of the medians, and the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import load_test_digits, machine

REPO = Path(__file__).resolve().parents[1]


def worktree(commit: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(where), commit], check=True,
                   capture_output=True)  # fmt: skip
    return where


def timed(tree: Path, args: list[str], env: dict[str, str]) -> float:
    """Seconds of one `python -m mnistctl ARGS` from ``tree``; exits with its last error line if it fails."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mnistctl", *args], env={**env, "PYTHONPATH": str(tree)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no message)"]
        sys.exit(f"{tree}: mnistctl {' '.join(args)} failed: {lines[-1]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the commit to compare with")
    parser.add_argument("--mirror", default=os.environ.get("MNISTCTL_MIRROR", "../shared/mnist"))
    parser.add_argument("-n", "--count", type=int, default=10_000, help="images for predict (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma-separated: predict,eval,train")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    with tempfile.TemporaryDirectory(prefix="mnistctl-before-after-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        images, _ = load_test_digits(data, args.mirror, args.count)
        pngs = tmp / "pngs"
        pngs.mkdir()
        from PIL import Image

        for i, pixels in enumerate(images.numpy()):
            Image.fromarray(pixels).save(pngs / f"{i:05d}.png")
        one = str(pngs / "00000.png")
        trees = {"old": worktree(args.old, tmp / "old"), "new": REPO}
        os.chdir(tmp)  # no ./digit_model.pt: both sides use their bundled model
        env = {k: v for k, v in os.environ.items() if not k.startswith("MNISTCTL_")}
        env |= {"MNISTCTL_DATA_DIR": str(data), "MNISTCTL_MIRROR": args.mirror}
        measures = {
            "predict": lambda t: args.count / (timed(t, ["predict", str(pngs)], env) - timed(t, ["predict", one], env)),
            "eval": lambda t: timed(t, ["eval"], env),
            "train": lambda t: timed(t, ["train", "--epochs", "1", "--force", "-o", str(tmp / "m.pt")], env),
        }
        results: dict[str, dict[str, list[float]]] = {m: {"old": [], "new": []} for m in measures if m not in skip}
        for r in range(args.rounds):
            order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
            for name, values in results.items():
                for side in order:
                    values[side].append(measures[name](trees[side]))
                    print(f"round {r + 1}: {name} {side} {values[side][-1]:.2f}", file=sys.stderr)
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees["old"])], check=False)

    units = {"predict": "images/s (beyond start-up)", "eval": "s, whole command", "train": "s, whole command"}
    print(f"machine: {machine()}; old = {args.old}, new = this checkout; {args.rounds} rounds\n")
    print("| command | unit | old, per round | new, per round | new / old, per round | new / old, medians |")
    print("|---|---|---|---|---|---|")
    for name, values in results.items():
        old, new = values["old"], values["new"]
        ratios = "; ".join(f"{n / o:.2f}" for o, n in zip(old, new, strict=True))
        median = statistics.median(new) / statistics.median(old)
        fmt = ",.0f" if name == "predict" else ".2f"
        print(
            f"| `{name}` | {units[name]} | {'; '.join(format(v, fmt) for v in old)} | "
            f"{'; '.join(format(v, fmt) for v in new)} | {ratios} | {median:.2f} |"
        )


if __name__ == "__main__":
    main()
