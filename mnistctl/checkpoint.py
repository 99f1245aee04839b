"""Checkpoints: what they hold, how they are written and read, and when a run may write or resume one.

A checkpoint is a dict of tensors and plain values (:func:`make_checkpoint`), saved atomically and loaded only
through ``torch.load(..., weights_only=True)``, once the file is known to be a regular file whose zip archive
inflates to a bounded size (:func:`open_archive`); :mod:`mnistctl.checkfile` then checks what it holds. It
carries a sha256 of its weights and of what decides its network, checked on every load, so a damaged file is an
error rather than slightly different answers. A plain state_dict of the original project's ``DigitClassifier``
(its ``digit_model.pt``) loads too, as architecture ``seed``, and one of mnistctl's own networks as that network.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import stat
import struct
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mnistctl.checkfile import (  # noqa: F401 - FORMAT, VERSION, make_checkpoint, weights_digest: re-exported
    FORMAT,
    VERSION,
    check_resumable,
    make_checkpoint,
    validate,
    weights_digest,
)
from mnistctl.config import TrainConfig
from mnistctl.errors import MnistctlError, UsageError, first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

RETRAIN = "train one with `mnistctl train`, or pass another with -m/--model"

# What reading a file may cost. The largest network models.py's bounds allow needs about 120 MB with its training
# state; the files `mnistctl train` writes hold under 2 MB, their pickle a few kB.
MAX_UNPACKED = 256 << 20  # bytes: the file, and its zip records once inflated, together
MAX_PICKLE = 4 << 20  # bytes of pickle: one opcode byte can make an object many times its size
MAX_RECORDS = 10_000  # zip records: one per tensor storage, and a few more
MAX_RATIO = 100  # deflate gains little on weights: a big record inflating more than this is a decompression bomb
LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # how torch.save's format before 1.6 begins


def default_model_path() -> Path:
    """``$MNISTCTL_MODEL``, else ``digit_model.pt`` in the working directory, as in the original project."""
    return Path(os.environ.get("MNISTCTL_MODEL") or "digit_model.pt").expanduser()


def bundled_model_path() -> Path:
    """The model that ships inside the package (trained by `bench/bundle.py` with the CPU default recipe)."""
    from importlib.resources import files

    return Path(str(files("mnistctl") / "weights" / "digit_model.pt"))


def find_model(explicit: Path | None) -> tuple[Path, str]:
    """The checkpoint ``eval`` and ``predict`` read, and where the choice came from: ``-m`` ("option"), else
    ``$MNISTCTL_MODEL`` ("$MNISTCTL_MODEL"), else ``./digit_model.pt`` if it exists, else the model bundled with
    mnistctl. A model named explicitly (option or variable) is used as named: if it is missing, loading it says
    so, rather than another model answering in its place."""
    if explicit is not None:  # loading it probes it (open_archive): every reason it cannot be read is one line
        return explicit.expanduser(), "option"
    env = os.environ.get("MNISTCTL_MODEL")
    if env:
        path = Path(env).expanduser()
        unset = "unset MNISTCTL_MODEL to use ./digit_model.pt or the bundled model"
        if not _exists(path, "$MNISTCTL_MODEL", f"fix the path, or {unset}"):
            raise MnistctlError(
                f"$MNISTCTL_MODEL names {path}, which does not exist", f"train it with `mnistctl train`, or {unset}"
            )
        return path, "$MNISTCTL_MODEL"
    if _exists(Path("digit_model.pt"), "the default model", "pass a model with -m"):
        return Path("digit_model.pt"), "./digit_model.pt"
    bundled = bundled_model_path()
    if not bundled.is_file():
        raise MnistctlError(
            "no model found: no -m, $MNISTCTL_MODEL or ./digit_model.pt, and this installation has no bundled model",
            "train one with `mnistctl train`, or pass one with -m",
        )
    return bundled, "the bundled model"


def _exists(path: Path, what: str, hint: str) -> bool:
    """Whether ``path`` (from ``what``) names something. ``Path.exists`` raises where the system cannot look the
    name up at all — a name over 255 bytes, a directory on the way that may not be searched, a loop of links:
    that is one line saying so, not an unexpected OSError."""
    try:
        return path.exists()
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror or str(exc)
        raise MnistctlError(f"cannot look up {path} ({what}): {reason}", hint) from exc


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to a temporary file beside ``path`` and move it into place: ``path`` holds the old
    file or the whole new one, never part of either. It is serialised in memory first, so that the file is
    written by Python, whose errors say why (a full disk), not by torch's writer, which does not. It is written
    into the very file :func:`~mnistctl.fsutil.atomic_file` created, never reopened by name, and is on disk
    (fsynced) before it replaces the old file."""
    import torch

    from mnistctl.fsutil import atomic_file

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic_file(path) as f:
        f.write(buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike[str], hint: str = RETRAIN) -> dict[str, Any]:
    """Load and validate a checkpoint (:mod:`mnistctl.checkfile`); a plain state_dict of one of mnistctl's
    networks, such as the original project's ``digit_model.pt``, is wrapped into one.

    Everything that can go wrong — missing, not a regular file, empty, truncated, damaged, too big to inflate, a
    pickle that would run code, a network mnistctl does not know or will not build, NaN weights, a malformed
    entry — becomes a one-line :class:`MnistctlError` that names the file.
    """
    path = Path(path)
    with open_archive(path, hint) as f:
        obj = _torch_load(f, path, hint)
    return validate(obj, path, hint)


def _torch_load(f: IO[bytes], path: Path, hint: str) -> Any:
    import torch

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": our error says it better
            warnings.simplefilter("ignore")
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know: those are what can run code when unpickled.
        if "global" in str(exc).lower():
            raise refusing_code(path) from exc
        raise MnistctlError(f"{path} is not a PyTorch checkpoint", hint) from exc
    except Exception as exc:  # noqa: BLE001 - a hostile archive can fail torch's reader in any way: all mean unreadable
        raise MnistctlError(f"{path} is not a readable PyTorch checkpoint ({first_line(exc, 200)})", hint) from exc


def open_archive(path: Path, hint: str) -> IO[bytes]:
    """``path`` opened for ``torch.load``, once it is known to be a regular file holding a zip archive that
    inflates to at most :data:`MAX_UNPACKED` bytes; else a one-line error that says what it is instead."""
    try:  # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _unreadable(exc, path, hint) from exc
    try:
        _check_file(fd, path, hint)
    except BaseException:
        os.close(fd)
        raise
    f = os.fdopen(fd, "rb")
    try:
        _check_zip(f, path, hint)
    except BaseException:
        f.close()
        raise
    f.seek(0)
    return f


def _unreadable(exc: OSError, path: Path, hint: str) -> MnistctlError:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return MnistctlError(f"model file {path} does not exist", hint)
    if isinstance(exc, IsADirectoryError):
        return MnistctlError(f"model path {path} is a directory", "pass the checkpoint file itself")
    if isinstance(exc, PermissionError):
        return MnistctlError(f"cannot read {path}: permission denied", "check its permissions, or pass another file")
    return MnistctlError(f"cannot read {path}: {exc.strerror or exc}", hint)


def _check_file(fd: int, path: Path, hint: str) -> None:
    mode, size = (st := os.fstat(fd)).st_mode, st.st_size
    if stat.S_ISDIR(mode):
        raise MnistctlError(f"model path {path} is a directory", "pass the checkpoint file itself")
    # A size of 0 with content: a file the kernel makes up as it is read (/proc, /sys), not a stored one.
    if not stat.S_ISREG(mode) or (size == 0 and os.read(fd, 1)):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else None
        what = kind or ("a socket" if stat.S_ISSOCK(mode) else "a file the kernel makes up as it is read")
        raise MnistctlError(
            f"model file {path} is not a regular file ({what})", "pass a checkpoint file written by `mnistctl train`"
        )
    if size == 0:
        raise MnistctlError(f"model file {path} is empty", hint)
    if size > MAX_UNPACKED:
        raise MnistctlError(f"refusing to load {path}: it is {size >> 20:,} MB, more than any checkpoint", hint)


def _check_zip(f: IO[bytes], path: Path, hint: str) -> None:
    if f.read(4) != b"PK\x03\x04":
        raise _not_a_zip(f, path, hint)
    f.seek(0)
    try:
        end = zipfile._EndRecData(f)  # noqa: SLF001 - the stdlib's own reader of the zip's last record
        if end is None:
            raise zipfile.BadZipFile("its end record is missing")
        records = end[zipfile._ECD_ENTRIES_TOTAL]  # noqa: SLF001
        if records > MAX_RECORDS:  # checked before zipfile makes an object for each
            raise MnistctlError(
                f"refusing to load {path}: it holds {records:,} records, more than any checkpoint", hint
            )
        with zipfile.ZipFile(f) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        detail = first_line(exc, 120)
        raise MnistctlError(
            f"{path} is not a readable PyTorch checkpoint (truncated or damaged: {detail})", hint
        ) from exc
    problem = _archive_problem(infos)
    if problem:
        raise MnistctlError(f"refusing to load {path}: {problem}", hint)


def _archive_problem(infos: list[zipfile.ZipInfo]) -> str | None:
    """Why reading these records would cost more than any checkpoint may (the sizes are the archive's own word:
    torch's reader allocates what a record declares and fails if it inflates to more)."""
    total = sum(info.file_size for info in infos)
    if total > MAX_UNPACKED:
        return f"it would inflate to {total >> 20:,} MB, more than any checkpoint ({MAX_UNPACKED >> 20} MB)"
    for info in infos:
        ratio = info.file_size / max(1, info.compress_size)
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1 << 20 and ratio > MAX_RATIO:
            return f"its record {info.filename[:60]!r} would inflate {ratio:,.0f}-fold (a decompression bomb)"
        if info.filename.endswith(".pkl") and info.file_size > MAX_PICKLE:
            return f"its pickle is {info.file_size >> 20:,} MB, more than any checkpoint's ({MAX_PICKLE >> 20} MB)"
    return None


def _not_a_zip(f: IO[bytes], path: Path, hint: str) -> MnistctlError:
    f.seek(0)
    if f.read(len(LEGACY_MAGIC)) == LEGACY_MAGIC:  # its loader allocates whatever sizes the file declares
        return MnistctlError(
            f"{path} is in PyTorch's format from before 1.6, which mnistctl does not read",
            "load it with a PyTorch you trust and save it again with torch.save",
        )
    f.seek(0)
    if pickle_calls_code(f):
        return refusing_code(path)
    return MnistctlError(f"{path} is not a PyTorch checkpoint", hint)


CALLS = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def pickle_calls_code(f: IO[bytes]) -> bool:
    """Whether ``f`` is a plain pickle, whole, that imports or calls something when loaded (read, never run)."""
    import pickletools

    ops = set()
    try:
        for op, _, position in pickletools.genops(f):  # up to its STOP; an error if it has none
            if position > MAX_PICKLE:
                return False
            ops.add(op.name)
    except Exception:  # noqa: BLE001 - not a pickle at all: it calls nothing
        return False
    return bool(ops & CALLS)


def refusing_code(path: Path) -> MnistctlError:
    return MnistctlError(
        f"refusing to load {path}: loading it would run the Python code or objects it holds",
        "only load checkpoints you trust; mnistctl loads weights only (train one with `mnistctl train`)",
    )


def build_model(checkpoint: dict[str, Any], device: torch.device | None = None, precision: str = "fp32") -> nn.Module:
    """The network a checkpoint describes, for inference: its weights loaded (shapes checked), in eval mode,
    in the memory layout it was trained in, on ``device``, running in ``precision``."""
    import torch

    from mnistctl.engine import in_precision
    from mnistctl.models import get_architecture

    model = get_architecture(checkpoint["arch"]).build(**checkpoint.get("arch_config", {}))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise MnistctlError(
            f"the weights do not fit architecture {checkpoint['arch']!r} ({first_line(exc, 200)})",
            "the checkpoint is damaged or was edited; train a new one",
        ) from exc
    if checkpoint["config"].get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    device = device or torch.device("cpu")
    return in_precision(model.to(device).eval(), precision, device)


@contextlib.contextmanager
def training_run(
    path: Path, requested: TrainConfig, *, resume: bool, force: bool, device_kind: str = "cpu", writer: bool = True
) -> Iterator[tuple[TrainConfig, dict[str, Any] | None]]:
    """Own ``path`` for a training run: yield the config to train and the checkpoint to resume (or None).

    The writer (rank 0 under torchrun) checks that ``path`` can be written and holds an exclusive lock on it
    for the whole run, so a second run with the same ``-o`` stops at once instead of overwriting this one's
    checkpoints. A new run may replace ``path`` only if it is absent (or with ``force``); ``resume`` continues it
    (:func:`resume_config`).
    """
    from mnistctl.fsutil import check_writable, exclusive_lock

    if writer:
        check_writable(path)
    lock = exclusive_lock(path.with_name(f".{path.name}.lock"), wait=False, what=str(path))
    with lock if writer else contextlib.nullcontext():
        if resume:
            checkpoint = load_checkpoint(path, hint="pass the run's checkpoint with -o, or start a new run")
            yield resume_config(checkpoint, path, requested), checkpoint
            return
        if writer and not force:
            check_overwrite(path, requested.arch_for(device_kind))
        yield requested, None


def check_overwrite(path: Path, arch: str) -> None:
    """A new run may replace ``path`` only if it is absent (or with ``--force``): a trained model is never lost to
    a typo or a forgotten ``-o``. A file that is there but does not load is named with the reason it does not
    (a newer format, a damaged file, not a checkpoint at all): that reason may be a reason to keep it."""
    if not _exists(path, "-o", "choose another -o path"):
        return
    try:
        checkpoint = load_checkpoint(path)
    except MnistctlError as exc:
        raise MnistctlError(
            f"{path} exists and does not load as a checkpoint ({_reason(exc.message, path)})",
            "pass --force to overwrite it, or write elsewhere with -o",
        ) from None
    existing, done, planned = checkpoint["arch"], checkpoint["epoch"], checkpoint["config"].get("epochs")
    resumable = checkpoint.get("optimizer") is not None
    if resumable and planned and done < planned:
        raise MnistctlError(
            f"{path} holds an unfinished run ({done} of {planned} epochs)",
            "continue it with --resume, or pass --force to start over",
        )
    accuracy = checkpoint.get("metrics", {}).get("test_accuracy")
    held = f"a trained {existing!r} model ({done} epoch(s)" + (f", {accuracy:.2%}" if accuracy else "") + ")"
    extend = f"train it further with `--resume --epochs {done + 10}`, " if resumable and existing == arch else ""
    raise MnistctlError(
        f"{path} already holds {held}", f"{extend}write elsewhere with -o, or pass --force to replace it"
    )


def _reason(message: str, path: Path) -> str:
    """load_checkpoint's message about ``path`` without the path, as a parenthesis in a line that names it."""
    for prefix in (f"model file {path} ", f"model path {path} ", f"refusing to load {path}: ", f"{path} "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


# Options that change how a run is computed, not what it learns: a resumed run may set them anew. Precision is
# one: left out, it is the (new) device's default, so a run started on a GPU in bf16 goes on in fp32 on an
# AVX2 CPU rather than in emulated bf16.
SPEED_ONLY = ("compile", "channels_last", "precision")


def resume_config(checkpoint: dict[str, Any], path: Path, requested: TrainConfig) -> TrainConfig:
    """The configuration to continue ``checkpoint`` with: the one it was trained with, with a new ``epochs``
    total if one was asked for. Any other option given (not ``None``) that differs from the run's is refused."""
    if checkpoint.get("optimizer") is None:
        raise MnistctlError(f"{path} holds weights only, no training state to resume", "train without --resume")
    stored = TrainConfig.from_dict(checkpoint["config"])
    check_resumable(checkpoint, path, stored)
    conflicts = [
        f"{_flag(name, value)} (the run has {getattr(stored, name)!r})"
        for name, value in vars(requested).items()
        if name not in ("epochs", *SPEED_ONLY) and value is not None and value != getattr(stored, name)
    ]
    if conflicts:
        raise UsageError(
            f"--resume continues {path} with the settings it was trained with; these options differ: "
            + ", ".join(conflicts),
            "leave them out, or start a new run (another -o, or --force)",
        )
    done = int(checkpoint["epoch"])
    epochs = requested.epochs or stored.epochs
    if epochs <= done:
        state = f"already finished all {done} epochs" if done >= stored.epochs else f"has trained {done} epochs"
        raise MnistctlError(f"{path} {state}", f"pass --epochs N, N above {done}, to train it further")
    speed = {name: getattr(requested, name) for name in SPEED_ONLY}
    return TrainConfig.from_dict({**vars(stored), "epochs": epochs, **speed})


def _flag(name: str, value: Any) -> str:
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return option if value else option.replace("--", "--no-", 1)
    return f"{option} {value}"
