"""Things that are not digits, drawn procedurally, for training a reader that can say so: letters and symbols,
little drawings (stars, hearts, arrows, faces), scribbles and textures — each drawn dark on light, as a user's
image would be, and put through the reader's own preprocessing, so the network learns on what it will see.

Nothing here comes from MNIST. Shapes a digit could be (a lone stroke, a plain ring, the letters O, I, l, S,
Z, B, g, q ...) are left out: a reader must not learn to decline those.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnistctl.imaging import ImageError
from mnistctl.imaging.digit import preprocess

CANVAS = 112  # the side each one is drawn at, before preprocessing brings it to 28×28

# Letters that look like no digit (not O o Q D I i l j J L S s Z z B b g q G T t y), and symbols people write.
LETTERS = "ACEFHKMNPRUVWXYacdefhkmnpruvwx"
SYMBOLS = "+=#@&?%*<>~^{}€£©®πΩ∞≈≠÷×"  # not $ § ¶ √: too like an 8, a 5 or a 1


def negatives(count: int, seed: int, fonts: Sequence[str] = ()) -> np.ndarray:
    """``count`` 28×28 uint8 inputs (white on black, as the reader's preprocessing makes them) of things that
    are not digits, reproducible from ``seed``. ``fonts``: TrueType files to draw letters in (default: the
    font Pillow ships)."""
    rng = random.Random(seed)
    out = np.empty((count, 28, 28), np.uint8)
    made = 0
    while made < count:
        image, _ = draw_negative(rng, fonts)
        try:
            out[made] = preprocess(np.asarray(image), "yes")
        except ImageError:  # drawn too faint or too small: draw another
            continue
        made += 1
    return out


def fragments(digits: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` 28×28 inputs that are pieces of a number but not one digit, made from ``digits`` (N×28×28 uint8,
    white on black: training digits): two digits run together, touching or overlapping by up to 35 % of the
    narrower one. What a missed cut gives the number reader, which must see that no one digit is there. (Not
    parts of one digit: too many of them look like a digit — half a 0 is a 1, half a 4 a 1, the top of a 9 a
    0 — and the reader would learn to decline those.)"""
    rng = random.Random(seed)
    out = np.empty((count, 28, 28), np.uint8)
    made = 0
    while made < count:
        first, second = (_ink(digits[rng.randrange(len(digits))]) for _ in range(2))
        overlap = round(min(first.shape[1], second.shape[1]) * rng.uniform(0.0, 0.35))
        height = max(first.shape[0], second.shape[0])
        canvas = np.zeros((height, first.shape[1] + second.shape[1] - overlap), np.uint8)
        canvas[height - first.shape[0] :, : first.shape[1]] = first
        right = canvas[height - second.shape[0] :, first.shape[1] - overlap :]
        np.maximum(right, second, out=right)
        try:
            out[made] = preprocess(np.pad(canvas, 8), "no")
        except ImageError:
            continue
        made += 1
    return out


CROWDING = 0.35  # neighbours in a number written fast run into each other by up to this much of the narrower
ONE_DIGIT = 0.85  # a piece holding this much of a digit's width ...
SLIVER = 0.4  # ... and no more than this much of any other's is that digit
TWO_DIGITS = 0.5  # one holding this much of two digits is not a digit
PIECES_PER_NUMBER = 4  # at most this many pieces of each number rendered, for variety
BARREN = 4  # numbers that gave no piece at all, after which the digits are taken for no digits


def cut_pieces(
    digits: np.ndarray, labels: np.ndarray, count: int, seed: int, not_a_digit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` 28×28 inputs as the number reader cuts them out of numbers written fast, and their labels
    (fewer only if twice ``count`` numbers do not give them, none if the first BARREN give none: digits that
    are no digits, in a test).

    Numbers of two to four training digits (``digits``: N×28×28 uint8, white on black; ``labels``: theirs),
    neighbours touching or running into each other by up to CROWDING of the narrower one's width, are cut by
    the reader's own segmentation (:func:`~mnistctl.imaging.segment.segment_choices`: every plausible cut).
    A piece that holds ONE_DIGIT of a digit's width and at most a SLIVER of any other is labelled with that
    digit; one that holds TWO_DIGITS of two of them is ``not_a_digit``; the rest are left out — parts of one
    digit too (half a 0 is a 1, and so is the stem of a 4: measured, a reader trained to decline them declines
    low-resolution digits, and reads numbers no better). Half are digits, half not: what the reader must tell
    apart to choose its cuts."""
    from mnistctl.imaging.segment import segment_choices

    rng = random.Random(seed)
    out, out_labels = np.empty((count, 28, 28), np.uint8), np.empty(count, np.int64)
    wanted = {True: count // 2, False: count - count // 2}  # digits, not digits
    made = 0
    for tried in range(2 * count):  # numbers: each gives up to PIECES_PER_NUMBER (bounded, whatever the digits are)
        if made == count or (tried == BARREN and made == 0):
            break  # done, or these are not digits that run together into numbers (a test's bars)
        picks = [rng.randrange(len(digits)) for _ in range(rng.randint(2, 4))]
        canvas, extents = run_together([digits[k] for k in picks], rng)
        try:
            groups = segment_choices(np.pad(canvas, 16), "no")
        except ImageError:
            continue
        pieces = [d for group in groups for d in group.digits]
        for piece in rng.sample(pieces, min(len(pieces), PIECES_PER_NUMBER)):
            x0, x1 = piece.box[0] - 16, piece.box[2] - 16
            held = [max(0, min(x1, b) - max(x0, a)) / (b - a) for a, b in extents]
            most = max(range(len(held)), key=held.__getitem__)
            second = max((h for k, h in enumerate(held) if k != most), default=0.0)
            if held[most] >= ONE_DIGIT and second <= SLIVER:
                is_digit = True
            elif second >= TWO_DIGITS:
                is_digit = False
            else:
                continue
            if wanted[is_digit] and made < count:
                out[made] = piece.pixels
                out_labels[made] = labels[picks[most]] if is_digit else not_a_digit
                wanted[is_digit] -= 1
                made += 1
    return out[:made], out_labels[:made]


def run_together(
    chosen: Sequence[np.ndarray], rng: random.Random, run_into: tuple[float, float] = (0.0, CROWDING)
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Digits (28×28, white on black) written side by side, each running into the last by a fraction of the
    narrower one's width drawn from ``run_into`` (below 0: a gap), each a little bigger or smaller and off the
    line: the canvas (white on black) and each digit's columns."""
    inks = []
    for digit in chosen:
        ink = _ink(digit)
        scale = rng.uniform(0.85, 1.15)
        size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
        inks.append(np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.BILINEAR)))
    xs = [0]
    for left, right in zip(inks, inks[1:], strict=False):
        overlap = round(min(left.shape[1], right.shape[1]) * rng.uniform(*run_into))
        xs.append(xs[-1] + left.shape[1] - overlap)
    height = max(ink.shape[0] for ink in inks)
    jitter = height // 8
    canvas = np.zeros((height + 2 * jitter, xs[-1] + inks[-1].shape[1]), np.uint8)
    for x, ink in zip(xs, inks, strict=True):
        y = height + rng.randint(0, 2 * jitter) - ink.shape[0]
        region = canvas[y : y + ink.shape[0], x : x + ink.shape[1]]
        np.maximum(region, ink, out=region)  # where they overlap, the stronger ink
    return canvas, [(x, x + ink.shape[1]) for x, ink in zip(xs, inks, strict=True)]


def _ink(digit: np.ndarray) -> np.ndarray:
    """One 28×28 digit at 4× its size, cropped to its ink."""
    big = np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC))
    rows, cols = np.flatnonzero(big.max(1) > 30), np.flatnonzero(big.max(0) > 30)
    if len(rows) == 0:
        return big
    return big[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def draw_negative(rng: random.Random, fonts: Sequence[str] = ()) -> tuple[Image.Image, str]:
    """One thing that is not a digit, dark on white (CANVAS×CANVAS, mode L), and its kind ("glyph", "shape",
    "scribble", "hatching" or "texture")."""
    image = Image.new("L", (CANVAS, CANVAS), 255)
    kind = rng.choice(KINDS)
    DRAWERS[kind](ImageDraw.Draw(image), rng, fonts)
    return image, kind  # never blurred: digits seldom are, and blur must not become the sign of "not a digit"


def _font(rng: random.Random, fonts: Sequence[str], size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if fonts:
        return ImageFont.truetype(rng.choice(list(fonts)), size)
    return ImageFont.load_default(size=size)


def _glyph(draw: ImageDraw.ImageDraw, rng: random.Random, fonts: Sequence[str]) -> None:
    """A letter or symbol, at a random size, weight, place and tilt."""
    char = rng.choice(LETTERS + SYMBOLS + SYMBOLS)
    size = rng.randint(50, 90)
    font = _font(rng, fonts, size)
    layer = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(layer).text(
        (CANVAS / 2, CANVAS / 2), char, fill=255, font=font, anchor="mm", stroke_width=rng.randint(0, 3),
        stroke_fill=255,
    )  # fmt: skip
    layer = layer.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR)
    draw.bitmap((0, 0), layer, fill=0)


def _points(rng: random.Random, n: int, centre: tuple[float, float], radius: float) -> list[tuple[float, float]]:
    return [(centre[0] + radius * math.cos(a), centre[1] + radius * math.sin(a)) for a in _angles(rng, n)]


def _angles(rng: random.Random, n: int) -> list[float]:
    start = rng.uniform(0, 2 * math.pi)
    return [start + 2 * math.pi * i / n for i in range(n)]


def _shape(draw: ImageDraw.ImageDraw, rng: random.Random, fonts: Sequence[str]) -> None:
    """A little drawing: a star, a heart, an arrow, a face, a polygon, a crossed box, a spiral."""
    c = (CANVAS / 2 + rng.uniform(-8, 8), CANVAS / 2 + rng.uniform(-8, 8))
    r = rng.uniform(25, 45)
    w = rng.randint(3, 9)
    kind = rng.randrange(7)
    if kind == 0:  # a star of 5 to 8 points
        n = rng.randint(5, 8)
        outer, inner = _points(rng, n, c, r), [(c[0] + (x - c[0]) * 0.4, c[1] + (y - c[1]) * 0.4) for x, y in
                                               _points(rng, n, c, r)]  # fmt: skip
        star = [p for pair in zip(outer, inner, strict=True) for p in pair]
        draw.line([*star, star[0]], fill=0, width=w, joint="curve")
    elif kind == 1:  # a heart
        t = np.linspace(0, 2 * math.pi, 60)
        xs, ys = 16 * np.sin(t) ** 3, 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        heart = [(c[0] + r / 17 * x, c[1] - r / 17 * y) for x, y in zip(xs, ys, strict=True)]
        draw.line(heart, fill=0, width=w, joint="curve")
    elif kind == 2:  # an arrow, any way
        a = rng.uniform(0, 2 * math.pi)
        tip = (c[0] + r * math.cos(a), c[1] + r * math.sin(a))
        tail = (c[0] - r * math.cos(a), c[1] - r * math.sin(a))
        draw.line([tail, tip], fill=0, width=w)
        for side in (-1, 1):
            b = a + math.pi + side * 0.5
            draw.line([tip, (tip[0] + 0.45 * r * math.cos(b), tip[1] + 0.45 * r * math.sin(b))], fill=0, width=w)
    elif kind == 3:  # a face: a ring, two eyes, a mouth
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], outline=0, width=w)
        for side in (-1, 1):
            e = (c[0] + side * r * 0.35, c[1] - r * 0.3)
            draw.ellipse([e[0] - w, e[1] - w, e[0] + w, e[1] + w], fill=0)
        draw.arc([c[0] - r * 0.5, c[1] - r * 0.3, c[0] + r * 0.5, c[1] + r * 0.6], 20, 160, fill=0, width=w)
    elif kind == 4:  # a triangle, square or polygon with a cross or a diagonal inside
        corners = _points(rng, rng.randint(3, 6), c, r)
        draw.line([*corners, corners[0]], fill=0, width=w)
        draw.line([corners[0], corners[len(corners) // 2]], fill=0, width=w)
        if rng.random() < 0.5:
            draw.line([corners[1], corners[(len(corners) // 2 + 1) % len(corners)]], fill=0, width=w)
    elif kind == 5:  # a ring crossed out, or with a dot
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], outline=0, width=w)
        if rng.random() < 0.5:
            draw.line([(c[0] - r, c[1] - r), (c[0] + r, c[1] + r)], fill=0, width=w)
            draw.line([(c[0] + r, c[1] - r), (c[0] - r, c[1] + r)], fill=0, width=w)
        else:
            draw.ellipse([c[0] - w * 1.5, c[1] - w * 1.5, c[0] + w * 1.5, c[1] + w * 1.5], fill=0)
    else:  # a spiral of two or more turns
        turns = rng.uniform(2, 3.5)
        t = np.linspace(0, turns * 2 * math.pi, 120)
        spiral = [(c[0] + r * s / t[-1] * math.cos(s), c[1] + r * s / t[-1] * math.sin(s)) for s in t]
        draw.line(spiral, fill=0, width=max(2, w - 3), joint="curve")


def _scribble(draw: ImageDraw.ImageDraw, rng: random.Random, fonts: Sequence[str]) -> None:
    """A tangle: one or more random walks of many sharp turns (too many for any digit)."""
    for _ in range(rng.randint(1, 3)):
        x, y = rng.uniform(20, CANVAS - 20), rng.uniform(20, CANVAS - 20)
        path = [(x, y)]
        for _ in range(rng.randint(8, 16)):
            x = min(CANVAS - 8, max(8, x + rng.uniform(-35, 35)))
            y = min(CANVAS - 8, max(8, y + rng.uniform(-35, 35)))
            path.append((x, y))
        draw.line(path, fill=0, width=rng.randint(2, 7), joint="curve")


def _hatching(draw: ImageDraw.ImageDraw, rng: random.Random, fonts: Sequence[str]) -> None:
    """A grid, a fence or a zigzag: several parallel strokes, or one that turns back many times."""
    w = rng.randint(2, 6)
    if rng.random() < 0.5:
        n = rng.randint(3, 6)
        for i in range(n):
            p = 20 + i * (CANVAS - 40) / (n - 1)
            draw.line([(p, 18), (p + rng.uniform(-6, 6), CANVAS - 18)], fill=0, width=w)
            if rng.random() < 0.6:
                draw.line([(18, p), (CANVAS - 18, p + rng.uniform(-6, 6))], fill=0, width=w)
    else:
        n = rng.randint(5, 9)
        top, bottom = rng.uniform(20, 45), rng.uniform(65, 92)
        zigzag = [(15 + i * (CANVAS - 30) / n, top if i % 2 else bottom) for i in range(n + 1)]
        draw.line(zigzag, fill=0, width=w)


def _texture(draw: ImageDraw.ImageDraw, rng: random.Random, fonts: Sequence[str]) -> None:
    """A crop of something photographed: blotches of a smooth random field, or many dots."""
    if rng.random() < 0.5:
        field = np.random.default_rng(rng.randrange(1 << 30)).random((8, 8))
        big = Image.fromarray((field * 255).astype(np.uint8)).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
        level = rng.uniform(0.25, 0.45) * 255
        dark = np.asarray(big) < level
        draw.bitmap((0, 0), Image.fromarray((dark * 255).astype(np.uint8)), fill=0)
    else:
        for _ in range(rng.randint(15, 60)):
            x, y, s = rng.uniform(10, CANVAS - 10), rng.uniform(10, CANVAS - 10), rng.uniform(2, 6)
            draw.ellipse([x - s, y - s, x + s, y + s], fill=0)


DRAWERS: dict[str, Callable[[ImageDraw.ImageDraw, random.Random, Sequence[str]], None]] = {
    "glyph": _glyph,
    "shape": _shape,
    "scribble": _scribble,
    "hatching": _hatching,
    "texture": _texture,
}
KINDS = ("glyph", "glyph", "glyph", "shape", "shape", "scribble", "hatching", "texture")  # drawn this often
