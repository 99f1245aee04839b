"""Accuracy on digits that look like users' files, with and without `predict`'s preprocessing.

    python bench/photos.py --model digit_model.pt --mirror ../shared/mnist
    python bench/photos.py --model a.pt --model b.pt -n 2000 --samples docs/samples    # README pictures too

Renders MNIST *test* digits the way people's images look — dark ink (black or blue pen, pencil gray) on light,
slightly uneven and noisy paper; a canvas 2–10× the digit's size with the digit off-centre; thicker or thinner
strokes; a slight rotation (±10°); saved as RGB JPEG (quality 60–95) or as PNG with a transparent background
and dark strokes — a seeded random mix. Then runs every --model on them through `Reader.read_digits` with
preprocessing on and off (`--no-preprocess`: only resized to 28×28, polarity still decided from the border),
and prints a markdown table (with a row that leaves the stroke width as drawn, to show what normalising it
brings); a reference row gives each model's accuracy on the same digits as clean 28×28
MNIST tensors. --out DIR keeps the images; --samples DIR writes a few of them and a contact sheet (each image
beside the 28×28 the network saw, scaled up).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import load_test_digits
from PIL import Image, ImageChops, ImageDraw, ImageFilter

# --------------------------------------------------------------------------------------------- rendering


@dataclass
class Rendered:
    image: Image.Image
    suffix: str  # ".jpg" or ".png"
    save_args: dict
    stroke: str  # "thick", "normal" or "thin"


def draw_paper(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Light gray paper: a base level, a gentle gradient in a random direction, and a little grain."""
    base = rng.randint(175, 245)
    amplitude = rng.randint(0, 12)
    gradient = Image.linear_gradient("L").rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR)
    gradient = gradient.crop((64, 64, 192, 192)).resize(size, Image.Resampling.BILINEAR)
    lo = base - amplitude
    paper = gradient.point([max(0, min(255, lo + v * 2 * amplitude // 255)) for v in range(256)])
    # Grain from the seeded generator (Image.effect_noise draws from C's rand(): not reproducible).
    spread = rng.uniform(2.0, 10.0)
    grain = Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))
    grain = grain.point([round(128 + (v - 128) * spread / 128) for v in range(256)])  # uniform, ±spread
    return ImageChops.add(paper, grain, 1.0, -128)


def render(pixels: bytes, rng: random.Random) -> Rendered:
    """One MNIST digit (28×28 bytes, white on black) drawn as a user's photo or scan of it."""
    digit = Image.frombytes("L", (28, 28), pixels)
    side = rng.randint(28, 110)
    digit = digit.resize((side, side), Image.Resampling.BICUBIC)
    stroke = rng.choice(("thick", "normal", "normal", "thin"))
    if stroke == "thick":
        digit = digit.filter(ImageFilter.MaxFilter(3 if side < 60 else 5))
    elif stroke == "thin":
        if side < 50:  # a 3x3 erosion would wipe out a small digit: draw it bigger instead
            digit = digit.resize((50, 50), Image.Resampling.BICUBIC)
            side = 50
        digit = digit.filter(ImageFilter.MinFilter(3))
    digit = digit.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0)

    # A canvas 2-10x the digit (log-uniform: small canvases are commoner), the digit anywhere on it.
    factor_w, factor_h = (2 ** rng.uniform(1, 3.32) for _ in range(2))
    size = (max(digit.width + 2, int(side * factor_w)), max(digit.height + 2, int(side * factor_h)))
    mask = Image.new("L", size, 0)
    mask.paste(digit, (rng.randint(0, size[0] - digit.width), rng.randint(0, size[1] - digit.height)))

    level = rng.choice((rng.randint(0, 40), rng.randint(40, 110)))  # pen or pencil
    blue = rng.random() < 0.3
    ink = (level, level, min(255, level + rng.randint(40, 120))) if blue else (level, level, level)

    if rng.random() < 0.7:  # a photo or scan: RGB JPEG on paper
        paper = draw_paper(size, rng)
        tint = rng.randint(0, 8)
        paper_rgb = Image.merge(
            "RGB", (paper.point(lambda v: min(255, v + tint)), paper, paper.point(lambda v: v - tint))
        )
        page = Image.composite(Image.new("RGB", size, ink), paper_rgb, mask)
        return Rendered(page, ".jpg", {"quality": rng.randint(60, 95)}, stroke)
    # Drawn in an app: dark strokes on a transparent background (transparent black or transparent white).
    hidden = (0, 0, 0) if rng.random() < 0.5 else (255, 255, 255)
    page = Image.new("RGBA", size, (*hidden, 0))
    page.paste(Image.new("RGBA", size, (*ink, 255)), (0, 0), mask)
    return Rendered(page, ".png", {}, stroke)


def write_photos(images, count: int, seed: int, directory: Path) -> tuple[list[str], list[str]]:
    """Render and save ``count`` digits; return their paths and a style for each ("thick stroke, JPEG" ...)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths, styles = [], []
    for i, pixels in enumerate(images[:count].numpy()):
        rng = random.Random(seed * 1_000_003 + i)  # image i is the same whatever --count is
        r = render(pixels.tobytes(), rng)
        path = directory / f"{i:05d}{r.suffix}"
        r.image.save(path, **r.save_args)
        paths.append(str(path))
        styles.append(f"{r.stroke} stroke, {'JPEG on paper' if r.suffix == '.jpg' else 'PNG with alpha'}")
    return paths, styles


# --------------------------------------------------------------------------------------------- measuring


@dataclass
class Row:
    model: str
    arch: str
    preprocessing: str
    accuracy: float
    count: int
    seconds: float
    by_style: dict[str, tuple[int, int]] | None = None  # style part → (right, total)


def evaluate(
    paths: list[str], styles: list[str], labels, model_path: str, args: argparse.Namespace, images
) -> list[Row]:
    import mnistctl

    reader = mnistctl.load_reader(model_path, device="cpu", precision=args.precision)  # as the CLI runs it
    arch = reader.meta.arch
    rows = []
    n = len(paths)
    start = time.perf_counter()
    clean = list(reader.read_digits(list(images[:n].numpy()), workers=args.workers))  # 28×28 MNIST: used as it is
    accuracy = sum(r.digit == int(label) for r, label in zip(clean, labels[:n], strict=True)) / n
    rows.append(Row(model_path, arch, "— (clean 28x28 MNIST)", accuracy, n, time.perf_counter() - start))
    modes = (("on", True, True), ("on, stroke width left as drawn", True, False), ("off", False, True))
    for label, on, strokes in modes:
        start = time.perf_counter()
        results = list(reader.read_digits(paths, workers=args.workers, preprocess=on, normalise_strokes=strokes))
        seconds = time.perf_counter() - start
        failed = [(path, r) for path, r in zip(paths, results, strict=True) if isinstance(r, mnistctl.ReadFailure)]
        for path, r in failed[:3]:
            print(f"warning: {path}: {r.error}", file=sys.stderr)
        hits = [getattr(r, "digit", None) == int(lab) for r, lab in zip(results, labels[:n], strict=True)]
        by_style: dict[str, tuple[int, int]] = {}
        for hit, style in zip(hits, styles, strict=True):
            for part in style.split(", "):
                right, total = by_style.get(part, (0, 0))
                by_style[part] = (right + hit, total + 1)
        rows.append(Row(model_path, arch, label, sum(hits) / n, n, seconds, by_style))
    return rows


def contact_sheet(paths: list[str], labels, model_path: str, out: Path, per_row: int = 4) -> Path:
    """Each sample image beside the 28×28 the network saw (×4), with the label and the prediction."""
    import mnistctl

    preds = list(mnistctl.load_reader(model_path, device="cpu").read_digits(paths, workers=0))
    cell, pad, caption = 112, 8, 16
    pair_w = 2 * cell + pad
    rows = -(-len(paths) // per_row)
    sheet = Image.new("RGB", (per_row * (pair_w + 2 * pad), rows * (cell + caption + 2 * pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (path, pred) in enumerate(zip(paths, preds, strict=True)):
        x = (k % per_row) * (pair_w + 2 * pad) + pad
        y = (k // per_row) * (cell + caption + 2 * pad) + pad
        with Image.open(path) as im:
            shown = im.convert("RGBA")
        backdrop = Image.new("RGBA", shown.size, (255, 255, 255, 255))
        shown = Image.alpha_composite(backdrop, shown).convert("RGB")
        shown.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        sheet.paste(shown, (x + (cell - shown.width) // 2, y + (cell - shown.height) // 2))
        label = int(labels[k])
        if isinstance(pred, mnistctl.ReadFailure):
            draw.text((x, y + cell + 2), pred.error, fill=(200, 0, 0))
            continue
        seen = Image.fromarray(pred.pixels)
        sheet.paste(seen.resize((cell, cell), Image.Resampling.NEAREST).convert("RGB"), (x + cell + pad, y))
        text = f"true {label}  read {pred.digit} ({pred.confidence:.0%})"
        draw.text((x, y + cell + 2), text, fill=(0, 0, 0) if pred.digit == label else (200, 0, 0))
    target = out / "contact-sheet.png"
    sheet.save(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--count", type=int, default=2000, help="how many test digits (default 2,000)")
    parser.add_argument(
        "-m", "--model", action="append", help="checkpoint; repeat for several (default digit_model.pt)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST data directory (default: mnistctl's)")
    parser.add_argument("--mirror", default=os.environ.get("MNISTCTL_MIRROR", "../shared/mnist"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the rendered images in this directory")
    parser.add_argument("--samples", type=Path, default=None, help="write ~8 examples and a contact sheet here")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--precision", choices=("fp32", "bf16"), help="default: the CPU's, as `mnistctl predict`")
    args = parser.parse_args()
    models = args.model or ["digit_model.pt"]
    for m in models:
        if not Path(m).exists():
            sys.exit(f"no model at {m}: train one with `mnistctl train` or pass --model")

    import torch

    from mnistctl.data.mnist import default_data_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    images, labels = load_test_digits(args.data_dir or default_data_dir(), args.mirror, args.count)
    with tempfile.TemporaryDirectory(prefix="mnistctl-photos-") as tmp:
        directory = args.out or Path(tmp)
        start = time.perf_counter()
        paths, styles = write_photos(images, len(images), args.seed, directory)
        print(
            f"rendered {len(paths)} images into {directory} in {time.perf_counter() - start:.1f} s (seed {args.seed})\n"
        )
        rows = [row for m in models for row in evaluate(paths, styles, labels, m, args, images)]
        print("| model | arch | preprocessing | accuracy | N | s |\n|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r.model} | {r.arch} | {r.preprocessing} | {r.accuracy:.2%} | {r.count} | {r.seconds:.1f} |")
        # Where the errors are, by stroke width and by file type.
        parts = sorted({part for style in styles for part in style.split(", ")})
        print("\nAccuracy by rendering (stroke width; file type):\n")
        print("| model | preprocessing | " + " | ".join(parts) + " |\n|---|---|" + "---|" * len(parts))
        for r in rows:
            if r.by_style:
                cells = [f"{r.by_style[p][0] / r.by_style[p][1]:.1%} (n={r.by_style[p][1]})" for p in parts]
                print(f"| {r.model} | {r.preprocessing} | " + " | ".join(cells) + " |")
        if args.samples:
            args.samples.mkdir(parents=True, exist_ok=True)
            for stale in args.samples.glob("sample-*"):  # from an earlier run with other settings
                stale.unlink()
            picked = []
            for i, p in enumerate(paths[:8]):
                target = args.samples / f"sample-{i}-digit{int(labels[i])}{Path(p).suffix}"
                target.write_bytes(Path(p).read_bytes())
                picked.append(str(target))
            sheet = contact_sheet(picked, labels, models[0], args.samples)
            print(f"\nwrote {len(picked)} samples and {sheet}")


if __name__ == "__main__":
    main()
