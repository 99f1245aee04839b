"""Checkpoints: where they live by default, and (later) saving and loading them safely."""

from __future__ import annotations

import os
from pathlib import Path


def default_model_path() -> Path:
    """``$MNISTCTL_MODEL``, else ``digit_model.pt`` in the working directory, as in the original project."""
    return Path(os.environ.get("MNISTCTL_MODEL") or "digit_model.pt").expanduser()
