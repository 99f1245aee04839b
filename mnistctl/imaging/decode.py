"""Decoding untrusted image files: any file Pillow reads → 8-bit grayscale (H×W uint8), upright, transparency
on white; everything that can go wrong is an :class:`ImageError` with a one-line reason.

A file is opened without following it into a FIFO or device (:func:`open_image_file`), decoded under Pillow's own
pixel limit (its decompression-bomb warning is an error here), and a huge JPEG is scaled down while decoding.
16-bit and float images are read by the range of their values. :mod:`mnistctl.imaging.sources` decodes the other
kinds of input (bytes, file objects, PIL images, arrays) with the same steps.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import os
import threading
import warnings
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from mnistctl.errors import MnistctlError, first_line
from mnistctl.fsutil import NotRegularFile, open_regular_fd

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"})
MIN_SIDE = 3  # smaller images have no border to tell the background from
IN_MEMORY_BYTES = 1 << 20  # smaller files are read in one call and decoded from memory (a fifth cheaper)

NOT_REGULAR = "not a regular file"
NOT_AN_IMAGE = "not an image file (or a format Pillow cannot read)"


class ImageError(MnistctlError):
    """A file that could not be used as a digit image; the message is a one-line reason."""


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


pillow_warnings = _PillowWarnings()  # held once per chunk of files by the reader, rather than once per file

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
    with open_image_file(os.fspath(path)) as fp:
        return decode(fp)


def decode(fp: BinaryIO) -> np.ndarray:
    """The image file that the seekable binary file ``fp`` holds (from where it stands) as :func:`load_image`
    returns it."""
    with pillow_warnings, _reasons(fp):
        im = _open(fp)  # not closed: it holds nothing but ``fp``, which the caller closes
        return checked_size(_upright_gray(im, in_place=True))


def from_pil(im: Image.Image) -> np.ndarray:
    """A PIL image the caller opened or made, by the same steps as a file: decoded (if it was only opened),
    upright by its EXIF orientation, alpha on white, 8-bit gray. ``im`` itself is not changed."""
    with pillow_warnings, _reasons(None):
        return checked_size(_upright_gray(im, in_place=False))


def _open(fp: BinaryIO) -> Image.Image:
    """The image in ``fp``, opened under Pillow's pixel limit (Image.MAX_IMAGE_PIXELS) — for a JPEG (or an MPO,
    a JPEG with more images after it: its first is read) applied to what it decodes to once told to decode
    reduced (:func:`_draft`), so that a 108-megapixel phone photo is read at half size rather than refused.
    Every other format goes through Image.open, whose check (an error here, nested images included) comes
    before anything is decoded."""
    start = fp.tell()
    if fp.read(3) != b"\xff\xd8\xff":
        fp.seek(start)
        return Image.open(fp)
    fp.seek(start)
    try:
        im = JpegImagePlugin.JpegImageFile(fp)  # the JPEG reader itself: its header read, nothing decoded
    except Exception:  # noqa: BLE001 - not a JPEG it can read: Image.open says why, as for any file
        fp.seek(start)
        return Image.open(fp)
    _draft(im)
    w, h = im.size
    if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
        raise _too_large(f"{w}x{h} pixels")
    return im


def checked_size(gray: np.ndarray) -> np.ndarray:
    """``gray``, unless it is too small to tell its background from its ink."""
    h, w = gray.shape
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ImageError(f"image too small ({w}x{h} pixels)")
    return gray


def open_image_file(path: str) -> BinaryIO:
    """The regular file at ``path``, opened for reading; a small one is read into memory at once (a fifth
    cheaper for Pillow than a file object, and os calls cost a third of ``open``'s).

    What is opened is what is checked (fstat on the open descriptor): no window for the path to change between
    the check and the read. Directories, FIFOs, sockets and devices (/dev/zero) are refused.
    """
    try:
        fd, info = open_regular_fd(path)
    except NotRegularFile as exc:
        raise ImageError("is a directory" if exc.is_directory else NOT_REGULAR) from None
    except OSError as exc:
        raise ImageError(_os_reason(exc)) from None
    handed_over = False
    try:
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
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long (over the system's limit: 255 bytes a name)"
    return f"cannot read the file ({exc.strerror or first_line(exc)})"


def _upright_gray(im: Image.Image, *, in_place: bool) -> np.ndarray:
    im.load()  # decode everything now, so a truncated file fails here and not later
    if _may_have_orientation(im):
        im = ImageOps.exif_transpose(im, in_place=in_place) or im
    return _to_gray(im)


@contextlib.contextmanager
def _reasons(fp: BinaryIO | None) -> Iterator[None]:
    """Whatever decoding raises becomes an :class:`ImageError` with a one-line reason (``fp``: the file being
    decoded, whose first bytes tell what it is; None for an image already opened)."""
    try:
        yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(_describe_size(fp) if fp is not None else "too many pixels") from None
    except UnidentifiedImageError:
        raise ImageError(_unidentified_reason(fp) if fp is not None else NOT_AN_IMAGE) from None
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
    """Let the JPEG decoder make gray pixels (a third of the work) and, for a photo over Pillow's pixel limit
    (a 108-megapixel phone camera's), scale it down by 2, 4 or 8 while decoding, to within the limit. Below the
    limit every pixel is kept: a small digit on a big page needs them."""
    w, h = im.size
    limit = Image.MAX_IMAGE_PIXELS or w * h
    scale = next((s for s in (1, 2, 4, 8) if (w // s) * (h // s) <= limit), 8)
    im.draft("L" if im.mode == "RGB" else None, (w // scale, h // scale))


def _to_gray(im: Image.Image) -> np.ndarray:
    """Any Pillow mode → H×W uint8; alpha is composited onto white (a transparent background is paper)."""
    mode = im.mode
    if mode.startswith("I;16"):
        return deep_to_8bit(np.asarray(im.convert("I")))
    if mode in ("I", "F"):
        return deep_to_8bit(np.asarray(im))
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


def deep_to_8bit(a: np.ndarray) -> np.ndarray:
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


def _too_large(size: str) -> ImageError:
    return ImageError(f"image too large ({size}; limit {round((Image.MAX_IMAGE_PIXELS or 0) / 1e6)} Mpx)")


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
