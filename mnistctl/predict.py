"""Reading people's digit images and running a network on them (``mnistctl predict``).

MNIST digits are white strokes on black, fitted into a 20×20 box and centred by centre of mass in 28×28.
User files are dark ink on light paper, any size, off-centre, RGB, JPEG, PNG with alpha. :func:`load_image`
turns any file Pillow reads into 8-bit grayscale; :func:`preprocess` makes it look like an MNIST digit;
:func:`predict_paths` streams predictions for many files, decoding in threads while the network runs.

Only Pillow and torch are used (no numpy): every per-pixel step is a Pillow C call, so a 28×28 file costs
tens of microseconds of Python.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import stat
import struct
import threading
import warnings
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from mnistctl.data.mnist import normalise
from mnistctl.errors import MnistctlError

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


_pillow_warnings = _PillowWarnings()

_MAGIC = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"RIFF": "WebP",
}


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """The first frame of the image at ``path`` as 8-bit grayscale ("L"), upright, transparency on white.

    Everything that can go wrong — missing, empty, not an image, truncated, too large, too small — raises
    :class:`ImageError` with a short reason.
    """
    path = os.fspath(path)
    plain = _read_plain_png(path)
    gray = _to_gray(plain) if plain is not None else _open_with_pillow(path)
    w, h = gray.size
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ImageError(f"image too small ({w}x{h} pixels)")
    return gray


def _open_with_pillow(path: str) -> Image.Image:
    try:
        with _pillow_warnings, Image.open(path) as im:
            _draft(im)
            im.load()  # decode everything now, so a truncated file fails here and not later
            if _may_have_orientation(im):
                ImageOps.exif_transpose(im, in_place=True)
            gray = _to_gray(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image too large ({_describe_size(path)}; limit {_limit_mpx()} Mpx)") from None
    except UnidentifiedImageError:
        raise ImageError(_unidentified_reason(path)) from None
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except MemoryError:
        raise ImageError("not enough memory to decode the image") from None
    except EOFError:
        raise ImageError("truncated image") from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text.lower():
            raise ImageError("truncated image") from None
        raise ImageError(f"damaged image ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a crafted file can make a decoder raise anything; one line, no traceback
        raise ImageError(f"damaged image ({_first_line(exc)})") from None
    return gray


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = {0: "L", 2: "RGB", 4: "LA", 6: "RGBA"}  # 8-bit colour types Pillow decodes to these modes as they are
# Ancillary chunks that change nothing in the pixels Pillow gives for an 8-bit image, with the shortest length
# Pillow accepts for each (it refuses shorter ones as truncated). Text: tEXt, and iTXt when not compressed,
# unless their keyword is EXIF or XMP (which may rotate the image). Anything else is left to Pillow.
_PNG_HARMLESS = {b"pHYs": 9, b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"sBIT": 0, b"tIME": 0, b"bKGD": 0, b"hIST": 0}
_PLAIN_PNG_MAX_BYTES = 1 << 20  # bigger files cost their decoding, not Image.open's overhead: Pillow reads them


def _read_plain_png(path: str) -> Image.Image | None:
    """A plain PNG (8-bit gray, RGB, gray+alpha or RGBA, not interlaced) decoded by Pillow's zlib decoder directly.

    ``Image.open`` spends most of its ~80 µs on a 28×28 file in Python (format detection, a method call per
    chunk, the loader's bookkeeping); reading the few chunks here and handing the pixel data to the same C
    decoder takes a third of that and gives the same pixels. This reader is stricter than Pillow's: anything
    else — another format or colour type, palette or transparency, animation, EXIF or XMP, an ICC profile or
    compressed text, a file over 1 MiB or not a regular file, an image over Pillow's pixel limit, any CRC
    mismatch, a short or misplaced chunk, damaged or truncated data — returns None, and Pillow's own reader
    then decodes the file or says what is wrong with it.
    """
    try:
        fd = os.open(path, os.O_RDONLY)  # a third of the cost of open(): no buffered file object
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > _PLAIN_PNG_MAX_BYTES:
                return None
            data = os.read(fd, info.st_size + 1)  # the whole file in one call (+1: it may have grown)
        finally:
            os.close(fd)
    except OSError:
        return None
    if len(data) < 33 or len(data) > info.st_size or not data.startswith(_PNG_SIGNATURE):
        return None
    idat: list[bytes] = []
    pos, end, previous = 8, len(data), b""
    while pos + 12 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        if pos + 12 + length > end:
            return None  # truncated
        body = data[pos + 8 : pos + 8 + length]
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, pos + 8 + length)[0]:
            return None
        if pos == 8:
            if kind != b"IHDR" or length != 13:
                return None
            w, h, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
            mode = _PNG_MODES.get(colour)
            if mode is None or depth != 8 or compression or filtering or interlace or not 0 < w * h <= _max_pixels():
                return None
        elif kind == b"IDAT":
            if idat and previous != b"IDAT":
                return None  # IDAT chunks must follow one another
            idat.append(body)
        elif kind == b"IEND":
            break
        elif not _harmless_png_chunk(kind, body):
            return None
        previous = kind
        pos += 12 + length
    else:
        return None  # no IEND: truncated
    try:
        return Image.frombytes(mode, (w, h), b"".join(idat), "zip", mode)
    except Exception:  # noqa: BLE001 - damaged data: Pillow's reader will say how
        return None


def _harmless_png_chunk(kind: bytes, body: bytes) -> bool:
    if kind in _PNG_HARMLESS:
        return len(body) >= _PNG_HARMLESS[kind]
    keyword, _, rest = body.partition(b"\0")
    if kind == b"tEXt" or (kind == b"iTXt" and rest[:1] == b"\0"):  # iTXt: only when not compressed
        return keyword.decode("latin-1") not in _ORIENTATION_KEYS
    return False


def _max_pixels() -> float:
    return Image.MAX_IMAGE_PIXELS or math.inf


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


def _to_gray(im: Image.Image) -> Image.Image:
    """Any Pillow mode → "L"; alpha is composited onto white (a transparent background is paper)."""
    mode = im.mode
    if mode == "L":
        return im.copy() if im.readonly else im  # readonly: memory-mapped from the file
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA"):
        if mode == "P" and "transparency" not in im.info:
            return im.convert("L")
        im, mode = im.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        if mode in ("RGBa", "La"):  # premultiplied: un-premultiply first
            im = im.convert(mode.upper())
        gray = im.convert("L")
        out = Image.new("L", im.size, 255)
        out.paste(gray, (0, 0), im.getchannel("A"))
        return out
    if mode.startswith("I;16"):
        return im.convert("I").point(lambda v: v * (1 / 257)).convert("L")  # 0..65535 → 0..255, not clipped
    if mode in ("I", "F"):
        # The mode says nothing of the bit depth: 8-bit values stay, 16-bit ones are scaled, others stretched.
        lo, hi = im.getextrema()
        if mode == "F" and hi <= 1.0:
            scale, offset = 255.0, 0.0
        elif hi <= 255:
            scale, offset = 1.0, 0.0
        elif lo >= 0 and hi <= 65535:
            scale, offset = 1 / 257, 0.0
        else:
            scale = 255.0 / (hi - lo) if hi > lo else 1.0
            offset = -lo * scale
        if mode == "I":
            im = im.convert("F")
        return im.point(lambda v: v * scale + offset).convert("L")
    return im.convert("RGB").convert("L")  # CMYK, YCbCr, LAB, HSV, RGBX, RGB


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


def _limit_mpx() -> int:
    return round((Image.MAX_IMAGE_PIXELS or 0) / 1e6)


def _describe_size(path: str) -> str:
    """WxH of an image Pillow refused to open: identify it again without the size check."""
    try:
        with open(path, "rb") as fp:
            prefix = fp.read(16)
            Image.init()
            for name in Image.ID:
                factory, accept = Image.OPEN[name]
                result = accept(prefix) if accept else True
                if result and not isinstance(result, str):  # a str is a warning, not a match
                    fp.seek(0)
                    try:
                        w, h = factory(fp, str(path)).size
                    except Exception:  # noqa: BLE001 - not this format: try the next one
                        continue
                    return f"{w}x{h} pixels"
    except Exception:  # noqa: BLE001 - only for the message
        pass
    return "too many pixels"


def _unidentified_reason(path: str) -> str:
    try:
        with open(path, "rb") as fp:
            head = fp.read(512)
    except OSError:
        return "not an image file"
    if not head:
        return "empty file (0 bytes)"
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return f"truncated or damaged image (starts like a {name} file)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text:
        return "not an image file (it is an HTML page)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "not an image file"
    return "not an image file (it is text)"


# --------------------------------------------------------------------------------------------- preprocessing


def preprocess(img: Image.Image, invert: str = "auto") -> torch.Tensor:
    """A grayscale image of a digit → uint8 28×28 tensor, white on black, the way MNIST digits were made.

    Polarity from the border (or ``invert``), ink found by a threshold above the background and cropped, strokes
    much thinner or thicker than MNIST's brought towards its usual width, the longer side fitted to 20 px
    keeping the aspect ratio, pasted so that the centre of mass is at (14, 14). A 28×28 image that is already
    white on black is returned unchanged.
    """
    return _as_tensor(_preprocess_bytes(img, invert))


def _preprocess_bytes(img: Image.Image, invert: str) -> bytes:
    """:func:`preprocess` as 784 row-major bytes: the batch tensor is made once from many of them."""
    img = _as_gray(img)
    w, h = img.size
    if max(w, h) > WORK_SIDE:  # box-average a huge image down first: everything below is then cheap
        img = img.reduce(-(-max(w, h) // WORK_SIDE))
        w, h = img.size
    hist = img.histogram(_border_mask(w, h))
    inverted = _decide_invert(hist, invert)
    if not inverted and (w, h) == (SIZE, SIZE):
        return img.tobytes()  # already MNIST-shaped: any change would only hurt

    # Ink = how far a pixel is from the background, towards the ink side; zero where it is paper or noise
    # (below a fraction of the strongest ink), and the strongest ink becomes 255. Worked out as one LUT.
    lo, hi = img.getextrema()
    background = _median(hist)
    if inverted:  # think in 255 - v, then mirror the table
        lo, hi, background = 255 - hi, 255 - lo, 255 - background
    peak = hi - background
    if peak < MIN_CONTRAST:
        raise ImageError("blank image: no ink found")
    floor = max(int(INK_FRACTION * peak), INK_FLOOR)
    lut = [0] * (background + floor + 1) + _ramp(peak)[floor + 1 :] + [255] * (255 - hi)
    ink = img.point(lut[::-1] if inverted else lut)

    bbox = ink.getbbox()
    if bbox is None:
        raise ImageError("blank image: no ink found")
    patch = ink.crop(_trim(ink.crop(bbox), bbox))
    if max(patch.size) < max(MIN_INK_SIDE, MIN_INK_FRACTION * max(w, h)):
        raise ImageError("blank image: no ink found (only specks)")  # dust on an empty page is not a digit
    if NORMALISE_STROKES:
        patch = _normalise_stroke(patch)

    # Fit the longer side to 20 px; Pillow box-reduces first (reducing_gap), then Lanczos anti-aliases.
    pw, ph = patch.size
    scale = BOX / max(pw, ph)
    pw, ph = max(1, round(pw * scale)), max(1, round(ph * scale))
    data = patch.resize((pw, ph), Image.Resampling.LANCZOS, reducing_gap=3.0).tobytes()
    top_value = max(data)
    if top_value == 0:
        raise ImageError("blank image: no ink found")
    cols, rows = _profiles(data, pw, ph)
    left = min(max(round(CENTRE - _centre(cols)), 0), SIZE - pw)
    top = min(max(round(CENTRE - _centre(rows)), 0), SIZE - ph)
    if top_value < 255:  # thin strokes fade when shrunk; MNIST strokes peak at 255
        data = data.translate(bytes(_ramp(top_value) + [255] * (255 - top_value)))
    canvas = bytearray(SIZE * SIZE)
    for r in range(ph):
        at = (top + r) * SIZE + left
        canvas[at : at + pw] = data[r * pw : (r + 1) * pw]
    return bytes(canvas)


def _normalise_stroke(patch: Image.Image) -> Image.Image:
    """Thicken strokes much thinner than MNIST's, thin much thicker ones (``patch``: ink cropped, white on black).

    Measured and changed on a copy whose longer side is STROKE_REF px (4 per pixel of the 20 px box), so the
    cost does not grow with the photo; returned unchanged when the width is within MNIST's usual range.
    """
    w, h = patch.size
    s = STROKE_REF / max(w, h)
    small = patch.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR, reducing_gap=2.0)
    width = _stroke_width(small) * BOX / STROKE_REF
    if STROKE_LOW <= width <= STROKE_HIGH:
        return patch
    grow = width < STROKE_LOW
    target = STROKE_THIN_TO if grow else STROKE_THICK_TO
    steps = abs(target - width) * STROKE_REF / BOX / 2  # each 3×3 max/min filter moves both edges by 1 px
    pad = 2 * math.ceil(steps) if grow else 0
    out = Image.new("L", (small.width + 2 * pad, small.height + 2 * pad), 0)
    out.paste(small, (pad, pad))
    rank = ImageFilter.MaxFilter(3) if grow else ImageFilter.MinFilter(3)
    while steps > 0.1:
        step = out.filter(rank)
        out = step if steps >= 1 else Image.blend(out, step, steps)
        steps -= 1
    bbox = out.getbbox()
    return out.crop(bbox) if bbox else patch


def _stroke_width(img: Image.Image) -> float:
    """Mean stroke width in pixels (ink: over half the peak): ink area over half its boundary pixels.

    A 3×3 erosion takes the boundary pixels off; on an edge at a random angle that is 4/π px deep on average.
    """
    top = img.getextrema()[1]
    binary = img.point(_threshold_table(max(1, (top + 1) // 2)))
    framed = Image.new("L", (img.width + 2, img.height + 2), 0)
    framed.paste(binary, (1, 1))
    area = framed.histogram()[255]
    inner = framed.filter(ImageFilter.MinFilter(3)).histogram()[255]
    return 2 * area / max(1, area - inner) * 4 / math.pi


@lru_cache(maxsize=256)
def _threshold_table(level: int) -> list[int]:
    return [0] * level + [255] * (256 - level)


def _as_gray(img: Image.Image) -> Image.Image:
    if img.mode == "L":
        return img
    return _to_gray(img)


@lru_cache(maxsize=16)
def _border_mask(w: int, h: int) -> Image.Image:
    """255 on the outer ~5% frame (at least one pixel), 0 inside: the pixels that tell the background."""
    b = max(1, round(BORDER * min(w, h)))
    mask = Image.new("L", (w, h), 255)
    if w > 2 * b and h > 2 * b:
        mask.paste(0, (b, b, w - b, h - b))
    return mask


@lru_cache(maxsize=256)
def _ramp(top: int) -> list[int]:
    """0..top scaled linearly onto 0..255 (top + 1 entries)."""
    return [(k * 255 + top // 2) // top for k in range(top + 1)]


def _decide_invert(hist: list[int], invert: str) -> bool:
    if invert == "yes":
        return True
    if invert == "no":
        return False
    if invert != "auto":
        raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}, not {invert!r}")
    return 2 * sum(hist[128:]) > sum(hist)  # mostly light border: dark ink on light paper


def _median(hist: list[int]) -> int:
    cumulative = list(itertools.accumulate(hist))
    return bisect.bisect_left(cumulative, (cumulative[-1] + 1) // 2)


def _profiles(data: bytes, w: int, h: int) -> tuple[list[int], list[int]]:
    """Column and row sums of a row-major 8-bit image (byte slices sum in C)."""
    return [sum(data[j::w]) for j in range(w)], [sum(data[i * w : (i + 1) * w]) for i in range(h)]


def _centre(profile: list[int]) -> float:
    total = sum(profile)
    return sum(i * v for i, v in enumerate(profile)) / total if total else (len(profile) - 1) / 2


def _trim(crop: Image.Image, bbox: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Shrink ``bbox`` past the faint edges holding under TRIM of the ink each: a speck of dust far from the
    digit would otherwise make the box — and shrink the digit."""
    factor = -(-max(crop.size) // 256)  # profiles of a big crop from a reduced copy are plenty
    small = crop.reduce(factor) if factor > 1 else crop
    cols, rows = _profiles(small.tobytes(), *small.size)
    x0, x1 = _trim_range(cols)
    y0, y1 = _trim_range(rows)
    w, h = crop.size
    return bbox[0] + x0 * factor, bbox[1] + y0 * factor, bbox[0] + min(w, x1 * factor), bbox[1] + min(h, y1 * factor)


def _trim_range(profile: list[int]) -> tuple[int, int]:
    limit = TRIM * sum(profile)
    start, acc = 0, 0
    while start < len(profile) - 1 and acc + profile[start] <= limit:
        acc += profile[start]
        start += 1
    end, acc = len(profile), 0
    while end > start + 1 and acc + profile[end - 1] <= limit:
        acc += profile[end - 1]
        end -= 1
    return start, end


def _as_tensor(data: bytes, count: int | None = None) -> torch.Tensor:
    """28×28 uint8 tensor(s) from row-major bytes (one torch call for a whole batch: they cost microseconds each)."""
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return t.view(SIZE, SIZE) if count is None else t.view(count, SIZE, SIZE)


def load_digit(path: str | os.PathLike[str], *, preprocess_image: bool = True, invert: str = "auto") -> torch.Tensor:
    """The 28×28 uint8 tensor the network sees for the file at ``path``.

    ``preprocess_image=False`` (``--no-preprocess``) only resizes to 28×28, and still applies ``invert``.
    """
    return _as_tensor(_digit_bytes(path, preprocess_image, invert))


def _digit_bytes(path: str | os.PathLike[str], preprocess_image: bool, invert: str) -> bytes:
    img = load_image(path)
    if preprocess_image:
        return _preprocess_bytes(img, invert)
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if _decide_invert(img.histogram(_border_mask(SIZE, SIZE)), invert):  # the border of the 28x28 is enough
        img = ImageOps.invert(img)
    return img.tobytes()


# --------------------------------------------------------------------------------------------- predicting


@dataclass
class Prediction:
    index: int  # position in the input order
    path: str
    digit: int | None = None
    confidence: float | None = None
    probabilities: list[float] | None = None  # all ten, summing to 1
    pixels: torch.Tensor | None = None  # the 28x28 uint8 input the network saw (for a preview)
    error: str | None = None  # one-line reason when the file failed


_Loaded = tuple[int, str, "bytes | None", "str | None"]  # index, path, 784 pixel bytes, error

CHUNK = 32  # files per decoding task: big enough to amortise the pool's overhead, small enough to stream
MIN_BATCH = 128  # after the first results, run the network on at least this many images at a time


def _load_chunk(start: int, paths: Sequence[str], preprocess_image: bool, invert: str) -> list[_Loaded]:
    out: list[_Loaded] = []
    with _pillow_warnings:  # once per chunk rather than per file
        for i, path in enumerate(paths, start):
            try:
                out.append((i, path, _digit_bytes(path, preprocess_image, invert), None))
            except ImageError as exc:
                out.append((i, path, None, exc.message))
            except MemoryError:
                out.append((i, path, None, "not enough memory to decode the image"))
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
                out.append((i, path, None, f"cannot use this image ({type(exc).__name__}: {_first_line(exc)})"))
    return out


def predict_paths(
    paths: Sequence[str],
    model: torch.nn.Module,
    normalization: dict[str, float],
    device: torch.device,
    *,
    batch_size: int = 512,
    workers: int = 2,
    preprocess_image: bool = True,
    invert: str = "auto",
    keep_pixels: bool = False,
) -> Iterator[Prediction]:
    """One :class:`Prediction` per path, in input order, streamed as soon as each is known.

    Files are decoded and preprocessed by ``workers`` threads (Pillow releases the GIL while decoding), a
    bounded number of chunks ahead, while this thread runs the network on what is ready; ``workers=0``
    decodes in this thread. A file that fails yields a Prediction with ``error`` set.
    """
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}, not {invert!r}")
    mean, std = float(normalization["mean"]), float(normalization["std"])
    model.eval()
    batch_size = max(1, batch_size)
    chunk = max(1, min(CHUNK, batch_size))
    tasks = ((start, paths[start : start + chunk]) for start in range(0, len(paths), chunk))

    def run(ready: list[_Loaded]) -> Iterator[Prediction]:
        for start in range(0, len(ready), batch_size):
            yield from _infer(ready[start : start + batch_size], model, mean, std, device, keep_pixels)

    if workers <= 0:  # everything in this thread: the first chunk at once, then full batches
        ready: list[_Loaded] = []
        for start, part in tasks:
            ready.extend(_load_chunk(start, part, preprocess_image, invert))
            if start == 0 or len(ready) >= batch_size:
                yield from run(ready)
                ready = []
        yield from run(ready)
        return

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mnistctl-decode")
    in_flight: deque[Future[list[_Loaded]]] = deque()
    max_in_flight = 4 * workers  # enough to keep every thread busy; bounds memory for a million paths
    try:

        def refill() -> None:
            while len(in_flight) < max_in_flight:
                task = next(tasks, None)
                if task is None:
                    return
                in_flight.append(pool.submit(_load_chunk, *task, preprocess_image, invert))

        refill()
        ready = []
        min_batch = 1  # the first results go out as soon as the first chunk is decoded ...
        while in_flight:
            ready.extend(in_flight.popleft().result())
            refill()
            # Run the network on a full batch, at the end, or when the next chunk is not ready yet — then only
            # on a batch worth it (tiny batches cost the network a third more per image).
            waiting = bool(in_flight) and not in_flight[0].done()
            if len(ready) >= batch_size or not in_flight or (waiting and len(ready) >= min_batch):
                yield from run(ready)
                ready = []
                min_batch = min(batch_size, MIN_BATCH)  # ... the rest in batches worth running
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # also when the caller stops early


def share_cores(device: torch.device, workers: int | None, threads: int | None) -> int:
    """Split the CPU between decoding threads and torch's threads; return the number of decoding threads.

    Unless told otherwise, half the cores decode (at least one) and, when the network runs on the CPU too,
    torch gets the rest: torch's threads spin while they wait, so running as many of them as there are
    cores next to busy decoding threads makes both several times slower.
    """
    cores = torch.get_num_threads()  # torch's default: one per core this process may use
    if workers is None:
        workers = max(1, min(8, cores // 2))
    if device.type == "cpu" and threads is None and workers > 0:
        torch.set_num_threads(max(1, cores - workers))
    return workers


def _infer(
    loaded: list[_Loaded], model: torch.nn.Module, mean: float, std: float, device: torch.device, keep_pixels: bool
) -> Iterator[Prediction]:
    good = [item for item in loaded if item[2] is not None]
    results: dict[int, tuple[int, float, list[float], torch.Tensor | None]] = {}
    if good:
        x = _as_tensor(b"".join(item[2] for item in good), len(good))  # type: ignore[misc]
        with torch.inference_mode():
            batch = normalise(x, mean, std).to(device)
            probs = model(batch).float().softmax(1).cpu()
        confidence, digit = probs.max(1)
        rows = zip(good, digit.tolist(), confidence.tolist(), probs.tolist(), strict=True)
        for k, (item, d, c, p) in enumerate(rows):
            results[item[0]] = (d, c, p, x[k] if keep_pixels else None)
    for index, path, _, error in loaded:
        if error is not None:
            yield Prediction(index, path, error=error)
        else:
            yield Prediction(index, path, *results[index])


# --------------------------------------------------------------------------------------------- inputs


def expand_inputs(inputs: Sequence[str], recursive: bool) -> tuple[list[str], list[str]]:
    """The image files named by ``inputs``, and one problem line for each input that gave none.

    A file is taken as it is, whatever its suffix. A directory gives its image files (by suffix, any case),
    sorted, skipping hidden ones (e.g. macOS ``._x.png`` resource forks); subdirectories only with
    ``recursive``.
    """
    paths: list[str] = []
    problems: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if not raw:
            problems.append("no such file or directory: ''")
        elif p.is_dir():
            found, has_subdirs, error = _images_in(raw, recursive)
            if error:
                problems.append(f"cannot read directory {raw}: {error}")
            elif found:
                paths.extend(found)
            elif has_subdirs and not recursive:
                problems.append(f"no images in directory {raw} (add --recursive to search its subdirectories)")
            else:
                problems.append(f"no images in directory {raw}")
        elif p.exists():
            paths.append(raw)
        else:
            problems.append(f"no such file or directory: {raw}")
    return paths, problems


def _images_in(directory: str, recursive: bool) -> tuple[list[str], bool, str | None]:
    """(sorted image paths, whether there are subdirectories, error reading the top directory)."""
    found: list[tuple[tuple[str, ...], str]] = []
    has_subdirs = False
    errors: list[OSError] = []
    for root, dirs, files in os.walk(directory, onerror=errors.append):
        rel = os.path.relpath(root, directory)
        parts = () if rel == "." else tuple(Path(rel).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        has_subdirs = has_subdirs or bool(dirs)
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                found.append(((*parts, name), os.path.join(root, name)))
        if not recursive:
            break
    if not found and errors and os.path.normpath(errors[0].filename or "") == os.path.normpath(directory):
        return [], False, errors[0].strerror or str(errors[0])
    return [path for _, path in sorted(found)], has_subdirs, None
