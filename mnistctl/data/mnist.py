"""The four MNIST files: where they live, what they must hash to, and how they are read into tensors.

Importing this module is free; reading the IDX files imports torch (lazily).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mnistctl.errors import MnistctlError
from mnistctl.fsutil import NotRegularFile, open_regular

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch


@dataclass(frozen=True)
class MnistFile:
    """One of the four files: its name without ``.gz`` and the sha256/size of its decompressed content."""

    name: str
    sha256: str
    size: int

    @property
    def gz_name(self) -> str:
        return self.name + ".gz"


MNIST_FILES: tuple[MnistFile, ...] = (
    MnistFile("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
    MnistFile("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
    MnistFile("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
    MnistFile("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008),
)

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
REFETCH = "run `mnistctl download --force` to fetch it again"


def own_files_hint(them: str = "it") -> str:
    """The hint with MNISTCTL_VERIFY_DATA=0, where the files are the user's own: `download --force` alone would
    overwrite them, so it is offered only together with going back to MNIST's files."""
    return (
        f"fix or replace {them} yourself (MNISTCTL_VERIFY_DATA=0 reads your own files), or unset "
        "MNISTCTL_VERIFY_DATA and run `mnistctl download --force` to use MNIST's"
    )


def default_data_dir() -> Path:
    """``$MNISTCTL_DATA_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/mnistctl``."""
    env = os.environ.get("MNISTCTL_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mnistctl"


def resolve_data_dir(value: Path | None, *, create: bool = True) -> Path:
    """The data directory: ``--data-dir`` (or ``MNISTCTL_DATA_DIR``), else the default cache directory.

    A directory the user named may be created (``create``), but not its parents: a typo should not grow a tree.
    ``<dir>/MNIST/raw`` itself, where the files lie, means ``<dir>``.
    """
    if not value:
        return default_data_dir()
    path = value.expanduser()
    if path.parts[-2:] == ("MNIST", "raw"):  # the files' own folder was named: the data directory is above it
        path = path.parent.parent
    if create and not path.exists() and not path.parent.is_dir():
        state = "is not a directory" if path.parent.exists() else "does not exist"
        raise MnistctlError(
            f"cannot create the data directory {path}: its parent {path.parent} {state}",
            "create the parent first, or choose another --data-dir",
        )
    return path


def raw_dir(data_dir: str | os.PathLike[str]) -> Path:
    """``<data-dir>/MNIST/raw``: torchvision's layout, so ``torchvision.datasets.MNIST(data_dir)`` reads it."""
    return Path(data_dir).expanduser() / "MNIST" / "raw"


def spec(name: str, files: Sequence[MnistFile] | None = None) -> MnistFile:
    return next(f for f in files or MNIST_FILES if f.name == name)


# --------------------------------------------------------------------------------------------- checking


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as f:  # a name swapped for a FIFO after the caller's check does not block
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_valid(path: Path, file: MnistFile) -> bool:
    """True when ``path`` holds exactly the decompressed content ``file`` describes."""
    return file_state(path, file) == "present"


def file_state(path: Path, file: MnistFile) -> str:
    """ "present" (exactly MNIST's content), "corrupt" (something else) or "missing"."""
    try:
        if not path.is_file():
            return "missing"
        return "present" if path.stat().st_size == file.size and sha256_file(path) == file.sha256 else "corrupt"
    except OSError:
        return "corrupt"


@dataclass
class FileStatus:
    name: str
    path: str
    state: str  # present, corrupt or missing


def check_files(data_dir: str | os.PathLike[str], files: Sequence[MnistFile] | None = None) -> list[FileStatus]:
    """The state of each of ``files`` (MNIST's four unless told) in ``data_dir``: present, corrupt or missing."""
    rd = raw_dir(data_dir)
    return [FileStatus(f.name, str(rd / f.name), file_state(rd / f.name, f)) for f in files or MNIST_FILES]


def files_present(data_dir: str | os.PathLike[str], files: Sequence[MnistFile] | None = None) -> bool:
    """Whether all four decompressed files exist (their content is checked when they are read)."""
    rd = raw_dir(data_dir)
    return all((rd / f.name).is_file() for f in files or MNIST_FILES)


def verification_enabled() -> bool:
    """``MNISTCTL_VERIFY_DATA=0`` reads IDX files that are not MNIST's own (your digits in its format)
    without comparing them with MNIST's checksums; their structure is still checked."""
    return os.environ.get("MNISTCTL_VERIFY_DATA", "1").strip().lower() not in ("0", "no", "false", "off")


# --------------------------------------------------------------------------------------------- reading

_IDX_UBYTE = 0x08  # the only element type MNIST uses


def read_idx(
    path: str | os.PathLike[str], sha256: str | None = None, hint: str = REFETCH, max_inflated: int | None = None
) -> torch.Tensor:
    """Read an IDX file (optionally gzipped) into a uint8 tensor, validating magic, dimensions and length, and
    (given ``sha256``) that its decompressed content is exactly the expected one. ``hint``: what an error about
    the file's content tells the user to do. ``max_inflated``: the most bytes a gzipped file may inflate to (a
    few kB of gzip can inflate to gigabytes); a plain file is as large as it is on disk."""
    import torch

    path = Path(path)
    data = _read_bytes(path, hint, max_inflated, own=sha256 is None)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise MnistctlError(f"{path} is corrupt (its content is not MNIST's)", hint)
    if not data:
        raise MnistctlError(f"{path} is not an IDX file (wrong magic number: the file is empty, 0 bytes)", hint)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE or not 1 <= data[3] <= 4:
        raise MnistctlError(f"{path} is not an IDX file (wrong magic number {bytes(data[:4]).hex()})", hint)
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistctlError(f"{path} is truncated (its header is incomplete)", hint)
    dims = struct.unpack(f">{ndim}I", data[4:header])
    shape = "x".join(map(str, dims))
    count = 1
    for d in dims:
        count *= d
    if len(data) != header + count:
        state = "truncated" if len(data) < header + count else "longer than its header says"
        raise MnistctlError(f"{path} is {state}: {len(data) - header} data bytes for dimensions {shape}", hint)
    if count == 0:  # a header alone: nothing to train on or evaluate (and torch cannot view an empty buffer)
        raise MnistctlError(f"{path} holds no data (its dimensions are {shape})", hint)
    return torch.frombuffer(data, dtype=torch.uint8, count=count, offset=header).view(*dims)


def _read_bytes(path: Path, hint: str, max_inflated: int | None = None, own: bool = True) -> bytearray:
    try:  # a FIFO or a device (/dev/zero) is refused instead of blocking or never ending
        with open_regular(path) as f:
            if f.read(2) != b"\x1f\x8b":
                f.seek(0)
                return bytearray(f.read())
            f.seek(0)
            return _inflate(f, path, hint, max_inflated, own)
    except NotRegularFile as exc:
        if exc.is_directory:
            raise MnistctlError(f"{path} is a directory, not an IDX file", "check the path") from None
        raise MnistctlError(
            f"{path} is not a regular file (a FIFO or a device)", "replace it with the IDX file"
        ) from None
    except FileNotFoundError as exc:
        raise MnistctlError(f"{path} does not exist", "run `mnistctl download` first") from exc
    except IsADirectoryError as exc:
        raise MnistctlError(f"{path} is a directory, not an IDX file", "check the path") from exc
    except OSError as exc:
        raise MnistctlError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from exc


def _inflate(f: BinaryIO, path: Path, hint: str, limit: int | None, own: bool) -> bytearray:
    """The gzipped content of ``f``, read only up to ``limit`` bytes (and one more, to see that it goes on).
    ``own``: the file is not checked against MNIST's checksum (the user's own), so a larger one may be meant."""
    try:
        data = bytearray(gzip.GzipFile(fileobj=f).read(-1 if limit is None else limit + 1))
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise MnistctlError(f"{path} is a damaged gzip file ({exc})", hint) from exc
    if limit is not None and len(data) > limit:
        raise MnistctlError(
            f"{path} inflates to more than {limit:,} bytes, the size of MNIST's {path.name} (a gzip bomb, or not "
            "that file)",
            f"store it decompressed (a plain IDX file may be of any size), or {hint}" if own else hint,
        )
    return data


@dataclass
class MnistData:
    """The four MNIST arrays as read from disk: uint8 N×28×28 images, int64 labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_mnist(data_dir: str | os.PathLike[str], files: Sequence[MnistFile] | None = None) -> MnistData:
    return MnistData(*load_split(data_dir, "train", files), *load_split(data_dir, "test", files))


def load_split(
    data_dir: str | os.PathLike[str], split: str, files: Sequence[MnistFile] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N×28×28 uint8) and labels (N int64) of ``split`` ("train" or "test"), checked for consistency
    against ``files`` (the checksums and sizes of MNIST's four unless told)."""
    rd = raw_dir(data_dir)
    image, label = (spec(name, files) for name in SPLIT_FILES[split])
    image_name, label_name = image.name, label.name
    verify = verification_enabled()
    hint = REFETCH if verify else own_files_hint()
    # Inflated, a file may be at most MNIST's own size: with the checksum checked it must be exactly that; without
    # it (your own files), it is what bounds the memory a gzip bomb could take.
    images = read_idx(rd / image_name, image.sha256 if verify else None, hint, image.size)
    labels = read_idx(rd / label_name, label.sha256 if verify else None, hint, label.size)
    fix = "run `mnistctl download --force` to fetch the files again" if verify else own_files_hint("them")
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise MnistctlError(f"{rd / image_name} does not hold 28x28 images (its shape is {tuple(images.shape)})", fix)
    if labels.dim() != 1:
        raise MnistctlError(f"{rd / label_name} does not hold labels (its shape is {tuple(labels.shape)})", fix)
    if len(images) != len(labels):
        raise MnistctlError(
            f"{rd / image_name} has {len(images)} images but {rd / label_name} has {len(labels)} labels", fix
        )
    if len(labels) and int(labels.max()) > 9:
        raise MnistctlError(f"{rd / label_name} holds labels above 9, so it is not an MNIST label file", fix)
    return images, labels.long()


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The one input transform: uint8 N×28×28 (or N×1×28×28) → float N×1×28×28 in the network's input scale."""
    x = images.float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return (x / 255.0 - mean) / std
