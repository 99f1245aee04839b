"""One digit: a grayscale image (H×W uint8) made to look like an MNIST digit — white strokes on black, the
longer side fitted into 20 px, centred by centre of mass in 28×28.

Everything here works on numpy arrays, with Pillow only for resampling; :mod:`mnistctl.imaging.segment` uses the
same steps for each digit of a number.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from mnistctl.imaging.decode import ImageError
from mnistctl.imaging.sources import ImageInput, to_gray

INVERT_CHOICES = ("auto", "yes", "no")
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 and y1 exclusive

SIZE = 28  # MNIST canvas
BOX = 20  # MNIST fits the longer side of the digit into 20 px
CENTRE = 14.0  # MNIST's mean centre of mass, in pixel-index coordinates (measured on the test set: 13.99, 14.00)
BORDER = 0.05  # the outer frame (fraction of the shorter side) that tells the background colour
MIN_CONTRAST = 40  # ink must be this many gray levels away from the background, else the image is blank
INK_FRACTION = 0.2  # pixels fainter than this fraction of the strongest ink are background (JPEG noise, paper)
INK_FLOOR = 12  # ... and never fewer gray levels than this
PAPER_SPREAD = 2.5  # ... nor nearer the background than the paper's own grain and unevenness (_paper_spread)
TRIM = 0.01  # ignore up to this fraction of the ink at each edge of the bounding box (dust, specks)
MIN_INK_SIDE = 3  # ink smaller than this many pixels (at the working size) is a speck, not a digit ...
DUST_SIDE = 8  # ... and so is ink smaller than this many of the image's own pixels ...
MIN_INK_FRACTION = 0.01  # ... or than this fraction of its longer side, if that is less (a small icon's digit)
# Stroke width, in pixels of the 20 px box (measured by stroke_width on MNIST's training digits: median 2.5,
# 5th-95th percentile 1.7-3.9). Thinner than LOW is thickened to THIN_TO, thicker than HIGH thinned to THICK_TO.
STROKE_LOW, STROKE_HIGH = 1.9, 3.6
STROKE_THIN_TO, STROKE_THICK_TO = 2.4, 3.05
STROKE_REF = 80  # strokes are measured and changed on a copy with this longer side (4 px per box pixel)

BLANK = "blank image: no ink found"
# Bigger images are box-averaged to about this many pixels to be worked on (a digit needs far fewer), and where
# the ink takes only a part of the page, that part is looked at again in the image's own pixels.
WORK_PIXELS = 1024 * 1024


def preprocess(gray: np.ndarray, invert: str = "auto", *, normalise_strokes: bool = True) -> np.ndarray:
    """A grayscale image of a digit (H×W uint8) → 28×28 uint8, white on black, the way MNIST digits were made.

    Polarity from the border (or ``invert``), ink found by a threshold above the background and cropped, strokes
    much thinner or thicker than MNIST's brought towards its usual width, the longer side fitted to 20 px
    keeping the aspect ratio, pasted so that the centre of mass is at (14, 14). A 28×28 image that is already
    white on black is returned unchanged. ``normalise_strokes=False`` leaves the strokes as they are (bench/photos.py
    measures what the step brings).
    """
    return preprocess_and_measure(gray, invert, normalise_strokes=normalise_strokes)[0]


def preprocess_and_measure(
    gray: np.ndarray, invert: str = "auto", *, normalise_strokes: bool = True
) -> tuple[np.ndarray, float]:
    """:func:`preprocess`'s input, and how many times wider than tall the ink is (one digit seldom is more than
    1: MNIST's never are; several side by side are)."""
    gray = check_gray(gray)
    factor = work_reduction(gray.shape)
    work = reduce_to_work_size(gray)
    inverted, background, hi, spread = ink_levels(work, invert)  # raises for a blank image, whatever its size
    if not inverted and gray.shape == (SIZE, SIZE):
        return gray, 1.0  # already MNIST-shaped: any change would only hurt
    box, patch = _digit_ink(ink_strength(work, inverted, background, hi, spread))
    if max(patch.shape) < dust_side(gray.shape):
        raise ImageError(f"{BLANK} (only specks)")  # dust on an empty page is not a digit
    region = detail_region(box, factor, gray.shape, margin=factor)
    if region is not None:  # a small digit on a big page: cut out of the image itself, not the reduced copy
        crop = gray[region[1] : region[3], region[0] : region[2]]
        work = reduce_to_work_size(crop)
        hi = max(hi, strongest_ink(work, inverted))  # sharper than the reduced page: never fainter
        _, patch = _digit_ink(ink_strength(work, inverted, background, hi, spread))
        if max(patch.shape) * work_reduction(crop.shape) < dust_pixels(gray.shape):
            raise ImageError(f"{BLANK} (only specks)")
    aspect = patch.shape[1] / patch.shape[0]
    if normalise_strokes:
        patch = normalise_stroke(patch)
    return fit_and_centre(patch), aspect


def _digit_ink(ink: np.ndarray) -> tuple[Box, np.ndarray]:
    """The box of the ink (trimmed of far-off dust: :func:`_trim`) and the ink in it."""
    box = bounding_box(ink)
    if box is None:
        raise ImageError(BLANK)
    box = _trim(ink[box[1] : box[3], box[0] : box[2]], box)
    return box, ink[box[1] : box[3], box[0] : box[2]]


def dust_side(shape: tuple[int, ...], pixels: float | None = None) -> float:
    """Ink less than this many working pixels across (both ways) is dust, in an image of ``shape`` (its own
    pixels): ``pixels`` of the image (default :func:`dust_pixels`) — but never under MIN_INK_SIDE working
    pixels in an image worked on whole, nor under one in a reduced one (where what passes is looked at again
    in the image's own pixels: :func:`detail_region`)."""
    factor = work_reduction(shape)
    return max(MIN_INK_SIDE if factor == 1 else 1, (dust_pixels(shape) if pixels is None else pixels) / factor)


def dust_pixels(shape: tuple[int, ...]) -> float:
    """Dust in an image of ``shape``, in its own pixels: under DUST_SIDE, or MIN_INK_FRACTION of its longer
    side if that is less (a small icon's digit)."""
    return min(DUST_SIDE, MIN_INK_FRACTION * max(shape))


def detail_region(box: Box, factor: int, shape: tuple[int, ...], margin: int) -> Box | None:
    """Where to look again, in the image's own pixels, at ink found at ``box`` on its copy reduced ``factor``
    times: the box with ``margin`` pixels round it — or None when that region would be reduced as much (a big
    digit, or ink all over the page), so that looking again would show nothing more."""
    if factor <= 1:
        return None
    h, w = shape[:2]
    x0, y0 = max(0, box[0] * factor - margin), max(0, box[1] * factor - margin)
    x1, y1 = min(w, box[2] * factor + margin), min(h, box[3] * factor + margin)
    return (x0, y0, x1, y1) if work_reduction((y1 - y0, x1 - x0)) < factor else None


def strongest_ink(gray: np.ndarray, inverted: bool) -> int:
    """The strongest ink's gray level, counted towards the ink (as 255 - v when the ink is dark)."""
    return 255 - int(gray.min()) if inverted else int(gray.max())


def digit_input(
    image: ImageInput | Any, invert: str = "auto", *, preprocess_image: bool = True, normalise_strokes: bool = True
) -> np.ndarray:
    """The 28×28 uint8 input the network sees for ``image`` (any kind :func:`~mnistctl.imaging.sources.to_gray`
    reads): :func:`preprocess`, or with ``preprocess_image=False`` :func:`resize_only`."""
    gray = to_gray(image)
    if not preprocess_image:
        return resize_only(gray, invert)
    return preprocess(gray, invert, normalise_strokes=normalise_strokes)


def resize_only(gray: np.ndarray, invert: str = "auto") -> np.ndarray:
    """``gray`` resized to 28×28 as it is, without the steps of :func:`preprocess` (``--no-preprocess``, for
    images already framed like MNIST's); ``invert`` still applies. A blank image is still refused."""
    gray = check_gray(gray)
    work = reduce_to_work_size(gray)
    background = _median(_border(work))
    if max(int(work.max()) - background, background - int(work.min())) < MIN_CONTRAST:
        raise ImageError(BLANK)  # nothing stands out, whichever way the ink goes
    if gray.shape != (SIZE, SIZE):
        gray = _resize(gray, (SIZE, SIZE), Image.Resampling.LANCZOS, 3.0)
    return 255 - gray if _decide_invert(_median(_border(gray)), invert) else gray  # the 28x28's border will do


def check_gray(gray: np.ndarray) -> np.ndarray:
    if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8:
        raise TypeError("expected a 2-D uint8 array (a grayscale image, as decode.to_gray returns)")
    return gray


def reduce_to_work_size(gray: np.ndarray) -> np.ndarray:
    """Box-average a huge image to about WORK_PIXELS first (:func:`work_reduction`): everything after it is then
    cheap."""
    factor = work_reduction(gray.shape)
    return np.asarray(Image.fromarray(gray).reduce(factor)) if factor > 1 else gray


def work_reduction(shape: tuple[int, ...]) -> int:
    """By how much (each way) an image of ``shape`` is reduced to work on: to at most WORK_PIXELS, counted in
    pixels rather than by its longer side, so that a long strip of small digits keeps them whole."""
    h, w = shape[:2]
    return max(1, math.ceil(math.sqrt(h * w / WORK_PIXELS)))


def _border(gray: np.ndarray) -> np.ndarray:
    """The pixels of the outer ~5% frame (flat): they tell the background."""
    return gray[_frame_mask(gray.shape)]


@lru_cache(maxsize=16)
def _frame_mask(shape: tuple[int, int]) -> np.ndarray:
    """True on the outer ~5% frame (at least one pixel; all of an image too small to have an inside)."""
    b = max(1, round(BORDER * min(shape)))
    mask = np.ones(shape, bool)
    mask[b:-b, b:-b] = False
    return mask


def _decide_invert(background: int, invert: str) -> bool:
    """Whether the ink is dark (on light paper), from the border's median gray level: it is light (128 or
    more) exactly when more than half the border is."""
    if invert == "yes":
        return True
    if invert == "no":
        return False
    if invert != "auto":
        raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}, not {invert!r}")
    return background >= 128


def _median(values: np.ndarray) -> int:
    """The lower median (a gray level that is in the image)."""
    k = (values.size - 1) // 2
    return int(np.partition(values, k)[k])


def ink_levels(gray: np.ndarray, invert: str) -> tuple[bool, int, int, int]:
    """Whether the ink is dark (:func:`_decide_invert`), then the background's gray level (the border's median)
    and the strongest ink's, both counted towards the ink (as 255 - v when the ink is dark), and how far the
    paper itself strays from its level (grain, uneven light: :func:`_paper_spread`). Raises ImageError when
    nothing stands out from the background."""
    border = _border(gray)
    background = _median(border)
    spread = _paper_spread(border, background)
    inverted = _decide_invert(background, invert)
    hi = strongest_ink(gray, inverted)
    if inverted:
        background = 255 - background
    if hi - background < MIN_CONTRAST:
        other = (int(gray.max()) - _median(_border(gray))) if inverted else (_median(_border(gray)) - int(gray.min()))
        if invert != "auto" and other >= MIN_CONTRAST:  # the ink is there, in the polarity the user ruled out
            ink = "light" if inverted else "dark"
            raise ImageError(f"blank image with --invert {invert}: the ink is {ink} (pass --invert auto)")
        raise ImageError(BLANK)
    return inverted, background, hi, spread


def _paper_spread(border: np.ndarray, background: int) -> int:
    """How far from ``background`` paper pixels go: PAPER_SPREAD times the 90th percentile of the border's
    distance from it (for grain, 2.5 × 1.64 σ ≈ 4 σ; a gradient's ends are in the border too). The 90th, so
    that ink crossing up to a tenth of the border does not count as paper."""
    distance = np.abs(border.astype(np.int16) - background)
    k = int(0.9 * (distance.size - 1))
    return int(PAPER_SPREAD * int(np.partition(distance, k)[k]))


def ink_strength(gray: np.ndarray, inverted: bool, background: int, hi: int, spread: int = 0) -> np.ndarray:
    """How far each pixel is from the background towards the ink side, stretched so the strongest ink is 255;
    zero where it is paper or noise (below a fraction of the strongest ink, or within the paper's own
    ``spread``). One lookup table, worked out in the ink's direction (255 - v when the ink is dark) and
    mirrored."""
    peak = hi - background
    floor = max(int(INK_FRACTION * peak), INK_FLOOR, min(spread, peak // 2))
    above = np.arange(256) - background
    lut = np.clip((above * 255 + peak // 2) // peak, 0, 255)
    lut[above <= floor] = 0
    if inverted:
        lut = lut[::-1]
    return lut.astype(np.uint8)[gray]


def bounding_box(a: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the non-zero pixels (x1, y1 exclusive), or None."""
    rows = np.flatnonzero(a.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(a.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _trim(crop: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Shrink ``box`` (of which ``crop`` is the content) past the faint edges holding under TRIM of the ink
    each: a speck of dust far from the digit would otherwise make the box — and shrink the digit."""
    factor = -(-max(crop.shape) // 256)  # profiles of a big crop from a reduced copy are plenty
    small = np.asarray(Image.fromarray(crop).reduce(factor)) if factor > 1 else crop
    x0, x1 = _trim_range(small.sum(0, dtype=np.int64))
    y0, y1 = _trim_range(small.sum(1, dtype=np.int64))
    h, w = crop.shape
    return box[0] + x0 * factor, box[1] + y0 * factor, box[0] + min(w, x1 * factor), box[1] + min(h, y1 * factor)


def _trim_range(profile: np.ndarray) -> tuple[int, int]:
    limit = TRIM * int(profile.sum())
    n = len(profile)
    start = min(int(np.searchsorted(np.cumsum(profile), limit, side="right")), n - 1)
    from_end = int(np.searchsorted(np.cumsum(profile[::-1]), limit, side="right"))
    return start, max(n - from_end, start + 1)


def _resize(a: np.ndarray, size: tuple[int, int], method: Image.Resampling, gap: float) -> np.ndarray:
    """``a`` resized to ``size`` (width, height) by Pillow; ``gap``: box-reduce first down to that factor."""
    return np.asarray(Image.fromarray(a).resize(size, method, reducing_gap=gap))


def resize_ink(patch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Ink (white on black) resized to ``size`` (width, height), its strongest pixel brought to 255: thin strokes
    fade when shrunk, and MNIST's strokes peak at 255. Pillow box-reduces first (reducing_gap), then Lanczos
    anti-aliases. Raises ImageError when nothing is left."""
    small = _resize(patch, size, Image.Resampling.LANCZOS, 3.0)
    top_value = int(small.max())
    if top_value == 0:
        raise ImageError(BLANK)
    if top_value < 255:
        small = ((small.astype(np.int32) * 255 + top_value // 2) // top_value).astype(np.uint8)
    return small


def fit_and_centre(patch: np.ndarray) -> np.ndarray:
    """Fit the longer side of ``patch`` (ink, white on black, cropped) to 20 px and paste it into 28×28 so
    that its centre of mass is at (14, 14)."""
    h, w = patch.shape
    scale = BOX / max(w, h)
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    small = resize_ink(patch, (pw, ph))
    left = min(max(round(CENTRE - _centre(small.sum(0, dtype=np.int64))), 0), SIZE - pw)
    top = min(max(round(CENTRE - _centre(small.sum(1, dtype=np.int64))), 0), SIZE - ph)
    canvas = np.zeros((SIZE, SIZE), np.uint8)
    canvas[top : top + ph, left : left + pw] = small
    return canvas


def _centre(profile: np.ndarray) -> float:
    total = int(profile.sum())
    return float(np.arange(len(profile)) @ profile) / total if total else (len(profile) - 1) / 2


# --------------------------------------------------------------------------------------------- stroke width


def normalise_stroke(patch: np.ndarray, pen: float | None = None) -> np.ndarray:
    """Thicken strokes much thinner than MNIST's, thin much thicker ones (``patch``: ink cropped, white on black).

    Measured and changed on a copy whose longer side is STROKE_REF px (4 per pixel of the 20 px box), so the
    cost does not grow with the photo; returned unchanged when the width is within MNIST's usual range.
    ``pen``: a width already measured for the whole number (:func:`box_stroke_width`): within that range, the
    patch is returned at once; outside it, the patch is measured itself.
    """
    if pen is not None and STROKE_LOW <= pen <= STROKE_HIGH:
        return patch  # written with MNIST's pen: nothing to measure for each of a number's pieces
    small = _stroke_copy(patch, max(patch.shape))
    width = stroke_width(small) * BOX / STROKE_REF
    if STROKE_LOW <= width <= STROKE_HIGH:
        return patch
    grow = width < STROKE_LOW
    steps = abs((STROKE_THIN_TO if grow else STROKE_THICK_TO) - width) * STROKE_REF / BOX / 2  # 3×3: 1 px a side
    out = np.pad(small, 2 * math.ceil(steps) if grow else 0)  # room to grow into
    rank = np.maximum if grow else np.minimum
    while steps > 0.1:
        step = _filter3(out, rank)
        out = step if steps >= 1 else _blend(out, step, steps)  # the last fraction of a step: part of the way
        steps -= 1
    box = bounding_box(out)
    return out[box[1] : box[3], box[0] : box[2]] if box else patch


def box_stroke_width(ink: np.ndarray, size: float) -> float:
    """The width of the strokes of ``ink`` (white on black) in pixels of the 20 px box, for digits ``size``
    pixels across (never less than half its height: the copy it is measured on stays small)."""
    return stroke_width(_stroke_copy(ink, max(size, ink.shape[0] / 2))) * BOX / STROKE_REF


def _stroke_copy(ink: np.ndarray, size: float) -> np.ndarray:
    """``ink`` scaled so that ``size`` pixels of it are STROKE_REF."""
    h, w = ink.shape
    s = STROKE_REF / size
    return _resize(ink, (max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR, 2.0)


def _blend(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    """``a`` moved ``fraction`` of the way to ``b``, rounded down (as Pillow's Image.blend)."""
    return (a + np.float32(fraction) * (b.astype(np.float32) - a)).astype(np.uint8)


def _filter3(a: np.ndarray, op: np.ufunc) -> np.ndarray:
    """A 3×3 max (op=np.maximum) or min (np.minimum) filter, edge pixels repeated outwards."""
    p = np.pad(a, 1, mode="edge")
    rows = op(op(p[:-2], p[1:-1]), p[2:])
    return op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def stroke_width(img: np.ndarray) -> float:
    """Mean stroke width in pixels (ink: over half the peak): ink area over half its boundary pixels.

    A 3×3 erosion takes the boundary pixels off; on an edge at a random angle that is 4/π px deep on average.
    """
    binary = np.pad(img >= max(1, (int(img.max()) + 1) // 2), 1)  # framed in background
    area = int(np.count_nonzero(binary))
    inner = int(np.count_nonzero(_filter3(binary, np.minimum)))
    return 2 * area / max(1, area - inner) * 4 / math.pi


# --------------------------------------------------------------------------------------------- numbers
