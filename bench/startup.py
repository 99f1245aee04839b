"""Start-up and data figures the README quotes.

    python bench/startup.py --mirror ../shared/mnist

Times (best and median of N runs, wall clock, subprocesses):
- `mnistctl --help`, `mnistctl --version`
- `mnistctl download` when every file is already present
- reading the whole training set (60,000 images) with mnistctl's IDX reader, in-process
- `import torch`, for comparison
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from common import machine, mnistctl_command


def timed(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return times


def row(name: str, times: list[float]) -> None:
    print(f"| {name} | {min(times):.3f} | {statistics.median(times):.3f} | {len(times)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", default=os.environ.get("MNISTCTL_MIRROR", "../shared/mnist"))
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    exe = mnistctl_command()
    print(f"machine: {machine()}, Python {platform.python_version()}\n")
    print("| what | best s | median s | runs |\n|---|---|---|---|")
    row("`mnistctl --help`", timed([*exe, "--help"], args.runs))
    row("`mnistctl --version`", timed([*exe, "--version"], args.runs))
    row("`python -c 'import torch'`", timed([sys.executable, "-c", "import torch"], max(3, args.runs // 2)))
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MNISTCTL_DATA_DIR": tmp}
        start = time.perf_counter()
        subprocess.run(
            [*exe, "download", "--mirror", args.mirror, "-q"], check=True, env=env, stdout=subprocess.DEVNULL
        )
        row("`mnistctl download` (first, from the local mirror)", [time.perf_counter() - start])
        row("`mnistctl download` (all present)", timed([*exe, "download", "-q"], args.runs, env))

        from mnistctl.data.mnist import load_split

        load_split(tmp, "test")  # warm the page cache and torch's import
        loads = []
        for _ in range(args.runs):
            start = time.perf_counter()
            images, labels = load_split(tmp, "train")
            loads.append(time.perf_counter() - start)
        assert tuple(images.shape) == (60000, 28, 28)
        row("read the training set (60,000 images, in-process)", loads)


if __name__ == "__main__":
    main()
