"""Reading a user's image of a digit, or of a number, and making each digit look like an MNIST digit.

Three steps, a module each: :mod:`~mnistctl.imaging.decode` turns an untrusted file into 8-bit grayscale
(:mod:`~mnistctl.imaging.sources` does the same for bytes, file objects, PIL images, arrays and tensors);
:mod:`~mnistctl.imaging.digit` makes one digit look like MNIST's (white on black, 20 px, centred by mass in
28×28); :mod:`~mnistctl.imaging.segment` finds the digits of a number written on one line.
"""

from mnistctl.imaging.decode import IMAGE_SUFFIXES, ImageError, image_format, load_image, pillow_warnings
from mnistctl.imaging.digit import INVERT_CHOICES, digit_input, preprocess, preprocess_and_measure, resize_only
from mnistctl.imaging.segment import Box, Digit, segment_digits
from mnistctl.imaging.sources import ImageInput, to_gray

__all__ = [
    "IMAGE_SUFFIXES",
    "INVERT_CHOICES",
    "Box",
    "Digit",
    "ImageError",
    "ImageInput",
    "digit_input",
    "image_format",
    "load_image",
    "pillow_warnings",
    "preprocess",
    "preprocess_and_measure",
    "resize_only",
    "segment_digits",
    "to_gray",
]
