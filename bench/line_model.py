"""Train the line network that reads numbers whose digits touch, calibrate it, and write it into the package.

    python bench/line_model.py                          # 400,000 strips, 4 epochs: about 35 min on 2 cores
    python bench/line_model.py --strips 20000 --epochs 1 -o /tmp/line.pt     # a quick try

The bundled file is two networks, each read on its own, and of their readings of a strip the likeliest
under both taken (mnistctl.line.decode_surest):

    python bench/line_model.py --strips 240000 --epochs 5 --apart 0.15 -o b.pt
    python bench/line_model.py --strips 500000 --epochs 4 --seed 1 -o d.pt     # about 40 min on 2 cores
    python bench/line_model.py --join b.pt d.pt              # → mnistctl/weights/line_model.pt

Strips are made from MNIST *training* digits only (the first 55,000; the last 5,000 make the strips the
confidence is calibrated and the network checked on): 1-6 digits written side by side as people write a
number fast, each a little bigger or smaller and off the line, neighbours running into each other by up to
40 % of the narrower one's width or up to --apart of it apart (the reader joins groups that near), some
written with a thinner or thicker pen or at a low resolution; one strip in twelve is drawn non-digits run
together (mnistctl.data.negatives), read as one "not a digit". Each strip is made as the number reader makes
one of a group of ink (mnistctl.imaging.segment.line_strip). The network (mnistctl.models.LineNet) learns
them with CTC; its confidence is calibrated by temperature scaling on the held-out strips. MNIST must be in
the data directory (`mnistctl download --mirror ../shared/mnist`).
"""

from __future__ import annotations

import argparse
import datetime
import math
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine
from PIL import Image
from scipy import ndimage

from mnistctl.data.mnist import load_split, resolve_data_dir
from mnistctl.data.negatives import negatives, run_together
from mnistctl.imaging.digit import bounding_box
from mnistctl.imaging.segment import FRAME, line_strip
from mnistctl.line import BLANK_CLASS, LINE_MODEL, NOT_A_DIGIT_CLASS, Member, decode, read_line_model, save_line_model
from mnistctl.metrics import expected_calibration_error
from mnistctl.models import LineNet

LENGTHS = (1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6)  # digits in a strip, drawn this often
RUN_INTO = 0.4  # neighbours overlap by up to this fraction of the narrower one's width (or stand --apart)
NEGATIVE_STRIPS = 1 / 12
HELD_OUT = 5000


def make_strips(
    digits: np.ndarray, labels: np.ndarray, count: int, seed: int, apart: float = 0.3
) -> tuple[list[np.ndarray], list[list[int]]]:
    rng = random.Random(seed)
    drawn = negatives(max(64, round(count * NEGATIVE_STRIPS * 2)), seed)
    strips, targets = [], []
    while len(strips) < count:
        if rng.random() < NEGATIVE_STRIPS:
            chosen = [drawn[rng.randrange(len(drawn))] for _ in range(rng.randint(1, 3))]
            target = [NOT_A_DIGIT_CLASS]
        else:
            picks = [rng.randrange(len(digits)) for _ in range(rng.choice(LENGTHS))]
            chosen = [digits[k] for k in picks]
            target = [int(labels[k]) for k in picks]
        canvas = _write(chosen, rng, apart)
        box = bounding_box(canvas)
        if box is None:
            continue
        canvas = canvas[box[1] : box[3], box[0] : box[2]]
        strip, _ = line_strip(canvas)
        strips.append(strip)
        targets.append(target)
    return strips, targets


def _write(chosen: list[np.ndarray], rng: random.Random, apart: float) -> np.ndarray:
    """The digits (or drawings) side by side, as a number written fast (white on black), with a pen and a
    resolution of their own."""
    canvas, _ = run_together(chosen, rng, (-apart, RUN_INTO))
    pen = rng.random()
    if pen < 0.15:
        canvas = ndimage.grey_dilation(canvas, size=rng.choice((3, 5, 7)))
    elif pen < 0.25:
        canvas = ndimage.grey_erosion(canvas, size=3)
    if rng.random() < 0.3:  # a low resolution: the strip is made from a small copy
        h = rng.randint(10, 24)
        w = max(1, round(canvas.shape[1] * h / canvas.shape[0]))
        canvas = np.asarray(Image.fromarray(canvas).resize((w, h), Image.Resampling.BOX))
    return canvas


def batches(strips, targets, size: int, rng: random.Random, shuffle: bool = True):
    """Batches of strips of about the same width (less padding), padded with black to the widest."""
    order = list(range(len(strips)))
    if shuffle:
        rng.shuffle(order)
    for start in range(0, len(order), size * 32):
        chunk = sorted(order[start : start + size * 32], key=lambda k: strips[k].shape[1])
        groups = [chunk[i : i + size] for i in range(0, len(chunk), size)]
        if shuffle:
            rng.shuffle(groups)
        for group in groups:
            width = max(strips[k].shape[1] for k in group)
            x = np.zeros((len(group), 1, 28, width), np.uint8)
            for i, k in enumerate(group):
                x[i, 0, :, : strips[k].shape[1]] = strips[k]
            lengths = [strips[k].shape[1] // FRAME for k in group]
            yield group, torch.from_numpy(x), lengths


def inputs(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


def evaluate(net, strips, targets, temperature: float = 1.0):
    """Exact reads, and (confidence, right) for each symbol of the strips read with the right count."""
    net.eval()
    exact = 0
    symbols = []
    with torch.inference_mode():
        for group, x, lengths in batches(strips, targets, 256, random.Random(0), shuffle=False):
            scores = net(inputs(x))
            for i, k in enumerate(group):
                read = decode(scores[i, :, : lengths[i]], temperature)
                digits = [max(range(11), key=p.__getitem__) for p, _ in read]
                exact += digits == targets[k]
                if len(digits) == len(targets[k]):
                    symbols += [(max(p), d == t) for (p, _), d, t in zip(read, digits, targets[k], strict=True)]
    return exact / len(strips), symbols


def fit_temperature(net, strips, targets) -> float:
    """The temperature that makes the held-out symbols' confidence mean what it says (least negative log
    likelihood of right and wrong, over a grid)."""
    best = (math.inf, 1.0)
    for t in np.arange(0.5, 3.01, 0.1):
        _, symbols = evaluate(net, strips, targets, float(t))
        nll = -sum(math.log(max(1e-9, c if ok else 1 - c)) for c, ok in symbols) / max(1, len(symbols))
        best = min(best, (nll, float(t)))
    return round(best[1], 2)


def ece(symbols) -> float:
    """The expected calibration error of the symbols' (confidence, right) pairs."""
    confidence, right = zip(*symbols, strict=True) if symbols else ((), ())
    return expected_calibration_error(torch.tensor(confidence), torch.tensor(right))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strips", type=int, default=400_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--apart", type=float, default=0.3, help="neighbours stand up to this far apart (0.3)")
    parser.add_argument("-o", "--output", type=Path, default=LINE_MODEL)
    parser.add_argument("--join", type=Path, nargs="+", metavar="FILE", help="write these files' networks as one")
    args = parser.parse_args()
    if args.join:  # several networks, read side by side (mnistctl.models.LineEnsemble, line.decode_surest)
        members = [m for path in args.join for m in read_line_model(path)]
        save_line_model(members, args.output)
        print(f"wrote {args.output}: {len(members)} networks, {args.output.stat().st_size / 1024:.0f} KiB")
        return
    torch.manual_seed(args.seed)
    images, labels = load_split(resolve_data_dir(args.data_dir, create=False), "train")
    images, labels = images.numpy(), labels.numpy()
    started = time.perf_counter()
    strips, targets = make_strips(images[:-HELD_OUT], labels[:-HELD_OUT], args.strips, args.seed, args.apart)
    held, held_targets = make_strips(images[-HELD_OUT:], labels[-HELD_OUT:], 5000, args.seed + 1, args.apart)
    print(f"{len(strips)} strips made in {time.perf_counter() - started:.0f} s", flush=True)
    net = LineNet()
    steps = args.epochs * math.ceil(len(strips) / args.batch)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.15)
    ctc = torch.nn.CTCLoss(blank=BLANK_CLASS, zero_infinity=True)
    rng = random.Random(args.seed)
    for epoch in range(args.epochs):
        net.train()
        began, total, n = time.perf_counter(), 0.0, 0
        for group, x, lengths in batches(strips, targets, args.batch, rng):
            scores = net(inputs(x))  # N×C×T
            log_probs = scores.permute(2, 0, 1).log_softmax(2)
            flat = torch.tensor([c for k in group for c in targets[k]])
            loss = ctc(log_probs, flat, torch.tensor(lengths), torch.tensor([len(targets[k]) for k in group]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(group)
            n += len(group)
        exact, _ = evaluate(net, held, held_targets)
        print(f"epoch {epoch + 1}: loss {total / n:.4f}, held-out strips read exactly {exact:.2%}, "
              f"{time.perf_counter() - began:.0f} s", flush=True)  # fmt: skip
    temperature = fit_temperature(net, held, held_targets)
    exact, symbols = evaluate(net, held, held_targets, temperature)
    print(f"temperature {temperature}: held-out exact {exact:.2%}, symbol ECE {ece(symbols):.2%}")
    command = shlex.join(["python", "bench/line_model.py", *sys.argv[1:]])
    made = {"command": command, "machine": machine(), "date": datetime.date.today().isoformat(),
            "held_out_exact": round(exact, 4), "seconds": round(time.perf_counter() - started)}  # fmt: skip
    save_line_model([Member(net.eval(), temperature, made)], args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
