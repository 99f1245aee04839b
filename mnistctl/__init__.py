"""mnistctl: recognise handwritten digits — a command line, and the Python API it stands on.

>>> import mnistctl
>>> reader = mnistctl.load_reader()           # the bundled model
>>> reader.read_digit("digit.png").digit      # doctest: +SKIP
7

Importing this package is cheap: torch is imported when a reader is made. See docs/api.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# The public API, imported on first use (``mnistctl.load_reader`` ...), so that ``import mnistctl`` loads
# neither torch nor Pillow.
_EXPORTS = {
    "load_reader": "mnistctl.reader",
    "Reader": "mnistctl.reader",
    "DigitReading": "mnistctl.results",
    "NumberReading": "mnistctl.results",
    "ReadFailure": "mnistctl.results",
    "ModelMeta": "mnistctl.results",
    "MnistctlError": "mnistctl.errors",
    "UsageError": "mnistctl.errors",
    "ImageError": "mnistctl.imaging.decode",
}

__all__ = [
    "DigitReading",
    "ImageError",
    "MnistctlError",
    "ModelMeta",
    "NumberReading",
    "ReadFailure",
    "Reader",
    "UsageError",
    "__version__",
    "load_reader",
]

if TYPE_CHECKING:
    from mnistctl.errors import MnistctlError, UsageError
    from mnistctl.imaging.decode import ImageError
    from mnistctl.reader import Reader, load_reader
    from mnistctl.results import DigitReading, ModelMeta, NumberReading, ReadFailure


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mnistctl' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
