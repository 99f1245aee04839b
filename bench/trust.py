"""Does the reader decline what is not a digit, answer what is, and mean its confidence? (#22)

    python bench/trust.py --mirror ../shared/mnist                          # the bundled model, default options
    python bench/trust.py --model run.pt --min-confidence 0.5,0.7,0.9       # other models, other bars
    python bench/trust.py --calibrate                                       # fit the bundled model's temperature

Four sets, each read through `Reader.read_digits` from files (as `mnistctl predict` reads them):
- **Non-digits**: letters, symbols, little drawings, scribbles, grids and textures (mnistctl.data.negatives'
  drawings, from seeds training never uses, with the letters in the TrueType fonts this machine has — DejaVu,
  Liberation — where training draws them in Pillow's own), drawn as photos: dark ink on uneven paper, JPEG,
  on a canvas 1.5–6× their size. Target: ≥ 95 % declined.
- **Photos of digits**: bench/photos.py's renderings of the first 2,000 MNIST test digits (dark ink, JPEG,
  alpha, thin and thick pens). Targets: ≥ 99 % answered, ≥ 99.5 % of answers right, calibration error ≤ 2 %.
- **Other writers**: scikit-learn's 1,797 8×8 digits (UCI), scaled up to 64×64, if scikit-learn is installed.
  Targets: ≥ 90 % answered, ≥ 98.5 % of answers right.
- **MNIST test set**: the 10,000 test digits as 28×28 PNGs. Targets: ≥ 99.6 % right with --always-answer,
  ≥ 99.5 % answered by default.

For photos and scikit-learn's digits it also prints the most of the answers any --min-confidence could make
right while answering as many as the target asks (99 %, 90 %): whether the confidence ranks the errors last.

--calibrate fits the temperature (metrics/"temperature" in the checkpoint) on a set kept apart from all four:
photos of the *last* 5,000 MNIST test digits and non-digits from other seeds, then rewrites the model file.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import itertools
import math
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import load_test_digits, machine
from photos import draw_paper, write_photos
from PIL import Image
from predict import write_pngs

import mnistctl
from mnistctl.data.negatives import draw_negative

SEEDS = {"bench": 7_000_001, "calibrate": 8_000_001}  # training draws its non-digits from the run's --seed


def system_fonts() -> list[str]:
    return sorted(
        glob.glob("/usr/share/fonts/truetype/dejavu/*.ttf") + glob.glob("/usr/share/fonts/truetype/liberation/*.ttf")
    )


def write_non_digits(count: int, seed: int, directory: Path) -> list[tuple[str, str]]:
    """``count`` photos of things that are not digits; (path, kind) each."""
    directory.mkdir(parents=True, exist_ok=True)
    fonts = system_fonts()
    out = []
    for i in range(count):
        rng = random.Random(seed + i)
        drawing, kind = draw_negative(rng, fonts if fonts and rng.random() < 0.7 else ())
        side = rng.randint(40, 160)
        ink = drawing.resize((side, side), Image.Resampling.BICUBIC).point(lambda v: 255 - v)  # ink as a mask
        size = tuple(int(side * rng.uniform(1.5, 6)) for _ in range(2))
        mask = Image.new("L", size, 0)
        mask.paste(ink, (rng.randint(0, size[0] - side), rng.randint(0, size[1] - side)))
        level = rng.randint(0, 90)
        page = Image.composite(Image.new("L", size, level), draw_paper(size, rng), mask)
        path = directory / f"{i:05d}.jpg"
        page.convert("RGB").save(path, quality=rng.randint(60, 95))
        out.append((str(path), kind))
    return out


def write_sklearn_digits(directory: Path) -> tuple[list[str], list[int]] | None:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    paths = []
    for i, image in enumerate(digits.images):  # 0-16, ink high: drawn dark on white, as a scan would be
        pixels = (255 - image * 255 / 16).astype(np.uint8)
        path = directory / f"{i:05d}.png"
        Image.fromarray(pixels).resize((64, 64), Image.Resampling.BICUBIC).save(path)
        paths.append(str(path))
    return paths, digits.target.tolist()


def read(reader: mnistctl.Reader, paths: list[str], **options) -> list[mnistctl.DigitReading]:
    readings = list(reader.read_digits(paths, **options))
    failed = [r for r in readings if isinstance(r, mnistctl.ReadFailure)]
    if failed:  # an image the reader refuses outright ("blank image") is declined too: count it so
        print(f"  ({len(failed)} of {len(paths)} refused: {failed[0].error})", file=sys.stderr)
    return readings


def answered(readings) -> list:
    return [r for r in readings if isinstance(r, mnistctl.DigitReading) and r.digit is not None]


def ece(readings, labels) -> float:
    import torch

    from mnistctl.metrics import expected_calibration_error

    pairs = [(r.confidence, r.digit == y) for r, y in zip(readings, labels, strict=True) if r.digit is not None]
    confidence, correct = (torch.tensor(v, dtype=torch.float64) for v in zip(*pairs, strict=True))
    return expected_calibration_error(confidence, correct)


def digit_rows(name: str, readings, labels) -> str:
    given = [(r, y) for r, y in zip(readings, labels, strict=True) if getattr(r, "digit", None) is not None]
    right = sum(r.digit == y for r, y in given)
    share = len(given) / len(labels)
    accuracy = right / max(1, len(given))
    error = ece(readings, labels)
    return f"| {name} | {len(labels):,} | {share:.2%} answered | {accuracy:.2%} of answers right | ECE {error:.2%} |"


def best_bar(name: str, always, labels, share: float) -> str:
    """The most any ``--min-confidence`` can make right of the answers where it answers at least ``share`` of the
    images: a bar answers the inputs the model takes for a digit whose confidence reaches it, so each bar is a
    number of those, surest first. ``always``: the readings with always_answer, so each has its confidence."""
    taken = sorted(
        ((r.confidence, r.digit == y) for r, y in zip(always, labels, strict=True)
         if isinstance(r, mnistctl.DigitReading) and not (r.not_a_digit or 0.0) > r.confidence),
        key=lambda pair: -pair[0],
    )  # fmt: skip
    need = math.ceil(share * len(labels))
    if len(taken) < need:
        taken_share = len(taken) / len(labels)
        return f"| {name}, the best bar | no bar answers {share * 100:g} %: {taken_share:.2%} taken for digits |"
    right = list(itertools.accumulate(ok for _, ok in taken))
    best = max(range(need, len(taken) + 1), key=lambda k: right[k - 1] / k)
    bar = taken[best - 1][0]
    return (
        f"| {name}, the best bar answering ≥ {share * 100:g} % | {bar:.3f}: {best / len(labels):.2%} answered |"
        f" {right[best - 1] / best:.2%} of answers right |"
    )


def calibrate(model: str, data_dir: Path, mirror: str | None, tmp: Path) -> None:
    import torch

    from mnistctl.checkpoint import load_checkpoint, save_checkpoint
    from mnistctl.data.mnist import load_split, normalise
    from mnistctl.imaging import digit_input
    from mnistctl.metrics import fit_temperature

    load_test_digits(data_dir, mirror, 1)  # downloads when missing
    images, labels = load_split(data_dir, "test")
    photos, _ = write_photos(images[5000:], 5000, seed=SEEDS["calibrate"], directory=tmp / "cal-photos")
    negatives = write_non_digits(2000, SEEDS["calibrate"], tmp / "cal-non-digits")
    inputs = [digit_input(p) for p in photos] + [digit_input(p) for p, _ in negatives]
    targets = labels[5000:].tolist() + [10] * len(negatives)
    checkpoint = load_checkpoint(model)
    reader = mnistctl.load_reader(model, device="cpu", second_model=False)  # this network alone
    x = normalise(
        torch.from_numpy(np.stack(inputs)), reader.meta.normalization["mean"], reader.meta.normalization["std"]
    )
    with torch.inference_mode():
        logits = reader.network(x).float()
    if logits.shape[1] == 10:  # a model without "not a digit": calibrated on the digits alone
        logits, targets = logits[: len(photos)], targets[: len(photos)]
    temperature = fit_temperature(logits, torch.tensor(targets))
    metrics = {**checkpoint.metrics, "temperature": round(temperature, 4)}
    save_checkpoint(model, dataclasses.replace(checkpoint, metrics=metrics))
    print(f"{model}: temperature {temperature:.4f} (fitted on {len(inputs):,} held-out images)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="a checkpoint (default: the bundled model); repeatable")
    parser.add_argument("--min-confidence", default=None, help="comma-separated bars to try (default: the default)")
    parser.add_argument("--non-digits", type=int, default=2000)
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--mirror")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "mnistctl-bench-data")
    parser.add_argument("--calibrate", action="store_true", help="fit the temperature of --model and save it")
    args = parser.parse_args()
    from mnistctl.checkpoint import bundled_model_path

    models = args.model or [str(bundled_model_path())]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.calibrate:
            for model in models:
                calibrate(model, args.data_dir, args.mirror, tmp)
            return
        images, labels = load_test_digits(args.data_dir, args.mirror, 10_000)
        non_digits = write_non_digits(args.non_digits, SEEDS["bench"], tmp / "non-digits")
        photos, _ = write_photos(images, args.photos, seed=0, directory=tmp / "photos")
        (tmp / "mnist").mkdir()
        mnist = write_pngs(images, tmp / "mnist")
        sklearn = write_sklearn_digits(tmp / "sklearn")
        print(f"# bench/trust.py on {machine()}")
        for model in models:
            reader = mnistctl.load_reader(model, device="cpu")
            bars = [float(b) for b in args.min_confidence.split(",")] if args.min_confidence else [None]
            for bar in bars:
                options = {} if bar is None else {"min_confidence": bar}
                second = f", asking {reader.meta.second_model}" if reader.meta.second_model else ""
                print(f"\n## {model} ({len(reader.meta.classes)} classes, temperature {reader.meta.temperature:g}"
                      f"{second}), min_confidence {bar if bar is not None else 'default'}\n")  # fmt: skip
                readings = read(reader, [p for p, _ in non_digits], **options)
                kinds: dict[str, list[int]] = {}
                for r, (_, kind) in zip(readings, non_digits, strict=True):
                    declined = not isinstance(r, mnistctl.DigitReading) or r.digit is None
                    kinds.setdefault(kind, [0, 0])[0] += declined
                    kinds[kind][1] += 1
                total = sum(d for d, _ in kinds.values())
                by_kind = ", ".join(f"{k} {d / n:.1%}" for k, (d, n) in sorted(kinds.items()))
                print(f"| non-digits | {len(readings):,} | {total / len(readings):.2%} declined | {by_kind} |")
                print(digit_rows("photos of digits", read(reader, photos, **options), labels[: len(photos)].tolist()))
                if sklearn is not None:
                    print(digit_rows("scikit-learn 8×8 digits", read(reader, sklearn[0], **options), sklearn[1]))
                mnist_readings = read(reader, mnist, **options)
                print(digit_rows("MNIST test", mnist_readings, labels.tolist()))
            print(
                best_bar(
                    "photos of digits", read(reader, photos, always_answer=True), labels[: len(photos)].tolist(), 0.99
                )
            )
            if sklearn is not None:
                print(
                    best_bar("scikit-learn 8×8 digits", read(reader, sklearn[0], always_answer=True), sklearn[1], 0.90)
                )
            always = read(reader, mnist, always_answer=True)
            right = sum(r.digit == y for r, y in zip(always, labels.tolist(), strict=True))
            print(f"| MNIST test, --always-answer | {len(always):,} | {right / len(always):.2%} right |")


if __name__ == "__main__":
    main()
