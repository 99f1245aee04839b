"""Running a network on many users' image files (``mnistctl predict``), and finding those files.

:func:`predict_paths` streams one :class:`Prediction` per file in input order: threads decode and preprocess
the files (:mod:`mnistctl.imaging`) a bounded number of chunks ahead, while the calling thread runs the network
on batches of what is ready; with ``multi`` each file is a number, read digit by digit. :func:`expand_inputs`
turns the command line's files and directories into the list of files; :func:`read_path_list` reads paths
from stdin.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from PIL import Image

from mnistctl.data.mnist import normalise
from mnistctl.errors import UsageError, first_line
from mnistctl.imaging import (
    IMAGE_SUFFIXES,
    INVERT_CHOICES,
    Box,
    ImageError,
    image_format,
    load_digit,
    load_image,
    pillow_warnings,
    segment_digits,
)

# --------------------------------------------------------------------------------------------- predicting


@dataclass
class DigitReading:
    """One digit of a number (``predict_paths(..., multi=True)``)."""

    box: Box  # (x0, y0, x1, y1) in the image's pixels, x1 and y1 exclusive
    digit: int
    confidence: float
    probabilities: list[float]  # all ten, summing to 1
    pixels: np.ndarray | None = None  # the 28x28 uint8 input the network saw (with keep_pixels)


@dataclass
class Prediction:
    index: int  # position in the input order
    path: str
    digit: int | None = None  # None for a number (multi): see digits and number
    confidence: float | None = None  # for a number, its least confident digit's
    probabilities: list[float] | None = None  # all ten, summing to 1
    pixels: np.ndarray | None = None  # the 28x28 uint8 input the network saw (for a preview)
    error: str | None = None  # one-line reason when the file failed
    digits: list[DigitReading] | None = None  # multi: each digit, left to right
    number: str | None = None  # multi: the digits read, as one string


class _Loaded(NamedTuple):
    index: int  # position in the input order
    path: str
    pixels: list[np.ndarray]  # the network's 28x28 inputs: one, or one per digit of a number
    boxes: list[Box] | None  # multi: where each digit is
    error: str | None  # one-line reason when the file failed


CHUNK = 32  # files per decoding task: big enough to amortise the pool's overhead, small enough to stream
AHEAD = 1024  # files handed to the decoding threads and not yet taken back: two batches, one decodes while one runs
MAX_WAIT = 0.1  # seconds to wait for the next chunk before running the network on a partial batch


def _load_chunk(
    start: int, paths: Sequence[str], preprocess_image: bool, invert: str, multi: bool, stop: threading.Event
) -> list[_Loaded]:
    """Decode ``paths`` (numbered from ``start``); stop early, after the file in hand, once ``stop`` is set."""
    out: list[_Loaded] = []
    with pillow_warnings:  # once per chunk rather than per file
        for i, path in enumerate(paths, start):
            if stop.is_set():
                break
            try:
                if multi:
                    digits = segment_digits(load_image(path), invert)
                    out.append(_Loaded(i, path, [d.pixels for d in digits], [d.box for d in digits], None))
                else:
                    pixels = load_digit(path, preprocess_image=preprocess_image, invert=invert)
                    out.append(_Loaded(i, path, [pixels], None, None))
            except ImageError as exc:
                out.append(_Loaded(i, path, [], None, exc.message))
            except MemoryError:
                out.append(_Loaded(i, path, [], None, "not enough memory to decode the image"))
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
                reason = f"cannot use this image ({type(exc).__name__}: {first_line(exc)})"
                out.append(_Loaded(i, path, [], None, reason))
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
    multi: bool = False,
) -> Iterator[Prediction]:
    """One :class:`Prediction` per path, in input order, streamed as soon as each is known.

    Files are decoded and preprocessed by ``workers`` threads, a bounded number of chunks ahead, while this
    thread runs the network on what is ready; ``workers=0`` decodes in this thread. A file that fails yields a
    Prediction with ``error`` set. Closing the generator (or an exception in it, such as Ctrl-C's
    KeyboardInterrupt) stops the threads after the file each has in hand, without waiting for them.

    ``multi``: each image holds a number. Its digits are found (:func:`~mnistctl.imaging.segment_digits`) and
    go through the network in the same batch as the other images' digits; the Prediction has ``digits`` and
    ``number``, ``confidence`` is the least confident digit's, and ``digit`` is None.
    """
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}, not {invert!r}")
    if multi and not preprocess_image:  # checked now, not when the first prediction is asked for
        raise UsageError("--multi needs the preprocessing that finds each digit", "leave out --no-preprocess")
    return _stream(
        paths, model, normalization, device, batch_size, workers, preprocess_image, invert, keep_pixels, multi
    )


def _stream(
    paths: Sequence[str],
    model: torch.nn.Module,
    normalization: dict[str, float],
    device: torch.device,
    batch_size: int,
    workers: int,
    preprocess_image: bool,
    invert: str,
    keep_pixels: bool,
    multi: bool,
) -> Generator[Prediction, None, None]:
    mean, std = float(normalization["mean"]), float(normalization["std"])
    model.eval()
    batch_size = max(1, batch_size)
    load = functools.partial(_load_chunk, preprocess_image=preprocess_image, invert=invert, multi=multi)

    def run(ready: list[_Loaded]) -> Iterator[Prediction]:
        for batch in _batches(ready, batch_size):
            yield from _infer(batch, model, mean, std, device, keep_pixels)

    ready: list[_Loaded] = []
    first = True
    with contextlib.closing(_decoded_chunks(paths, min(CHUNK, batch_size), workers, load, MAX_WAIT)) as chunks:
        for chunk in chunks:  # None: the next chunk was not decoded within MAX_WAIT
            ready.extend(chunk or ())
            # Run the network on the first results at once, then on full batches (small ones cost it a third
            # more per image), or on what is ready when the next chunk is slow to decode.
            if ready and (first or chunk is None or len(ready) >= batch_size):
                yield from run(ready)
                ready, first = [], False
    yield from run(ready)


def _decoded_chunks(
    paths: Sequence[str], chunk: int, workers: int, load: Callable[..., list[_Loaded]], patience: float
) -> Generator[list[_Loaded] | None, None, None]:
    """``load(start, paths[start : start + chunk], stop=event)`` for each chunk, in order.

    In ``workers`` threads, at most :data:`AHEAD` files (or one chunk a worker) ahead of the caller, which bounds
    the memory for a million paths; with None in between whenever the next chunk is not decoded within
    ``patience`` seconds. With no workers, in this thread.
    """
    tasks = ((start, paths[start : start + chunk]) for start in range(0, len(paths), chunk))
    stop = threading.Event()
    if workers <= 0:
        for task in tasks:
            yield load(*task, stop=stop)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mnistctl-decode")
    in_flight: deque[Future[list[_Loaded]]] = deque()
    max_in_flight = max(workers, AHEAD // chunk)  # chunks
    try:
        while True:
            while len(in_flight) < max_in_flight and (task := next(tasks, None)) is not None:
                in_flight.append(pool.submit(load, *task, stop=stop))
            if not in_flight:
                return
            if wait([in_flight[0]], timeout=patience).not_done:
                yield None
            else:
                yield in_flight.popleft().result()
    finally:
        # Also when the caller stops early or Ctrl-C interrupts: the threads leave their chunks after the file in
        # hand, and nobody waits for them (interpreter exit joins them, so none may run on for long).
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


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


def _batches(ready: list[_Loaded], size: int) -> Iterator[list[_Loaded]]:
    """``ready`` in runs of about ``size`` network inputs; the digits of one number stay together."""
    batch: list[_Loaded] = []
    inputs = 0
    for item in ready:
        batch.append(item)
        inputs += len(item.pixels)
        if inputs >= size:
            yield batch
            batch, inputs = [], 0
    if batch:
        yield batch


def _infer(
    loaded: list[_Loaded], model: torch.nn.Module, mean: float, std: float, device: torch.device, keep_pixels: bool
) -> Iterator[Prediction]:
    """Run the network once on every input of ``loaded`` (all the digits of all its images); a Prediction each."""
    inputs = [pixels for item in loaded for pixels in item.pixels]
    readings: Iterator[tuple[int, float, list[float]]] = iter(())
    if inputs:
        x = torch.from_numpy(np.stack(inputs))
        with torch.inference_mode():
            probs = model(normalise(x, mean, std).to(device)).float().softmax(1).cpu()
        confidence, digit = probs.max(1)
        readings = zip(digit.tolist(), confidence.tolist(), probs.tolist(), strict=True)
    for item in loaded:
        if item.error is not None:
            yield Prediction(item.index, item.path, error=item.error)
        elif item.boxes is None:
            yield Prediction(item.index, item.path, *next(readings), item.pixels[0] if keep_pixels else None)
        else:
            digits = [
                DigitReading(box, *next(readings), pixels if keep_pixels else None)
                for box, pixels in zip(item.boxes, item.pixels, strict=True)
            ]
            number = "".join(str(d.digit) for d in digits)
            confidence_ = min(d.confidence for d in digits)
            yield Prediction(item.index, item.path, confidence=confidence_, digits=digits, number=number)


# --------------------------------------------------------------------------------------------- inputs


class InputProblem(NamedTuple):
    """An input that gave no image to read: its path, what is wrong, and what to do (or what became of it)."""

    path: str
    problem: str
    hint: str = "check the path"


def expand_inputs(inputs: Sequence[str], recursive: bool) -> tuple[list[str], list[InputProblem]]:
    """The image files named by ``inputs``, and a problem for each input that gave none and each directory that
    could not be read (with ``recursive``, a subdirectory's images are skipped, and said to be).

    A file is taken as it is, whatever its suffix; so is a path that cannot even be looked at (a name too long,
    a directory on the way that may not be searched): reading it fails with its reason, in its place among the
    others. A directory gives its image files (by suffix, any case), sorted, skipping hidden ones (e.g. macOS
    ``._x.png`` resource forks); subdirectories only with ``recursive``.
    """
    paths: list[str] = []
    problems: list[InputProblem] = []
    for raw in inputs:
        kind = _kind(raw)
        if kind is None:
            problems.append(InputProblem(raw, "no such file or directory"))
        elif kind == "directory":
            found, has_subdirs, unreadable = _images_in(raw, recursive)
            problems.extend(_unreadable(raw, unreadable))
            if found:
                paths.extend(found)
            elif not unreadable:  # (one that could not be read is said above)
                problem = InputProblem(raw, "no images in the directory")
                if has_subdirs and not recursive:
                    problem = problem._replace(hint="add --recursive to search its subdirectories")
                problems.append(problem)
        else:
            paths.append(raw)
    return paths, problems


def _kind(path: str) -> str | None:
    """What is at ``path``: "directory", "other" (a file, or a path stat cannot look at: reading it will say
    why), or None for nothing."""
    try:
        return "directory" if stat.S_ISDIR(os.stat(path).st_mode) else "other"
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the name, or ""
        return None
    except OSError:
        return "other"


def _unreadable(directory: str, errors: list[OSError]) -> Iterator[InputProblem]:
    """A problem for each directory os.walk could not read, below ``directory`` or ``directory`` itself."""
    for exc in errors:
        where = os.fsdecode(exc.filename) if exc.filename is not None else directory
        top = os.path.normpath(where) == os.path.normpath(directory)
        reason = (exc.strerror or type(exc).__name__).lower()
        yield InputProblem(
            where, f"cannot read the directory ({reason})", "check the path" if top else "its images were skipped"
        )


def _images_in(directory: str, recursive: bool) -> tuple[list[str], bool, list[OSError]]:
    """(sorted image paths, whether there are subdirectories, the errors of the directories that could not be
    read: the top one, or with ``recursive`` any below it)."""
    found: list[tuple[tuple[str, ...], str]] = []
    has_subdirs = False
    errors: list[OSError] = []
    for root, dirs, files in os.walk(directory, onerror=errors.append):
        rel = os.path.relpath(root, directory)
        parts = () if rel == "." else tuple(Path(rel).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        has_subdirs = has_subdirs or bool(dirs)
        for name in files:
            path = os.path.join(root, name)
            if not name.startswith(".") and (_image_suffix(name) or _image_content(name, path)):
                found.append(((*parts, name), path))
        if not recursive:
            break
    return [path for _, path in sorted(found)], has_subdirs, errors


def _image_suffix(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _image_content(name: str, path: str) -> bool:
    """A file without a suffix (``scan0001``) is an image if Pillow recognises its header: a regular file only
    (a FIFO would block), and only the header is read."""
    if os.path.splitext(name)[1]:
        return False
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with pillow_warnings, Image.open(path) as image:
            return bool(image.format)
    except Exception:  # noqa: BLE001 - unreadable or not an image: not one of the directory's images
        return False


def read_path_list(stream: BinaryIO, *, null: bool) -> list[str]:
    """The paths in ``stream`` (stdin for ``predict -``): one a line, or NUL-separated with ``null`` (as
    ``find -print0`` and ``xargs -0`` write them: the only separator no path can contain).

    Lines lose their ``\\n`` or ``\\r\\n``; empty lines and empty NUL-separated entries are skipped. Names are
    decoded as the filesystem does (``os.fsdecode``), so any name that exists can be read back. A NUL byte in a
    newline-separated list means a NUL-separated one was meant: that is a :class:`UsageError`; so is an image
    (``predict - < photo.png``: its content, where its path was meant).
    """
    data = stream.read()
    _refuse_an_image(data, null)
    if null:
        return [os.fsdecode(name) for name in data.split(b"\0") if name]
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise UsageError(
            f"the list of paths holds a NUL byte (line {line}): it looks NUL-separated",
            "pass --null (-0) to read NUL-separated paths, as `find -print0` writes them",
        )
    lines = (line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n"))
    return [os.fsdecode(line) for line in lines if line]


def _refuse_an_image(data: bytes, null: bool) -> None:
    """A UsageError if ``data`` is an image file rather than a list of paths. Pillow takes no ordinary list of
    paths for an image, but a name can be anything (even "P1 1 1", a PBM header): a list whose first entry
    exists is a list."""
    kind = image_format(data)
    if kind is None:
        return
    first = data.split(b"\0" if null else b"\n", 1)[0].removesuffix(b"\r")
    if first and os.path.lexists(os.fsdecode(first)):
        return
    raise UsageError(
        f"stdin holds a {kind} image, not a list of paths",
        "pass the file's path, not its content: `mnistctl predict FILE` (`-` reads image paths from stdin)",
    )
