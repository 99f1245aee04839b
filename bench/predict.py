"""Throughput of `mnistctl predict` on many small image files, the figure the README quotes.

    python bench/predict.py --model digit_model.pt --mirror ../shared/mnist
    python bench/predict.py --model digit_model.pt --in-process      # Reader.read_digits only, no subprocess

Writes the first N (default 10,000) MNIST test digits as 28×28 PNG files into a temporary directory, then:
- times (a) `mnistctl predict DIR -m MODEL` as a whole subprocess, (b) the same command on one image
  (start-up: Python, torch, the checkpoint), (c) `python -c "import torch"`, in --runs interleaved rounds;
- prints images/s beyond start-up two ways: N / (a - b), from the best times and per round; and, per round,
  the lines after the first read of (a)'s output over the time from that read to the last one (it flushes
  every line) — the second does not subtract two noisy start-ups. Then the accuracy of the printed digits;
- measures in-process what one file costs: Pillow's open + decode, `load_image` (Pillow's decoding into an 8-bit
  gray array), and read + preprocess as a decoding thread does it.
With --in-process it times `Reader.read_digits` (the public API) instead of the CLI, the model loaded once.
Timings from a busy machine are not worth quoting: run it alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import load_test_digits, machine, mnistctl_command


def write_pngs(images, directory: Path) -> list[str]:
    from PIL import Image

    paths = []
    for i, pixels in enumerate(images.numpy()):
        path = directory / f"{i:05d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def run_cli(cmd: list[str]) -> tuple[float, tuple[float, int] | None, str]:
    """Run ``cmd`` once: its wall-clock seconds; the seconds from its first read of output to its last and
    the number of lines after that first read (None for a single read); its stdout. Exits with the
    command's last error line if it fails.

    `mnistctl predict` flushes every line, so that span is the time it took to predict the files after the
    first batch, without the start-up whose noise (±0.5 s here) would otherwise be subtracted from a total
    of about two seconds.
    """
    chunks: list[bytes] = []
    first = last = None
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a full stderr pipe would block the command
        start = time.perf_counter()
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err) as proc:
            fd = proc.stdout.fileno()
            while chunk := os.read(fd, 1 << 16):
                last = time.perf_counter()
                first = first or last
                chunks.append(chunk)
            proc.wait()
        seconds = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        lines = stderr.strip().splitlines() or ["(no message)"]
        sys.exit(f"`{shlex.join(cmd)}` failed (exit {proc.returncode}): {lines[-1]}\n(try --in-process)")
    out = b"".join(chunks)
    span = (last - first, out.count(b"\n") - chunks[0].count(b"\n")) if len(chunks) > 1 else None
    return seconds, span, out.decode()


def accuracy_of_lines(stdout: str, labels) -> tuple[float, int]:
    """Accuracy of `path<TAB>digit<TAB>confidence` lines (the file name is the test index); and how many lines."""
    right = total = 0
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].strip().isdigit():
            continue
        index = int(Path(parts[0]).stem)
        total += 1
        right += int(parts[1]) == int(labels[index])
    return (right / total if total else float("nan")), total


def per_file_costs(paths: list[str], sample: int = 2000, rounds: int = 7) -> dict[str, float]:
    """Microseconds per file, in this process and one thread: the median of ``rounds`` passes over ``sample``
    files, the steps taking turns within each round so that a slow spell of the machine hits them alike."""
    from PIL import Image

    from mnistctl.imaging import load_image, preprocess

    def pillow(path: str) -> None:
        with Image.open(path) as im:
            im.load()

    def each(step):
        return lambda files: [step(p) for p in files]

    steps = {
        "Pillow `Image.open` + `load`": each(pillow),
        "`load_image` (Pillow, then an 8-bit gray array)": each(load_image),
        "read + preprocess, as a decoding thread does it": each(lambda p: preprocess(load_image(p))),
    }
    files = paths[:sample]
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step(files)
            times[name].append((time.perf_counter() - start) / len(files) * 1e6)
    return {name: statistics.median(t) for name, t in times.items()}


def in_process(paths: list[str], labels, args: argparse.Namespace) -> None:
    """``Reader.read_digits`` on the files, the model loaded once (outside the timing)."""
    import mnistctl
    from mnistctl.reader import default_workers

    workers = default_workers() if args.workers is None else args.workers
    start = time.perf_counter()
    reader = mnistctl.load_reader(args.model, device="cpu", threads=args.threads)
    load_s = time.perf_counter() - start
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        results = list(reader.read_digits(paths, batch_size=args.batch_size, workers=workers))
        times.append(time.perf_counter() - start)
    right = sum(getattr(r, "digit", None) == int(labels[i]) for i, r in enumerate(results))
    errors = sum(isinstance(r, mnistctl.ReadFailure) for r in results)
    n = len(paths)
    import torch

    print(f"| checkpoint load ({reader.meta.arch}) | {load_s:.3f} s | |")
    print(
        f"| read_digits, {n} files, {workers} workers, {torch.get_num_threads()} torch threads "
        f"| best {min(times):.3f} s, median {statistics.median(times):.3f} s | {n / min(times):,.0f} images/s |"
    )
    print(f"| accuracy | {right / n:.2%} ({errors} errors) | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--count", type=int, default=10_000, help="how many test digits (default 10,000)")
    parser.add_argument("-m", "--model", default="digit_model.pt", help="checkpoint (default digit_model.pt)")
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST data directory (default: mnistctl's)")
    parser.add_argument("--mirror", default=os.environ.get("MNISTCTL_MIRROR", "../shared/mnist"))
    parser.add_argument(
        "--runs", type=int, default=3, help="rounds (CLI) or repetitions (--in-process); best and median (default 3)"
    )
    parser.add_argument("--in-process", action="store_true", help="time Reader.read_digits instead of the CLI")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (--in-process; default as the CLI)")
    parser.add_argument("--batch-size", type=int, default=512, help="network batch size (--in-process)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (--in-process)")
    parser.add_argument("--extra", default="", help='more arguments for `mnistctl predict`, e.g. "--threads 2"')
    args = parser.parse_args()

    from mnistctl.data.mnist import default_data_dir

    if not Path(args.model).exists():
        sys.exit(f"no model at {args.model}: train one with `mnistctl train` or pass --model")
    data_dir = args.data_dir or default_data_dir()
    images, labels = load_test_digits(data_dir, args.mirror, args.count)
    print(
        f"machine: {machine()}, Python {platform.python_version()}; "
        f"{len(images)} MNIST test digits as 28x28 PNG files\n"
    )
    with tempfile.TemporaryDirectory(prefix="mnistctl-bench-") as tmp:
        paths = write_pngs(images, Path(tmp))
        print("| what | time | rate |\n|---|---|---|")
        for name, us in per_file_costs(paths).items():
            print(f"| {name}, per file, one thread (median) | {us:.0f} µs | |")
        if args.in_process:
            in_process(paths, labels, args)
            return
        base = [*mnistctl_command(), "predict"]
        extra = shlex.split(args.extra)
        # Interleaved (whole, one file, import torch) rounds, so that a slow spell of the machine hits all
        # three alike; the rate is reported from the best times and as the median over rounds.
        whole, one, torch_import, spans, stdout = [], [], [], [], ""
        for _ in range(args.runs):
            seconds, span, stdout = run_cli([*base, tmp, "-m", args.model, *extra])
            whole.append(seconds)
            if span:
                spans.append(span)
            one.append(run_cli([*base, paths[0], "-m", args.model, *extra])[0])
            torch_import.append(run_cli([sys.executable, "-c", "import torch"])[0])
        acc, lines = accuracy_of_lines(stdout, labels)
        n = len(paths)
        whole_rate = f"{n / min(whole):,.0f} images/s"
        print(f"| `mnistctl predict DIR` ({n} files), whole command | {min(whole):.2f} s | {whole_rate} |")
        print(f"| `mnistctl predict` on one file (start-up) | {min(one):.2f} s | |")
        print(f"| `python -c 'import torch'` | {min(torch_import):.2f} s | |")
        one_beyond = statistics.median(one) - statistics.median(torch_import)
        print(f"| one file beyond importing torch (medians) | {one_beyond:.2f} s | |")
        beyond = min(whole) - min(one)
        rate = f"{n / beyond:,.0f} images/s" if beyond > 0 else "n/a"
        print(f"| beyond start-up: N / (whole - one), best times | {beyond:.2f} s | {rate} |")
        per_round = sorted(n / (w - o) for w, o in zip(whole, one, strict=True) if w > o)
        if per_round:
            print(
                f"| beyond start-up: N / (whole - one), per round (median; range) | | "
                f"{statistics.median(per_round):,.0f} images/s ({per_round[0]:,.0f}–{per_round[-1]:,.0f}) |"
            )
        if spans:
            rates = sorted(count / seconds for seconds, count in spans)
            print(
                f"| first output to last, per round (median; range) | {statistics.median(s for s, _ in spans):.2f} s | "
                f"{statistics.median(rates):,.0f} images/s ({rates[0]:,.0f}–{rates[-1]:,.0f}) |"
            )
        print(f"| accuracy of the printed digits | {acc:.2%} ({lines} lines of {n}) | |")


if __name__ == "__main__":
    main()
