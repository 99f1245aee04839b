"""How well `predict --multi` reads whole numbers: MNIST test digits written as people's photos of numbers.

    MNISTCTL_DATA_DIR=/tmp/mnist-data python bench/whole_numbers.py -m digit_model.pt
    python bench/whole_numbers.py -m digit_model.pt -n 2000 --seed 1 --samples docs/numbers    # a few images too
    python bench/whole_numbers.py -m digit_model.pt --touching 0.35 --most 5     # neighbours running into each other
    python bench/whole_numbers.py -m digit_model.pt --page 4000x3000 --sizes 28,40   # small digits on a big page
    python bench/whole_numbers.py -m digit_model.pt --least 56 --most 100 --sizes 28,40   # long rows

(Not bench/numbers.py: a script's folder comes first on sys.path, so a numbers.py there would stand in for the
standard library's `numbers`, which numpy imports, and break every script in bench/.)

Renders -n numbers of 2-6 MNIST *test* digits each (never the training set), the way people's images of
numbers look: dark ink on light, uneven, grainy paper (or light ink on a dark board, one in three); one digit
size per number (28-130 px for the 28x28 digit) with each digit up to ±15 % bigger or smaller and its
baseline up to ±12 % of the size off the line; gaps between digits uneven (2 % to 60 % of the size) but never
touching; saved as RGB JPEG (quality 60-95) or PNG. Then reads them all with `Reader.read_numbers`
(segmentation, then every digit of every image through the network in shared batches) and prints: the share
of numbers read exactly, the share read wrong with no digit declined (no `?` to warn), the share split into the
right number of digits, the per-digit accuracy (a digit counts as right only in a number split into the right
count), the share of digits whose box (in numbers split right) lies on the digit's ink (intersection over union
with its ink box at least 0.5), and the time `Reader.read_number` takes on 1000x300 photos of 6-digit numbers
written the same way (beyond decoding). With the command and the machine.
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import machine
from PIL import Image, ImageDraw, ImageFilter


@dataclass
class Number:
    path: str
    digits: str  # the true reading
    boxes: list[tuple[int, int, int, int]]  # where each digit's ink is


# --------------------------------------------------------------------------------------------- rendering


def _paper(size: tuple[int, int], rng: random.Random, dark: bool) -> np.ndarray:
    """Paper (light, a gentle gradient, grain) or a board (dark), as float gray levels."""
    w, h = size
    base = rng.uniform(20, 70) if dark else rng.uniform(175, 245)
    tilt = rng.uniform(-12, 12)
    gradient = np.linspace(-tilt, tilt, w)[None, :] + np.linspace(-tilt, tilt, h)[:, None] * rng.uniform(-1, 1)
    grain = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 8), (h, w))
    return base + gradient + grain


def _digit_ink(pixels: np.ndarray, side: int) -> np.ndarray:
    """One MNIST digit scaled to ``side``, cropped to its ink: coverage 0..1."""
    a = np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC), np.float64) / 255
    rows, cols = np.flatnonzero(a.max(1) > 0.02), np.flatnonzero(a.max(0) > 0.02)
    return np.clip(a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 0, 1)


SIZES = (28, 130)  # the side the 28×28 MNIST digit is drawn at (its ink: up to 20 of the 28 px, so 20-93 px high)


def render(
    images: np.ndarray,
    rng: random.Random,
    touching: float = 0.0,
    sizes: tuple[int, int] = SIZES,
    page: tuple[int, int] | None = None,
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A number written with the digits ``images`` (k×28×28 uint8): the picture and each digit's ink box. With
    ``touching``, neighbours' ink boxes overlap by 0 to ``touching`` of the narrower one's width (written fast:
    the digits touch or run into each other) instead of standing apart. ``sizes``: the range of the digit size
    (the 28×28 frame's side). ``page`` (width, height): the number somewhere on a page that big (or bigger, if
    the number is)."""
    size = rng.randint(*sizes)
    inks = [_digit_ink(d, max(12, round(size * rng.uniform(0.85, 1.15)))) for d in images]
    line = size  # the baseline, from the top of the canvas before margins
    margin_x, margin_y = round(size * rng.uniform(0.3, 1.5)), round(size * rng.uniform(0.3, 1.0))
    placed, x = [], margin_x
    for i, ink in enumerate(inks):
        bottom = line + round(size * rng.uniform(-0.12, 0.12))
        placed.append((x, bottom - ink.shape[0], ink))
        if touching and i + 1 < len(inks):
            x += ink.shape[1] - round(min(ink.shape[1], inks[i + 1].shape[1]) * rng.uniform(0, touching))
        else:
            x += ink.shape[1] + max(2, round(size * rng.uniform(0.02, 0.6)))  # never touching: boxes apart
    top = min(y for _, y, _ in placed)
    width = x + margin_x
    height = max(y + ink.shape[0] for _, y, ink in placed) - top + 2 * margin_y
    if page is not None:  # the number's own canvas, put somewhere on the page
        dx, dy = rng.randint(0, max(0, page[0] - width)), rng.randint(0, max(0, page[1] - height))
        placed = [(x0 + dx, y + dy, ink) for x0, y, ink in placed]
        width, height = max(width, page[0]), max(height, page[1])
    coverage = np.zeros((height, width))
    boxes = []
    for x0, y, ink in placed:
        y0 = y - top + margin_y
        region = coverage[y0 : y0 + ink.shape[0], x0 : x0 + ink.shape[1]]
        np.maximum(region, ink, out=region)  # where digits overlap, the darker ink
        boxes.append((x0, y0, x0 + ink.shape[1], y0 + ink.shape[0]))
    dark = rng.random() < 1 / 3
    paper = _paper((width, height), rng, dark)
    ink_level = rng.uniform(200, 250) if dark else rng.choice((rng.uniform(0, 40), rng.uniform(40, 100)))
    gray = paper * (1 - coverage) + ink_level * coverage
    img = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))  # a slightly soft photo
    tint = rng.randint(0, 10)
    rgb = Image.merge("RGB", (img.point(lambda v: min(255, v + tint)), img, img.point(lambda v: max(0, v - tint))))
    return rgb, boxes


def write_numbers(
    images, labels, count: int, seed: int, directory: Path, touching: float = 0.0, most: int = 6, least: int = 2,
    sizes: tuple[int, int] = SIZES, page: tuple[int, int] | None = None,
) -> list[Number]:  # fmt: skip
    """Render and save ``count`` numbers of ``least`` to ``most`` test digits (the rest: :func:`render`'s
    options); number i is the same whatever ``count`` is."""
    directory.mkdir(parents=True, exist_ok=True)
    pixels, truth = images.numpy(), labels.numpy()
    numbers = []
    for i in range(count):
        rng = random.Random(seed * 1_000_003 + i)
        picks = [rng.randrange(len(pixels)) for _ in range(rng.randint(least, most))]
        img, boxes = render(pixels[picks], rng, touching, sizes, page)
        jpeg = rng.random() < 0.7
        path = directory / f"{i:05d}.{'jpg' if jpeg else 'png'}"
        img.save(path, **({"quality": rng.randint(60, 95)} if jpeg else {}))
        numbers.append(Number(str(path), "".join(str(int(truth[k])) for k in picks), boxes))
    return numbers


# --------------------------------------------------------------------------------------------- measuring


def read_numbers(numbers: list[Number], model_path: str, workers: int, line_model=True) -> tuple[list, float]:
    """Every number read through the public API (``Reader.read_numbers``), as `mnistctl predict --multi` does."""
    import mnistctl

    reader = mnistctl.load_reader(model_path, device="cpu", line_model=line_model)  # as the CLI runs it
    start = time.perf_counter()
    preds = list(reader.read_numbers([n.path for n in numbers], workers=workers))
    return preds, time.perf_counter() - start


def reading_ms(images, seed: int, model_path: str, touching: float, photos: int = 10, line_model=True) -> list[float]:
    """``Reader.read_number`` on decoded 1000x300 JPEG photos of 6-digit numbers (their digits touching by up to
    ``touching``), beyond decoding: for each of ``photos`` numbers, the best of 3, in ms."""
    import mnistctl
    from mnistctl.imaging import load_image

    reader = mnistctl.load_reader(model_path, device="cpu", line_model=line_model)
    rng = random.Random(seed)
    grays = []
    with tempfile.TemporaryDirectory() as tmp:
        while len(grays) < photos:  # 6-digit numbers at the size that makes them about 1000x300
            img, _ = render(images.numpy()[rng.sample(range(len(images)), 6)], rng, touching)
            if 0.6 < img.width / 1000 < 1.4:
                img.resize((1000, 300), Image.Resampling.BILINEAR).save(Path(tmp) / "number.jpg", quality=85)
                grays.append(load_image(Path(tmp) / "number.jpg"))
    reader.read_number(grays[0])  # the first call imports scipy.ndimage
    times = []
    for gray in grays:
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            reader.read_number(gray)
            best = min(best, time.perf_counter() - start)
        times.append(best * 1000)
    return times


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    width, height = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    both = max(0, width) * max(0, height)
    either = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - both
    return both / either if either else 0.0


def write_samples(numbers: list[Number], preds: list, directory: Path, count: int = 8) -> None:
    """The first ``count`` images as rendered, and each with the boxes found and the reading."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("number-*"):
        stale.unlink()
    for k, (number, pred) in enumerate(zip(numbers[:count], preds, strict=False)):
        with Image.open(number.path) as im:
            shown = im.convert("RGB")
        shown.save(directory / f"number-{k}-{number.digits}{Path(number.path).suffix}")
        draw = ImageDraw.Draw(shown)
        for d in getattr(pred, "digits", ()):
            draw.rectangle((d.box[0], d.box[1], d.box[2] - 1, d.box[3] - 1), outline=(255, 0, 0))
            draw.text((d.box[0], max(0, d.box[1] - 12)), str(d.digit), fill=(255, 0, 0))
        reading = getattr(pred, "text", None) or pred.error
        draw.text((4, 4), f"true {number.digits}  read {reading}", fill=(255, 0, 0))
        shown.save(directory / f"number-{k}-{number.digits}-read.png")


def _pair(sep: str):  # noqa: ANN202 - an argparse type
    def parse(text: str) -> tuple[int, int]:
        a, b = text.split(sep)
        return int(a), int(b)

    return parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default="digit_model.pt", help="checkpoint (default digit_model.pt)")
    parser.add_argument("-n", "--count", type=int, default=500, help="how many numbers (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST data directory (default: mnistctl's)")
    parser.add_argument("--samples", type=Path, default=None, help="write 8 numbers and what was read in them here")
    parser.add_argument("--out", type=Path, default=None, help="keep all the rendered images in this directory")
    parser.add_argument("--workers", type=int, default=1, help="decoding threads (default 1)")
    parser.add_argument(
        "--touching", type=float, default=0.0, metavar="F",
        help="neighbours overlap by up to F of the narrower digit's width (#22's target: 0.35, 2-5 digits)",
    )  # fmt: skip
    parser.add_argument("--most", type=int, default=6, help="digits in the longest number (default 6)")
    parser.add_argument("--least", type=int, default=2, help="digits in the shortest number (default 2)")
    parser.add_argument(
        "--sizes", type=_pair(","), default=SIZES, metavar="LO,HI",
        help="the digit size range: the side of the 28×28 MNIST frame (its ink is up to 20/28 of it; default 28,130)",
    )  # fmt: skip
    parser.add_argument("--page", type=_pair("x"), default=None, metavar="WxH", help="on a page this big")
    parser.add_argument(
        "--line-model", default=None, metavar="PATH",
        help="the line network for digits that touch (default: the bundled one; 'none': cuts read by the model)",
    )  # fmt: skip
    args = parser.parse_args()
    if not Path(args.model).exists():
        sys.exit(f"no model at {args.model}: train one with `mnistctl train` or pass --model")

    import torch

    from mnistctl.data.mnist import default_data_dir, load_split
    from mnistctl.errors import MnistctlError

    line_model = {None: True, "none": False}.get(args.line_model, args.line_model)
    data_dir = args.data_dir or default_data_dir()
    try:
        images, labels = load_split(data_dir, "test")
    except MnistctlError as exc:
        sys.exit(f"{exc}\n(fetch MNIST with `mnistctl download --data-dir {data_dir}` or pass --data-dir)")
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {machine()}; Python {platform.python_version()}, "
        f"torch {torch.__version__}; {torch.get_num_threads()} torch threads\n"
    )
    with tempfile.TemporaryDirectory(prefix="mnistctl-numbers-") as tmp:
        directory = args.out or Path(tmp)
        start = time.perf_counter()
        shape = {"most": args.most, "least": args.least, "sizes": args.sizes, "page": args.page}
        numbers = write_numbers(images, labels, args.count, args.seed, directory, args.touching, **shape)
        render_s = time.perf_counter() - start
        preds, read_s = read_numbers(numbers, args.model, args.workers, line_model)
        if args.samples:
            write_samples(numbers, preds, args.samples)
    import mnistctl

    texts = [getattr(p, "text", None) for p in preds]
    exact = sum(t == n.digits for t, n in zip(texts, numbers, strict=True))
    misread = sum(t is not None and t != n.digits and "?" not in t for t, n in zip(texts, numbers, strict=True))
    split = [len(getattr(p, "digits", ())) == len(n.digits) for p, n in zip(preds, numbers, strict=True)]
    digits_total = sum(len(n.digits) for n in numbers)
    digits_right = sum(
        sum(a == b for a, b in zip(p.text, n.digits, strict=True))
        for p, n, ok in zip(preds, numbers, split, strict=True)
        if ok
    )
    overlaps = [
        overlap(d.box, box)
        for p, n, ok in zip(preds, numbers, split, strict=True)
        if ok
        for d, box in zip(p.digits, n.boxes, strict=True)
    ]
    placed = sum(o >= 0.5 for o in overlaps)
    failed = [(n.path, p) for p, n in zip(preds, numbers, strict=True) if isinstance(p, mnistctl.ReadFailure)]
    for path, p in failed[:3]:
        print(f"warning: {path}: {p.error}", file=sys.stderr)
    n = len(numbers)
    per_image = statistics.mean(len(x.digits) for x in numbers)
    print("| what | value |\n|---|---|")
    touch = f", touching by up to {args.touching:.0%}" if args.touching else ", never touching"
    page = f", on a {args.page[0]}x{args.page[1]} page" if args.page else ""
    size = f", digit frames {args.sizes[0]}-{args.sizes[1]} px"
    what = f"{args.least}-{args.most} digits, {per_image:.2f} on average{touch}{size}{page}"
    print(f"| numbers ({what}), seed {args.seed} | {n} |")
    print(f"| model | {args.model}, line network: {args.line_model or 'bundled'} |")
    print(f"| numbers read exactly | {exact / n:.2%} ({exact}/{n}) |")
    print(f"| numbers read wrong with no digit declined (no ?) | {misread / n:.2%} ({misread}/{n}) |")
    print(f"| numbers split into the right count of digits | {sum(split) / n:.2%} |")
    print(f"| per-digit accuracy | {digits_right / digits_total:.2%} ({digits_right}/{digits_total}) |")
    boxes = f"{placed / max(1, len(overlaps)):.2%} ({placed}/{len(overlaps)})"
    print(f"| digits' boxes on their ink (intersection over union ≥ 0.5) | {boxes} |")
    print(f"| files that failed | {len(failed)} |")
    print(f"| rendering | {render_s:.1f} s |")
    print(f"| reading (Reader.read_numbers, {args.workers} worker) | {read_s:.1f} s, {n / read_s:.0f} numbers/s |")
    ms = reading_ms(images, args.seed, args.model, args.touching, line_model=line_model)
    spread = f"median {statistics.median(ms):.1f} ms, {min(ms):.1f}-{max(ms):.1f} ms"
    print(
        f"| read_number, 1000x300 photos of 6 digits{touch}, beyond decoding (10 photos, best of 3 each) | {spread} |"
    )
    if args.samples:
        print(f"\nwrote 8 numbers and what was read in them to {args.samples}")


if __name__ == "__main__":
    main()
