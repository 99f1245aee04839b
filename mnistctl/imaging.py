"""Reading a user's image of a digit, or of a number, and making each digit look like an MNIST digit.

MNIST digits are white strokes on black, fitted into a 20×20 box and centred by centre of mass in 28×28.
People's files are dark ink on light paper, any size, off-centre, RGB, JPEG, PNG with alpha.
:func:`load_image` turns any file Pillow reads into an 8-bit grayscale array (H×W uint8); :func:`preprocess`
makes that array look like an MNIST digit; :func:`load_digit` does both. :func:`segment_digits` finds the
digits of a number written on one line and makes each look like an MNIST digit.

Decoding is Pillow's; everything after it works on numpy arrays, with Pillow only for resampling.
"""

from __future__ import annotations

import codecs
import errno
import io
import math
import os
import stat
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnistctl.errors import MnistctlError, first_line

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"})
INVERT_CHOICES = ("auto", "yes", "no")

SIZE = 28  # MNIST canvas
BOX = 20  # MNIST fits the longer side of the digit into 20 px
CENTRE = 14.0  # MNIST's mean centre of mass, in pixel-index coordinates (measured on the test set: 13.99, 14.00)
BORDER = 0.05  # the outer frame (fraction of the shorter side) that tells the background colour
MIN_CONTRAST = 40  # ink must be this many gray levels away from the background, else the image is blank
INK_FRACTION = 0.2  # pixels fainter than this fraction of the strongest ink are background (JPEG noise, paper)
INK_FLOOR = 12  # ... and never fewer gray levels than this
TRIM = 0.01  # ignore up to this fraction of the ink at each edge of the bounding box (dust, specks)
WORK_SIDE = 1024  # bigger images are reduced to about this before preprocessing: a digit needs far fewer pixels
MIN_SIDE = 3  # smaller images have no border to tell the background from
MIN_INK_SIDE = 3  # ink smaller than this many pixels (at the working size) is a speck, not a digit ...
MIN_INK_FRACTION = 0.01  # ... or smaller than this fraction of the image's longer side
# Stroke width, in pixels of the 20 px box (measured by _stroke_width on MNIST's training digits: median 2.5,
# 5th-95th percentile 1.7-3.9). Thinner than LOW is thickened to THIN_TO, thicker than HIGH thinned to THICK_TO.
NORMALISE_STROKES = True  # bench/photos.py turns it off to measure what it brings
STROKE_LOW, STROKE_HIGH = 1.9, 3.6
STROKE_THIN_TO, STROKE_THICK_TO = 2.4, 3.05
STROKE_REF = 80  # strokes are measured and changed on a copy with this longer side (4 px per box pixel)
IN_MEMORY_BYTES = 1 << 20  # smaller files are read in one call and decoded from memory (a fifth cheaper)

BLANK = "blank image: no ink found"
NOT_REGULAR = "not a regular file"
NOT_AN_IMAGE = "not an image file (or a format Pillow cannot read)"


class ImageError(MnistctlError):
    """A file that could not be used as a digit image; the message is a one-line reason."""


# --------------------------------------------------------------------------------------------- loading


class _PillowWarnings:
    """While any thread is decoding: Pillow's warnings are silenced and its decompression-bomb warning is an error.

    ``warnings.catch_warnings`` swaps a process-wide list, so overlapping enter/exit pairs from several threads
    would restore each other's state in the wrong order (and could leave the filters changed for good). A
    reference count makes the first thread in install the filters and the last one out restore them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: warnings.catch_warnings | None = None

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._saved = warnings.catch_warnings()
                self._saved.__enter__()
                warnings.filterwarnings("ignore", module="PIL")  # e.g. "Corrupt EXIF data": we report or succeed
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._saved is not None:
                self._saved.__exit__(None, None, None)
                self._saved = None


pillow_warnings = _PillowWarnings()  # predict.py holds it once per chunk of files rather than once per file

_MAGIC = {  # the starts of files Pillow reads: such a file that fails to open is damaged, not "not an image"
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"RIFF": "WebP",
}


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The first frame of the image at ``path`` as 8-bit grayscale (H×W uint8), upright, transparency on white.
    The array is read-only (``.copy()`` it to draw on it).

    Everything that can go wrong — missing, empty, not an image, truncated, too large, too small — raises
    :class:`ImageError` with a short reason.
    """
    with _open_file(os.fspath(path)) as fp, pillow_warnings:
        gray = _decode_gray(fp)
    h, w = gray.shape
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ImageError(f"image too small ({w}x{h} pixels)")
    return gray


# Opening never blocks (a FIFO with no writer would hang a decoding thread for good; a terminal must not become
# ours); O_NONBLOCK changes nothing for a regular file, the only kind that is then read.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_file(path: str) -> BinaryIO:
    """The regular file at ``path``, opened for reading; a small one is read into memory at once (a fifth
    cheaper for Pillow than a file object, and os calls cost a third of ``open``'s).

    What is opened is what is checked (fstat on the open descriptor): no window for the path to change between
    the check and the read. Directories, FIFOs, sockets and devices (/dev/zero) are refused.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise ImageError(_os_reason(exc)) from None
    handed_over = False
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError("is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(NOT_REGULAR)
        if info.st_size <= IN_MEMORY_BYTES:
            data = os.read(fd, info.st_size + 1)  # +1: to see whether the file has grown (a /proc file says 0)
            if len(data) <= info.st_size:
                return io.BytesIO(data)
            os.lseek(fd, 0, os.SEEK_SET)
        fp = os.fdopen(fd, "rb")
        handed_over = True
        return fp
    except OSError as exc:
        raise ImageError(_os_reason(exc)) from None
    finally:
        if not handed_over:
            os.close(fd)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ENXIO:  # a socket, or a device with nothing behind it
        return NOT_REGULAR
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long (over the system's limit: 255 bytes a name)"
    return f"cannot read the file ({exc.strerror or first_line(exc)})"


def _decode_gray(fp: BinaryIO) -> np.ndarray:
    try:
        im = Image.open(fp)  # not closed: it holds nothing but ``fp``, which the caller closes
        _draft(im)
        im.load()  # decode everything now, so a truncated file fails here and not later
        if _may_have_orientation(im):
            ImageOps.exif_transpose(im, in_place=True)
        return _to_gray(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image too large ({_describe_size(fp)}; limit {_limit_mpx()} Mpx)") from None
    except UnidentifiedImageError:
        raise ImageError(_unidentified_reason(fp)) from None
    except MemoryError:
        raise ImageError("not enough memory to decode the image") from None
    except EOFError:
        raise ImageError("truncated image") from None
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise ImageError("truncated image") from None
        raise ImageError(f"damaged image ({first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a crafted file can make a decoder raise anything; one line, no traceback
        raise ImageError(f"damaged image ({first_line(exc)})") from None


_NO_EXIF_FORMATS = frozenset({"PNG", "GIF", "BMP", "PPM"})
_ORIENTATION_KEYS = ("exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp")


def _may_have_orientation(im: Image.Image) -> bool:
    """Skip the EXIF parse (a good part of the cost of a small PNG) for formats that only carry it in info."""
    return im.format not in _NO_EXIF_FORMATS or any(key in im.info for key in _ORIENTATION_KEYS)


def _draft(im: Image.Image) -> None:
    """Let the JPEG decoder scale a big photo down by 2, 4 or 8 while decoding: many times faster."""
    if im.format == "JPEG" and max(im.size) > 2 * WORK_SIDE:
        scale = max(im.size) / WORK_SIDE
        im.draft("L" if im.mode == "RGB" else None, (int(im.size[0] / scale), int(im.size[1] / scale)))


def _to_gray(im: Image.Image) -> np.ndarray:
    """Any Pillow mode → H×W uint8; alpha is composited onto white (a transparent background is paper)."""
    mode = im.mode
    if mode.startswith("I;16"):
        return _deep_to_8bit(np.asarray(im.convert("I")))
    if mode in ("I", "F"):
        return _deep_to_8bit(np.asarray(im))
    if mode != "L":
        im = _to_mode_l(im)
    return np.frombuffer(im.tobytes(), np.uint8).reshape(im.height, im.width)  # np.asarray(im), 1 µs cheaper


def _to_mode_l(im: Image.Image) -> Image.Image:
    """An 8-bit-per-channel image in mode "L", alpha composited onto white."""
    mode = im.mode
    if mode == "P" and "transparency" not in im.info:
        return im.convert("L")
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
    elif mode in ("RGBa", "La"):  # premultiplied: un-premultiply first
        im = im.convert(mode.upper())
    if im.mode in ("RGBA", "LA"):
        return Image.composite(im.convert("L"), Image.new("L", im.size, 255), im.getchannel("A"))
    if im.mode not in ("1", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX
    return im.convert("L")


# What 16-bit files hold: cameras, scanners and microscopes store 10, 12 or 14 bits in them, some just 8.
BIT_DEPTHS = (8, 10, 12, 14, 16)


def _deep_to_8bit(a: np.ndarray) -> np.ndarray:
    """A 16-bit, 32-bit integer or float image: the mode says nothing of the bit depth, so look at the values.

    Non-negative values are read in the smallest of BIT_DEPTHS that holds the largest (12-bit values in a 16-bit
    file are not nearly black); floats from 0 to 1 are fractions of white; anything else (negative values, more
    than 16 bits) is stretched from its lowest value to its highest. Non-finite floats are not values: -inf and
    NaN count as the lowest finite value, +inf as the highest (one inf must not make the rest black).
    """
    a = _finite(a)
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0 and a.dtype.kind == "f" and hi <= 1.0:
        return _scale_to_8bit(a, 255.0, 0.0)
    if lo >= 0:
        for bits in BIT_DEPTHS:
            if hi <= 2**bits - 1:
                return _scale_to_8bit(a, 255 / (2**bits - 1), 0.0)
    scale = 255.0 / (hi - lo) if hi > lo else 1.0
    return _scale_to_8bit(a, scale, -lo * scale)


def _finite(a: np.ndarray) -> np.ndarray:
    """``a`` with NaN and -inf as its lowest finite value and +inf as its highest (all zeros: none is finite)."""
    if a.dtype.kind != "f":
        return a
    finite = np.isfinite(a)
    if finite.all():
        return a
    if not finite.any():
        return np.zeros(a.shape, np.float32)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    return np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)


def _scale_to_8bit(a: np.ndarray, scale: float, offset: float) -> np.ndarray:
    return np.clip(np.rint(a * scale + offset), 0, 255).astype(np.uint8)


def _limit_mpx() -> int:
    return round((Image.MAX_IMAGE_PIXELS or 0) / 1e6)


def _describe_size(fp: BinaryIO) -> str:
    """WxH of an image Pillow refused to open as too large: identify it again without the size check."""
    try:
        fp.seek(0)
        prefix = fp.read(16)
        Image.init()
        for name in Image.ID:
            factory, accept = Image.OPEN[name]
            result = accept(prefix) if accept else True
            if result and not isinstance(result, str):  # a str is a warning, not a match
                fp.seek(0)
                try:
                    w, h = factory(fp, "").size
                except Exception:  # noqa: BLE001 - not this format: try the next one
                    continue
                return f"{w}x{h} pixels"
    except Exception:  # noqa: BLE001 - only for the message
        pass
    return "too many pixels"


def image_format(data: bytes) -> str | None:
    """The format of the image file ``data`` holds ("PNG", "JPEG" ...), or None: what Pillow recognises in its
    header, or the start of a file Pillow reads (a damaged or cut-off one). Only the header is read."""
    try:
        with pillow_warnings, Image.open(io.BytesIO(data)) as im:
            if im.format:
                return str(im.format)
    except Exception:  # noqa: BLE001 - not an image Pillow recognises: look at the first bytes
        pass
    return next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)


def _unidentified_reason(fp: BinaryIO) -> str:
    """Why Pillow could not identify the file, from its first bytes."""
    try:
        fp.seek(0)
        head = fp.read(512)
    except OSError:
        return NOT_AN_IMAGE
    if not head:
        return "empty file (0 bytes)"
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return f"truncated or damaged image (starts like a {name} file)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text:
        return "not an image file (it is an HTML page)"
    if _is_text(head):
        return "not an image file (it is text)"
    return NOT_AN_IMAGE  # HEIC, AVIF, PDF, a zip ...: binary that Pillow (as installed) does not read


def _is_text(head: bytes) -> bool:
    """UTF-8 (the last character may be cut off) without control characters other than layout ones."""
    try:
        decoded = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\n\r\f\v" for ch in decoded)


# --------------------------------------------------------------------------------------------- preprocessing


def preprocess(gray: np.ndarray, invert: str = "auto") -> np.ndarray:
    """A grayscale image of a digit (H×W uint8) → 28×28 uint8, white on black, the way MNIST digits were made.

    Polarity from the border (or ``invert``), ink found by a threshold above the background and cropped, strokes
    much thinner or thicker than MNIST's brought towards its usual width, the longer side fitted to 20 px
    keeping the aspect ratio, pasted so that the centre of mass is at (14, 14). A 28×28 image that is already
    white on black is returned unchanged.
    """
    gray = _reduce(_check_gray(gray))
    inverted, *levels = _ink_levels(gray, invert)  # raises for a blank image, whatever its size
    if not inverted and gray.shape == (SIZE, SIZE):
        return gray  # already MNIST-shaped: any change would only hurt
    ink = _ink(gray, inverted, *levels)
    box = _bbox(ink)
    if box is None:
        raise ImageError(BLANK)
    x0, y0, x1, y1 = _trim(ink[box[1] : box[3], box[0] : box[2]], box)
    patch = ink[y0:y1, x0:x1]
    if max(patch.shape) < max(MIN_INK_SIDE, MIN_INK_FRACTION * max(gray.shape)):
        raise ImageError(f"{BLANK} (only specks)")  # dust on an empty page is not a digit
    if NORMALISE_STROKES:
        patch = _normalise_stroke(patch)
    return _fit_and_centre(patch)


def load_digit(path: str | os.PathLike[str], *, preprocess_image: bool = True, invert: str = "auto") -> np.ndarray:
    """The 28×28 uint8 array the network sees for the file at ``path``.

    ``preprocess_image=False`` (``--no-preprocess``) only resizes to 28×28, and still applies ``invert``.
    """
    gray = load_image(path)
    if preprocess_image:
        return preprocess(gray, invert)
    work = _reduce(gray)
    background = _median(_border(work))
    if max(int(work.max()) - background, background - int(work.min())) < MIN_CONTRAST:
        raise ImageError(BLANK)  # nothing stands out, whichever way the ink goes
    if gray.shape != (SIZE, SIZE):
        gray = _resize(gray, (SIZE, SIZE), Image.Resampling.LANCZOS, 3.0)
    return 255 - gray if _decide_invert(_median(_border(gray)), invert) else gray  # the 28x28's border will do


def _check_gray(gray: np.ndarray) -> np.ndarray:
    if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8:
        raise TypeError("expected a 2-D uint8 array (a grayscale image, as load_image returns)")
    return gray


def _reduce(gray: np.ndarray) -> np.ndarray:
    """Box-average a huge image to about WORK_SIDE first: everything after it is then cheap."""
    factor = _reduction(gray.shape)
    return np.asarray(Image.fromarray(gray).reduce(factor)) if factor > 1 else gray


def _reduction(shape: tuple[int, ...]) -> int:
    return -(-max(shape) // WORK_SIDE)


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


def _ink_levels(gray: np.ndarray, invert: str) -> tuple[bool, int, int]:
    """Whether the ink is dark (:func:`_decide_invert`), then the background's gray level (the border's median)
    and the strongest ink's, both counted towards the ink (as 255 - v when the ink is dark). Raises ImageError
    when nothing stands out from the background."""
    background = _median(_border(gray))
    inverted = _decide_invert(background, invert)
    hi = int(gray.max())
    if inverted:
        hi, background = 255 - int(gray.min()), 255 - background
    if hi - background < MIN_CONTRAST:
        other = (int(gray.max()) - _median(_border(gray))) if inverted else (_median(_border(gray)) - int(gray.min()))
        if invert != "auto" and other >= MIN_CONTRAST:  # the ink is there, in the polarity the user ruled out
            ink = "light" if inverted else "dark"
            raise ImageError(f"blank image with --invert {invert}: the ink is {ink} (pass --invert auto)")
        raise ImageError(BLANK)
    return inverted, background, hi


def _ink(gray: np.ndarray, inverted: bool, background: int, hi: int) -> np.ndarray:
    """How far each pixel is from the background towards the ink side, stretched so the strongest ink is 255;
    zero where it is paper or noise (below a fraction of the strongest ink). One lookup table, worked out
    in the ink's direction (255 - v when the ink is dark) and mirrored."""
    peak = hi - background
    floor = max(int(INK_FRACTION * peak), INK_FLOOR)
    above = np.arange(256) - background
    lut = np.clip((above * 255 + peak // 2) // peak, 0, 255)
    lut[above <= floor] = 0
    if inverted:
        lut = lut[::-1]
    return lut.astype(np.uint8)[gray]


def _bbox(a: np.ndarray) -> tuple[int, int, int, int] | None:
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


def _fit_and_centre(patch: np.ndarray) -> np.ndarray:
    """Fit the longer side of ``patch`` (ink, white on black, cropped) to 20 px and paste it into 28×28 so
    that its centre of mass is at (14, 14). Pillow box-reduces first (reducing_gap), then Lanczos anti-aliases."""
    h, w = patch.shape
    scale = BOX / max(w, h)
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    small = _resize(patch, (pw, ph), Image.Resampling.LANCZOS, 3.0)
    top_value = int(small.max())
    if top_value == 0:
        raise ImageError(BLANK)
    left = min(max(round(CENTRE - _centre(small.sum(0, dtype=np.int64))), 0), SIZE - pw)
    top = min(max(round(CENTRE - _centre(small.sum(1, dtype=np.int64))), 0), SIZE - ph)
    if top_value < 255:  # thin strokes fade when shrunk; MNIST strokes peak at 255
        small = ((small.astype(np.int32) * 255 + top_value // 2) // top_value).astype(np.uint8)
    canvas = np.zeros((SIZE, SIZE), np.uint8)
    canvas[top : top + ph, left : left + pw] = small
    return canvas


def _centre(profile: np.ndarray) -> float:
    total = int(profile.sum())
    return float(np.arange(len(profile)) @ profile) / total if total else (len(profile) - 1) / 2


# --------------------------------------------------------------------------------------------- stroke width


def _normalise_stroke(patch: np.ndarray) -> np.ndarray:
    """Thicken strokes much thinner than MNIST's, thin much thicker ones (``patch``: ink cropped, white on black).

    Measured and changed on a copy whose longer side is STROKE_REF px (4 per pixel of the 20 px box), so the
    cost does not grow with the photo; returned unchanged when the width is within MNIST's usual range.
    """
    h, w = patch.shape
    s = STROKE_REF / max(w, h)
    small = _resize(patch, (max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR, 2.0)
    width = _stroke_width(small) * BOX / STROKE_REF
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
    box = _bbox(out)
    return out[box[1] : box[3], box[0] : box[2]] if box else patch


def _blend(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    """``a`` moved ``fraction`` of the way to ``b``, rounded down (as Pillow's Image.blend)."""
    return (a + np.float32(fraction) * (b.astype(np.float32) - a)).astype(np.uint8)


def _filter3(a: np.ndarray, op: np.ufunc) -> np.ndarray:
    """A 3×3 max (op=np.maximum) or min (np.minimum) filter, edge pixels repeated outwards."""
    p = np.pad(a, 1, mode="edge")
    rows = op(op(p[:-2], p[1:-1]), p[2:])
    return op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _stroke_width(img: np.ndarray) -> float:
    """Mean stroke width in pixels (ink: over half the peak): ink area over half its boundary pixels.

    A 3×3 erosion takes the boundary pixels off; on an edge at a random angle that is 4/π px deep on average.
    """
    binary = np.pad(img >= max(1, (int(img.max()) + 1) // 2), 1)  # framed in background
    area = int(np.count_nonzero(binary))
    inner = int(np.count_nonzero(_filter3(binary, np.minimum)))
    return 2 * area / max(1, area - inner) * 4 / math.pi


# --------------------------------------------------------------------------------------------- numbers

# Sizes below are fractions of the typical digit size: the median longer side (height, or width for a wide digit)
# of the digits of the number, as MNIST fits every digit's longer side to the same 20 px.
SPECK = 0.15  # a mark smaller than this, both ways, is dust
FAINT = 0.5  # a piece whose strongest ink is under this fraction of the strongest is shading or noise, not a stroke
MERGE_OVERLAP = 0.5  # pieces whose columns overlap by this fraction of the narrower one's width are one digit
MIN_DIGIT_HEIGHT = 0.4  # merged pieces lower than this are not a digit (a minus sign, a decimal point)
# MNIST digits are never wider than their size (the 20 px box: median width 16 px); two touching digits are 1.55
# sizes wide on median. So a group wider than SPLIT_WIDTH sizes (and its own height) is digits that touch,
# about DIGIT_WIDTH sizes each.
SPLIT_WIDTH = 1.3
DIGIT_WIDTH = 0.8
SPLIT_WINDOW = 0.25  # look for the cut this fraction of a digit's width either side of where it is expected

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 and y1 exclusive


@dataclass(frozen=True)
class Digit:
    """One digit of a number: where it is in the image, and the 28×28 input the network sees for it."""

    box: Box  # in the original image's pixels
    pixels: np.ndarray  # 28×28 uint8, white on black, as preprocess makes them


@dataclass
class _Group:
    """Connected pieces of ink taken as one digit: their labels and bounding box (working pixels)."""

    labels: list[int]
    box: Box

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> int:
        return max(self.width, self.height)


def segment_digits(gray: np.ndarray, invert: str = "auto") -> list[Digit]:
    """The digits of a number written on one line, left to right (H×W uint8 gray image in).

    Polarity and ink as for one digit (the border decides; ``invert`` forces it), then connected pieces of
    ink (8-connectivity). A piece with no ink over FAINT of the strongest is shading (a photo's uneven light)
    or noise. Pieces whose columns overlap substantially are one digit: a broken stroke, the detached bar of a
    5 or 7, a 4 drawn in two strokes. Sizes are judged against the typical digit size (the median longer
    side, as MNIST fits every digit's longer side to 20 px): marks under SPECK of it are dust, groups lower
    than MIN_DIGIT_HEIGHT of it are punctuation (a minus sign, a decimal point). Digits may differ in size and
    baseline. A group wider than SPLIT_WIDTH sizes of the other digits (and its own height) is taken for
    digits that touch: it is cut, into as many digits as its width suggests, at the weakest columns near where
    the cuts are expected: fewest strokes crossed, then least ink (where two digits touch a column crosses one
    stroke; inside a 0, two). A cut that crosses more strokes, or leaves a part too low for a digit, is not
    made: that is one wide digit. Each digit is cut out (its own pixels only) and passed through the
    single-digit steps: stroke width, fitted to 20 px, centred by mass in 28×28.

    Not handled: several lines of digits (pieces above one another are merged); digits whose columns overlap
    a lot without touching (a 7's long bar over a 1); touching digits that are narrow together ("11" looks
    like one digit) or among narrow ones (a touching "141" is cut by its width, in two); digits touching at
    two places or along a slanted stroke; a digit broken into pieces side by side (a 0 drawn as two arcs); a
    stray stroke as tall as a digit (it is read as a 1); an underline or a box round the number. A big photo
    is reduced to about WORK_SIDE first, as for one digit; boxes are in the original image's pixels.

    Raises ImageError("blank image: no ink found") when there is no digit.
    """
    from scipy import ndimage  # ~0.1 s to import: only when a number is read

    gray = _check_gray(gray)
    work = _reduce(gray)
    ink = _ink(work, *_ink_levels(work, invert))
    labels, count = ndimage.label(ink > 0, structure=np.ones((3, 3), bool))
    strongest = ndimage.maximum(ink, labels, np.arange(1, count + 1)) if count else []
    groups = _digit_groups(labels, ndimage.find_objects(labels), strongest)
    if not groups:
        raise ImageError(BLANK)
    digits = []
    for group in groups:
        others = [g for g in groups if g is not group]
        size = _typical_size(others) if others else float(group.height)  # the digits it is to be compared with
        for x0, y0, x1, y1 in _split_touching(group, labels, ink, size):
            patch = np.where(np.isin(labels[y0:y1, x0:x1], group.labels), ink[y0:y1, x0:x1], 0)  # its own ink only
            if NORMALISE_STROKES:
                patch = _normalise_stroke(patch)
            box = _scale_box((x0, y0, x1, y1), _reduction(gray.shape), gray.shape)
            digits.append(Digit(box, _fit_and_centre(patch)))
    return digits


def _digit_groups(labels: np.ndarray, slices: list, strongest: Sequence[float]) -> list[_Group]:
    """Pieces of ink (``labels``, their ``ndimage.find_objects`` slices and strongest ink) → digits, left to
    right: faint shading, noise and dust dropped, pieces of one digit merged, punctuation dropped."""
    dust = max(MIN_INK_SIDE, MIN_INK_FRACTION * max(labels.shape))  # as for one digit: dust on an empty page
    pieces = [
        _Group([k], (s[1].start, s[0].start, s[1].stop, s[0].stop))
        for k, (s, top) in enumerate(zip(slices, strongest, strict=True), 1)
        if s is not None and top >= FAINT * 255
    ]
    pieces = [p for p in pieces if p.size >= dust]
    if not pieces:
        return []
    speck = SPECK * _typical_size(pieces)
    pieces = sorted((p for p in pieces if p.size >= speck), key=lambda p: p.box[0])
    groups: list[_Group] = []
    active: list[_Group] = []  # the groups that reach past where this piece starts: only they can overlap it
    for piece in pieces:
        active = [g for g in active if g.box[2] > piece.box[0]]
        best = max(active, key=lambda g: _overlap(g, piece) / min(g.width, piece.width), default=None)
        if best is not None and _overlap(best, piece) >= MERGE_OVERLAP * min(best.width, piece.width):
            best.labels += piece.labels
            best.box = _union(best.box, piece.box)
        else:
            groups.append(piece)
            active.append(piece)
    size = _typical_size(groups)
    return [g for g in groups if g.height >= MIN_DIGIT_HEIGHT * size]


def _typical_size(groups: list[_Group]) -> float:
    """The median size of the big ones (at least half the biggest): digits, not their broken-off parts."""
    biggest = max(g.size for g in groups)
    return float(np.median([g.size for g in groups if 2 * g.size >= biggest]))


def _overlap(a: _Group, b: _Group) -> int:
    """How many columns the two have in common."""
    return max(0, min(a.box[2], b.box[2]) - max(a.box[0], b.box[0]))


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _split_touching(group: _Group, labels: np.ndarray, ink: np.ndarray, size: float) -> list[Box]:
    """The group's box, or, for digits that touch (a group much wider than a digit of ``size``), one box per
    digit: cut at the weakest columns near where the cuts are expected, each part trimmed to its own ink."""
    x0, y0, x1, y1 = group.box
    if group.width <= SPLIT_WIDTH * max(size, group.height):
        return [group.box]
    mask = np.isin(labels[y0:y1, x0:x1], group.labels)
    strokes = mask[0] + np.count_nonzero(mask[1:] & ~mask[:-1], axis=0)  # separate runs of ink in each column
    profile = np.where(mask, ink[y0:y1, x0:x1], 0).sum(0, dtype=np.int64)
    parts = max(2, round(group.width / (DIGIT_WIDTH * size)))
    step = group.width / parts
    cuts = [0]
    for j in range(1, parts):
        expected = j * step
        window = range(max(cuts[-1] + 1, int(expected - SPLIT_WINDOW * step)), int(expected + SPLIT_WINDOW * step) + 1)
        # The weakest column: it crosses the fewest strokes, then holds the least ink, then is nearest to where
        # the cut is expected. Where two digits touch, a column crosses one stroke; if every column near the
        # expected cut crosses two or more, this is one wide digit (a 0, a 2, a 5 written large), not a cut.
        cut = min(window, key=lambda i: (strokes[i], profile[i], abs(i - expected)))
        if strokes[cut] <= 1:
            cuts.append(cut)
    cuts.append(group.width)
    boxes = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        part = _bbox(mask[:, a:b])
        if part is not None:
            boxes.append((x0 + a + part[0], y0 + part[1], x0 + a + part[2], y0 + part[3]))
    if any(box[3] - box[1] < MIN_DIGIT_HEIGHT * size for box in boxes):
        return [group.box]  # a part too low for a digit: the long bar of one wide digit (a 5, a 7), not a cut
    return boxes


def _scale_box(box: Box, factor: int, shape: tuple[int, int]) -> Box:
    """A box in working pixels → the same box in the original image's pixels."""
    h, w = shape
    return box[0] * factor, box[1] * factor, min(w, box[2] * factor), min(h, box[3] * factor)
