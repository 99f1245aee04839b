"""Every kind of image a caller may hand the reader, made into 8-bit grayscale (H×W uint8) by the steps a file
goes through (:mod:`mnistctl.imaging.decode`): a path, the bytes of a file, a binary file object, a PIL image, a
numpy array or a torch tensor. The same picture in any of these forms gives the same array.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from mnistctl.imaging.decode import ImageError, checked_size, decode, deep_to_8bit, from_pil, load_image

# What read_digit and its kin accept; torch tensors too (not named here, so that importing this costs no torch).
ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray

MAX_STREAM_BYTES = 256 << 20  # a file object that cannot seek is read into memory, up to this much


def to_gray(image: ImageInput | Any) -> np.ndarray:
    """``image`` as H×W uint8 gray. Raises :class:`ImageError` for what cannot be read as an image, with the
    reason; a TypeError for an object that is no kind of image at all."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode(io.BytesIO(bytes(image)))
    if isinstance(image, Image.Image):
        return from_pil(image)
    if isinstance(image, np.ndarray):
        return from_array(image)
    if _is_tensor(image):
        return from_array(_tensor_as_array(image))
    if isinstance(image, io.TextIOBase):
        raise TypeError("a text file was passed as an image: open it in binary mode ('rb')")
    if callable(getattr(image, "read", None)):
        return decode(_seekable(image))
    raise TypeError(
        f"cannot read a {type(image).__name__} as an image: pass a path, bytes, a binary file object, "
        "a PIL image, a numpy array or a torch tensor"
    )


def from_array(a: np.ndarray) -> np.ndarray:
    """An H×W or H×W×C array (C: 1 gray, 3 RGB, 4 RGBA) of uint8, bool, or floats in [0, 1] (fractions of white);
    deeper integer gray (uint16 ...) is read by the range of its values, as a 16-bit file is."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageError(f"an image array must be H×W or H×W×C with 1, 3 or 4 channels, not shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype.kind == "f":
        a = _fractions_to_8bit(a)
    elif a.dtype != np.uint8:
        if a.dtype.kind not in "iu" or a.ndim != 2:
            raise ImageError(f"cannot read an image array of {a.dtype}: pass uint8, or floats in [0, 1]")
        return checked_size(deep_to_8bit(a))
    if a.ndim == 3:
        return from_pil(Image.fromarray(np.ascontiguousarray(a)))  # RGB or RGBA, as a file of it would be read
    return checked_size(np.ascontiguousarray(a))


def _fractions_to_8bit(a: np.ndarray) -> np.ndarray:
    if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
        raise ImageError("a float image array must hold values from 0 (black) to 1 (white)")
    return np.rint(a * 255).astype(np.uint8)  # as a float file holding fractions is read


def _is_tensor(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "torch" and callable(getattr(obj, "numpy", None))


def _tensor_as_array(tensor: Any) -> np.ndarray:
    """A tensor as a numpy array, channels last: torch's C×H×W (1, 3 or 4 channels) is turned round."""
    a = tensor.detach().cpu().numpy()
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)
    return a


def _seekable(fp: Any) -> BinaryIO:
    """``fp`` if Pillow can seek in it, else its content read into memory (at most MAX_STREAM_BYTES)."""
    seekable = getattr(fp, "seekable", None)
    if callable(seekable) and seekable():
        return fp
    data = fp.read(MAX_STREAM_BYTES + 1)
    if not isinstance(data, bytes | bytearray):
        raise TypeError("the file object gave text, not bytes: open it in binary mode ('rb')")
    if len(data) > MAX_STREAM_BYTES:
        raise ImageError(f"image stream over {MAX_STREAM_BYTES >> 20} MB")
    return io.BytesIO(data)
