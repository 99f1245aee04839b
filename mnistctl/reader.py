"""The reading API: a :class:`Reader` owns a loaded model on its device and reads digits and numbers from
images of every common kind (see docs/api.md). ``mnistctl predict`` is a client of it.

One image at a time (:meth:`Reader.read_digit`, :meth:`Reader.read_number`) raises :class:`ImageError` for an
image it cannot read. Many at a time (:meth:`Reader.read_digits`, :meth:`Reader.read_numbers`) stream one result
per image, in order, with a :class:`ReadFailure` in the place of each image that failed: threads decode and
preprocess the images a bounded number of chunks ahead, while the calling thread runs the network on each batch
as it is ready.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mnistctl.errors import UsageError, first_line
from mnistctl.imaging import (
    INVERT_CHOICES,
    Box,
    ImageError,
    ImageInput,
    digit_input,
    pillow_warnings,
    segment_digits,
    to_gray,
)
from mnistctl.results import DigitReading, ModelMeta, NumberReading, ReadFailure

if TYPE_CHECKING:
    import torch

    from mnistctl.checkpoint import Checkpoint

PRECISIONS = ("fp32", "bf16", "fp16", "amp")
CHUNK = 32  # images per decoding task: big enough to amortise the pool's overhead, small enough to stream
AHEAD = 1024  # images handed to the decoding threads and not yet taken back: two batches of 512


def load_reader(
    model: str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
) -> Reader:
    """A reader for the checkpoint ``model`` (default: the model bundled with mnistctl).

    ``device``: "cpu", "cuda", "cuda:1", "mps", or None for the best there is (``$MNISTCTL_DEVICE`` if set).
    ``precision``: "fp32", "bf16", "fp16", "amp" (the device's mixed precision), or None for the device's
    default. ``threads``: torch's intra-op thread count, which is process-wide; None leaves it as it is.
    Raises :class:`~mnistctl.errors.MnistctlError` (naming the file) for a checkpoint that cannot be used.
    """
    from mnistctl.checkpoint import build_model, bundled_model_path, load_checkpoint
    from mnistctl.runtime import amp_precision, default_precision, setup_device

    if precision is not None and precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}", "or pass None")
    path = bundled_model_path() if model is None else os.fspath(model)
    checkpoint = load_checkpoint(path)
    torch_device = setup_device(device, threads)
    if precision is None:
        precision = default_precision(torch_device)
    elif precision == "amp":
        precision = amp_precision(torch_device)
    network = build_model(checkpoint, torch_device, precision)
    return Reader(network, torch_device, _meta(checkpoint, str(path), str(torch_device), precision))


def _meta(checkpoint: Checkpoint, path: str, device: str, precision: str) -> ModelMeta:
    mean, std = checkpoint.normalization
    return ModelMeta(
        path=path,
        arch=checkpoint.arch,
        arch_config=dict(checkpoint.arch_config),
        normalization={"mean": mean, "std": std},
        test_accuracy=checkpoint.metrics.get("test_accuracy"),
        epochs=checkpoint.epoch,
        training=dict(checkpoint.config),
        versions=dict(checkpoint.versions),
        device=device,
        precision=precision,
    )


def default_workers() -> int:
    """Decoding threads for many images: half the cores this process may use (at least one, at most eight)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // 2))


@dataclass(frozen=True)
class Preprocessing:
    """How an image is made into the network's 28×28 input (the keyword arguments of the read methods)."""

    invert: str = "auto"  # "auto" (the border decides), "yes" (dark ink on light paper), "no"
    preprocess: bool = True  # False: only resize to 28×28 (for images already framed like MNIST's)
    normalise_strokes: bool = True  # bring much thinner or thicker strokes towards MNIST's width

    def __post_init__(self) -> None:
        if self.invert not in INVERT_CHOICES:
            raise UsageError(f"invert must be one of {', '.join(INVERT_CHOICES)}, not {self.invert!r}")

    def digit(self, image: ImageInput) -> _Prepared:
        options = {"preprocess_image": self.preprocess, "normalise_strokes": self.normalise_strokes}
        return _Prepared([digit_input(image, self.invert, **options)], None)

    def number(self, image: ImageInput) -> _Prepared:
        """The inputs for a number's digits: finding them is preprocessing, so ``preprocess`` does not apply."""
        digits = segment_digits(to_gray(image), self.invert, normalise_strokes=self.normalise_strokes)
        return _Prepared([d.pixels for d in digits], [d.box for d in digits])


class _Prepared(NamedTuple):
    pixels: list[np.ndarray]  # the network's 28×28 inputs: one, or one per digit of a number
    boxes: list[Box] | None  # for a number: where each digit is
    error: str | None = None  # why the image gave no input


class Reader:
    """A loaded model on its device, in its precision. Made by :func:`load_reader`; see docs/api.md."""

    def __init__(self, network: torch.nn.Module, device: torch.device, meta: ModelMeta) -> None:
        self.network = network.eval()
        self.device = device
        self.meta = meta
        self._mean = meta.normalization["mean"]
        self._std = meta.normalization["std"]

    def __repr__(self) -> str:
        return f"<Reader {self.meta.arch} from {self.meta.path} on {self.meta.device} ({self.meta.precision})>"

    def read_digit(
        self, image: ImageInput, *, invert: str = "auto", preprocess: bool = True, normalise_strokes: bool = True
    ) -> DigitReading:
        """The digit in ``image``: a path, the bytes of an image file, a binary file object, a PIL image, or an
        array / tensor (H×W or H×W×C, uint8 or floats in [0, 1]; tensors also C×H×W). Raises ImageError."""
        prepared = Preprocessing(invert, preprocess, normalise_strokes).digit(image)
        return next(self._readings([prepared]))  # type: ignore[return-value]

    def read_number(self, image: ImageInput, *, invert: str = "auto", normalise_strokes: bool = True) -> NumberReading:
        """The number written on one line in ``image``, digit by digit, left to right. Raises ImageError."""
        prepared = Preprocessing(invert, True, normalise_strokes).number(image)
        return next(self._readings([prepared]))  # type: ignore[return-value]

    def read_digits(
        self,
        images: Iterable[ImageInput],
        *,
        batch_size: int = 512,
        workers: int | None = None,
        invert: str = "auto",
        preprocess: bool = True,
        normalise_strokes: bool = True,
    ) -> Iterator[DigitReading | ReadFailure]:
        """One result per image of ``images`` (any iterable, even endless), in order, each as soon as it is known;
        a :class:`ReadFailure` for an image that cannot be read. ``workers`` threads decode (default: half the
        cores; 0 decodes in the calling thread); the network runs on batches of up to ``batch_size``."""
        options = Preprocessing(invert, preprocess, normalise_strokes)
        return self._stream(images, options.digit, batch_size, workers)

    def read_numbers(
        self,
        images: Iterable[ImageInput],
        *,
        batch_size: int = 512,
        workers: int | None = None,
        invert: str = "auto",
        normalise_strokes: bool = True,
    ) -> Iterator[NumberReading | ReadFailure]:
        """As :meth:`read_digits`, for images that each hold a number (the digits of all go through the network
        together, a number's digits in one batch)."""
        options = Preprocessing(invert, True, normalise_strokes)
        return self._stream(images, options.number, batch_size, workers)  # type: ignore[return-value]

    # ----------------------------------------------------------------------------------------- internals

    def _stream(
        self, images: Iterable[ImageInput], prepare: Callable[[ImageInput], _Prepared], batch_size: int,
        workers: int | None,
    ) -> Generator[DigitReading | NumberReading | ReadFailure, None, None]:  # fmt: skip
        batch_size = max(1, batch_size)
        workers = default_workers() if workers is None else workers
        chunks = _chunks(iter(images), min(CHUNK, batch_size))
        load = functools.partial(_prepare_chunk, prepare)
        pending: list[_Prepared] = []
        with contextlib.closing(_prepared_chunks(chunks, load, workers)) as prepared:
            for chunk, next_ready in prepared:
                pending += chunk
                # The network runs on full batches (small ones cost it a third more per image), or on what is
                # there whenever the next chunk is still being decoded: it works while the threads decode.
                if not next_ready or sum(len(p.pixels) for p in pending) >= batch_size:
                    yield from self._batched(pending, batch_size)
                    pending = []
        yield from self._batched(pending, batch_size)

    def _batched(self, prepared: list[_Prepared], size: int) -> Iterator[DigitReading | NumberReading | ReadFailure]:
        """The network on runs of about ``size`` inputs of ``prepared``; the digits of a number stay together."""
        batch: list[_Prepared] = []
        inputs = 0
        for item in prepared:
            batch.append(item)
            inputs += len(item.pixels)
            if inputs >= size:
                yield from self._readings(batch)
                batch, inputs = [], 0
        if batch:
            yield from self._readings(batch)

    def _readings(self, prepared: list[_Prepared]) -> Iterator[DigitReading | NumberReading | ReadFailure]:
        """Run the network once on every input of ``prepared``; a result for each item."""
        inputs = [pixels for item in prepared for pixels in item.pixels]
        probabilities = iter(self._probabilities(inputs) if inputs else [])
        for item in prepared:
            if item.error is not None:
                yield ReadFailure(item.error)
                continue
            if item.boxes is None:
                yield _reading(item.pixels[0], next(probabilities))
            else:
                pairs = zip(item.pixels, item.boxes, strict=True)
                yield NumberReading.of([_reading(pixels, next(probabilities), box) for pixels, box in pairs])

    def _probabilities(self, inputs: list[np.ndarray]) -> list[list[float]]:
        import torch

        from mnistctl.data.mnist import normalise

        x = normalise(torch.from_numpy(np.stack(inputs)), self._mean, self._std).to(self.device)
        with torch.inference_mode():
            return self.network(x).float().softmax(1).cpu().tolist()


def _reading(pixels: np.ndarray, probabilities: list[float], box: Box | None = None) -> DigitReading:
    digit = max(range(len(probabilities)), key=probabilities.__getitem__)
    return DigitReading(digit, probabilities[digit], tuple(probabilities), pixels, box)


def _chunks(images: Iterator[ImageInput], size: int) -> Iterator[list[ImageInput]]:
    while chunk := list(itertools.islice(images, size)):
        yield chunk


def _prepare_chunk(
    prepare: Callable[[ImageInput], _Prepared], images: list[ImageInput], stop: threading.Event
) -> list[_Prepared]:
    """Prepare each image (stopping early, after the one in hand, once ``stop`` is set); a failure in its place
    for each that cannot be read."""
    out: list[_Prepared] = []
    with pillow_warnings:  # once per chunk rather than per image
        for image in images:
            if stop.is_set():
                break
            try:
                out.append(prepare(image))
            except ImageError as exc:
                out.append(_Prepared([], None, exc.message))
            except MemoryError:
                out.append(_Prepared([], None, "not enough memory to decode the image"))
            except Exception as exc:  # noqa: BLE001 - one bad image must not stop the others
                out.append(_Prepared([], None, f"cannot use this image ({type(exc).__name__}: {first_line(exc)})"))
    return out


def _prepared_chunks(
    chunks: Iterator[list[ImageInput]], load: Callable[..., list[_Prepared]], workers: int
) -> Generator[tuple[list[_Prepared], bool], None, None]:
    """``(load(chunk), whether the next chunk is prepared already)`` for each chunk, in order.

    In ``workers`` threads, at most :data:`AHEAD` images (or a chunk a worker) ahead of the caller, which bounds
    the memory for a million images; with no workers, in this thread. Closing the generator (or Ctrl-C in it)
    stops the threads after the image each has in hand, without waiting for them.
    """
    stop = threading.Event()
    if workers <= 0:
        for chunk in chunks:
            yield load(chunk, stop), True
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mnistctl-decode")
    in_flight: deque[Future[list[_Prepared]]] = deque()
    try:
        while True:
            while len(in_flight) < max(workers, AHEAD // CHUNK) and (chunk := next(chunks, None)) is not None:
                in_flight.append(pool.submit(load, chunk, stop))
            if not in_flight:
                return
            done = in_flight.popleft().result()
            yield done, bool(in_flight) and in_flight[0].done()
    finally:
        # Also when the caller stops early or Ctrl-C interrupts: the threads leave their chunks after the image in
        # hand, and nobody waits for them (interpreter exit joins them, so none may run on for long).
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
