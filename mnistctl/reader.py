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
import dataclasses
import functools
import itertools
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mnistctl.config import MIN_CONFIDENCE
from mnistctl.errors import MnistctlError, UsageError, first_line
from mnistctl.imaging import (
    INVERT_CHOICES,
    Box,
    ImageError,
    ImageInput,
    pillow_warnings,
    preprocess_and_measure,
    resize_only,
    to_gray,
)
from mnistctl.imaging.segment import Choices, Digit, Line, best_path, segment_choices, segment_digits
from mnistctl.line import LINE_MODEL, decode_surest, load_line_model
from mnistctl.results import NOT_A_DIGIT, UNSURE, DigitReading, ModelMeta, NumberReading, ReadFailure

if TYPE_CHECKING:
    import torch

    from mnistctl.checkpoint import Checkpoint

PRECISIONS = ("fp32", "bf16", "fp16", "amp")
CHUNK = 32  # images per decoding task: big enough to amortise the pool's overhead, small enough to stream
BATCH = 512  # inputs the network reads at once, unless told otherwise (``batch_size``)
AHEAD = 2 * BATCH  # images handed to the decoding threads and not yet taken back: two batches


def load_reader(
    model: str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
    line_model: str | os.PathLike[str] | bool | None = True,
    second_model: str | os.PathLike[str] | bool | None = None,
) -> Reader:
    """A reader for the checkpoint ``model`` (default: the model bundled with mnistctl).

    ``device``: "cpu", "cuda", "cuda:1", "mps", or None for the best there is (``$MNISTCTL_DEVICE`` if set).
    ``precision``: "fp32", "bf16", "fp16", "amp" (the device's mixed precision), or None for the device's
    default. ``threads``: torch's intra-op thread count, which is process-wide; None leaves it as it is.
    ``line_model``: the line network(s) that read a number's groups of ink that may be digits touching (True or
    None: the one bundled with mnistctl; a path: that file; False: none, and the model reads them by trying
    cuts).
    ``second_model``: a second digit network, asked where the first is unsure (:class:`SecondOpinion`): None is
    the one bundled with mnistctl where ``model`` is the bundled model's file (not a copy of it), else none;
    True is the bundled one; a path is that checkpoint (with the first's outputs); False is none.
    Raises :class:`~mnistctl.errors.MnistctlError` (naming the file) for a checkpoint that cannot be used.
    """
    from mnistctl.checkpoint import build_model, bundled_model_path, bundled_second_path, load_checkpoint
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
    meta = _meta(checkpoint, str(path), str(torch_device), precision)
    line = None
    if line_model is True or line_model is None:
        line_model = LINE_MODEL
    if line_model is not False:
        if not isinstance(line_model, str | os.PathLike):
            raise UsageError(f"line_model must be True, False or a path, not {line_model!r}", "pass True, say")
        line = load_line_model(line_model, torch_device)
        meta = dataclasses.replace(meta, line_model=os.fspath(line_model))
    if second_model is None:
        second_model = _is_bundled(path, bundled_model_path())
    second = None
    if second_model is not False:
        second = _second_opinion(
            bundled_second_path() if second_model is True else second_model, meta, torch_device, precision
        )
        meta = dataclasses.replace(meta, second_model=second.path)
    return Reader(network, torch_device, meta, line, second)


def _is_bundled(path: str | os.PathLike[str], bundled: os.PathLike[str]) -> bool:
    """Whether ``path`` is the bundled file ``bundled`` itself (not a copy of it), even where it is missing."""
    try:
        return os.path.samefile(path, bundled)
    except OSError:  # either is missing: then whether it is the same name
        return os.path.realpath(path) == os.path.realpath(bundled)


def _second_opinion(
    path: str | os.PathLike[str] | bool, first: ModelMeta, device: torch.device, precision: str
) -> SecondOpinion:
    from mnistctl.checkpoint import build_model, bundled_second_path, load_checkpoint

    if not isinstance(path, str | os.PathLike):
        raise UsageError(f"second_model must be True, False, None or a path, not {path!r}", "pass None, say")
    try:
        checkpoint = load_checkpoint(path)
        meta = _meta(checkpoint, os.fspath(path), first.device, precision)
    except MnistctlError as e:  # its hint is for a model of one's own: say which network, and what to do here
        bundled = _is_bundled(path, bundled_second_path())
        fix = (
            "reinstall mnistctl (pip install --force-reinstall mnistctl)"
            if bundled
            else "pass one `mnistctl train` wrote"
        )
        raise MnistctlError(f"the second digit network: {e.message}", f"{fix}, or second_model=False") from None
    if meta.classes != first.classes:
        raise MnistctlError(
            f"the second digit network: {os.fspath(path)}: its outputs ({len(meta.classes)}) are not the first"
            f" model's ({len(first.classes)})",
            "pass a second model trained as the first was, or second_model=False",
        )
    network = build_model(checkpoint, device, precision).eval()
    return SecondOpinion(network, meta.path, meta.normalization["mean"], meta.normalization["std"], meta.temperature)


def _meta(checkpoint: Checkpoint, path: str, device: str, precision: str) -> ModelMeta:
    mean, std = checkpoint.normalization
    classes = checkpoint.arch_config.get("classes", 10)
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
        temperature=_temperature(checkpoint, path),
        classes=(*"0123456789", NOT_A_DIGIT)[:classes],
    )


def _temperature(checkpoint: Checkpoint, path: str) -> float:
    """The calibration temperature the checkpoint's metrics hold (1 where it has none)."""
    import math

    value = checkpoint.metrics.get("temperature", 1.0)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0.05 <= value <= 20:
        raise MnistctlError(
            f"{path}: its calibration temperature {value!r} is not a number from 0.05 to 20",
            "the checkpoint is damaged or was edited; train a new one",
        )
    return float(value)


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
    lines: bool = False  # a number's groups that may be digits touching go to the line network

    def __post_init__(self) -> None:
        if self.invert not in INVERT_CHOICES:
            raise UsageError(f"invert must be one of {', '.join(INVERT_CHOICES)}, not {self.invert!r}")

    def digit(self, image: ImageInput) -> _Prepared:
        if not self.preprocess:
            return _Prepared([resize_only(to_gray(image), self.invert)], None)
        gray = to_gray(image)
        pixels, aspect = preprocess_and_measure(gray, self.invert, normalise_strokes=self.normalise_strokes)
        return _Prepared([pixels], None, several=aspect > WIDE and looks_like_a_number(gray, self.invert))

    def number(self, image: ImageInput) -> _Prepared:
        """The inputs for a number's digits: finding them is preprocessing, so ``preprocess`` does not apply."""
        groups = segment_choices(
            to_gray(image), self.invert, normalise_strokes=self.normalise_strokes, lines=self.lines
        )
        digits = [d for group in groups for d in group.digits]  # a group's every way of being read
        return _Prepared([d.pixels for d in digits], [d.box for d in digits], choices=groups)


class _Prepared(NamedTuple):
    pixels: list[np.ndarray]  # the network's 28×28 inputs: one, or one per digit of a number
    boxes: list[Box] | None  # for a number: where each digit is
    error: str | None = None  # why the image gave no input
    several: bool = False  # read as one digit, it looks like several side by side
    choices: list[Choices] | None = None  # for a number: its groups of ink, each with its ways of being read

    @property
    def work(self) -> int:
        """How many inputs this is for the networks, to fill batches by: its 28×28 inputs, and a strip for the
        line network as one for each 28 px of it (a number whose digits all touch has no 28×28 input)."""
        strips = (c.line.strip.shape[1] for c in self.choices or () if c.line is not None)
        return len(self.pixels) + sum(max(1, width // 28) for width in strips)


WIDE = 1.3  # ink this many times wider than tall may be several digits: worth looking (MNIST's digits are ≤ 1)


def looks_like_a_number(gray: np.ndarray, invert: str) -> bool:
    """Whether the number reader finds two or more digits in ``gray``."""
    try:
        return len(segment_digits(gray, invert)) >= 2
    except ImageError:
        return False


class Reader:
    """A loaded model on its device, in its precision. Made by :func:`load_reader`; see docs/api.md."""

    def __init__(
        self,
        network: torch.nn.Module,
        device: torch.device,
        meta: ModelMeta,
        line: torch.nn.Module | None = None,
        second: SecondOpinion | None = None,
    ) -> None:
        self.network = network.eval()
        self.line = line  # the line network (:func:`~mnistctl.line.load_line_model`), or None
        self.second = second
        self.device = device
        self.meta = meta
        self._mean = meta.normalization["mean"]
        self._std = meta.normalization["std"]
        self._temperature = meta.temperature

    def __repr__(self) -> str:
        return f"<Reader {self.meta.arch} from {self.meta.path} on {self.meta.device} ({self.meta.precision})>"

    def read_digit(
        self,
        image: ImageInput,
        *,
        invert: str = "auto",
        preprocess: bool = True,
        normalise_strokes: bool = True,
        min_confidence: float = MIN_CONFIDENCE,
        always_answer: bool = False,
    ) -> DigitReading:
        """The digit in ``image``: a path, the bytes of an image file, a binary file object, a PIL image, or an
        array / tensor (H×W or H×W×C, uint8 or floats in [0, 1]; tensors also C×H×W). Raises ImageError.

        The reading's ``digit`` is None, with its ``reason``, where the model takes the image for no digit
        ("not a digit") or gives no digit ``min_confidence`` ("unsure"); ``always_answer`` names the likeliest
        digit whatever it is."""
        prepared = Preprocessing(invert, preprocess, normalise_strokes).digit(image)
        return next(self._readings([prepared], Answering(min_confidence, always_answer)))  # type: ignore[return-value]

    def read_number(
        self,
        image: ImageInput,
        *,
        invert: str = "auto",
        normalise_strokes: bool = True,
        min_confidence: float = MIN_CONFIDENCE,
        always_answer: bool = False,
    ) -> NumberReading:
        """The number written on one line in ``image``, digit by digit, left to right (``?`` in its text for
        each digit declined, as :meth:`read_digit` declines). Raises ImageError."""
        prepared = Preprocessing(invert, True, normalise_strokes, self.line is not None).number(image)
        return next(self._readings([prepared], Answering(min_confidence, always_answer)))  # type: ignore[return-value]

    def read_digits(
        self,
        images: Iterable[ImageInput],
        *,
        batch_size: int = BATCH,
        workers: int | None = None,
        invert: str = "auto",
        preprocess: bool = True,
        normalise_strokes: bool = True,
        min_confidence: float = MIN_CONFIDENCE,
        always_answer: bool = False,
    ) -> Iterator[DigitReading | ReadFailure]:
        """One result per image of ``images`` (any iterable, even endless), in order, each as soon as it is known;
        a :class:`ReadFailure` for an image that cannot be read. ``workers`` threads decode (default: half the
        cores; 0 decodes in the calling thread); the network runs on batches of up to ``batch_size``. Declining
        as :meth:`read_digit` does."""
        options = Preprocessing(invert, preprocess, normalise_strokes)
        return self._stream(images, options.digit, Answering(min_confidence, always_answer), batch_size, workers)

    def read_numbers(
        self,
        images: Iterable[ImageInput],
        *,
        batch_size: int = BATCH,
        workers: int | None = None,
        invert: str = "auto",
        normalise_strokes: bool = True,
        min_confidence: float = MIN_CONFIDENCE,
        always_answer: bool = False,
    ) -> Iterator[NumberReading | ReadFailure]:
        """As :meth:`read_digits`, for images that each hold a number (the digits of all go through the network
        together, a number's digits in one batch)."""
        options = Preprocessing(invert, True, normalise_strokes, self.line is not None)
        answering = Answering(min_confidence, always_answer)
        return self._stream(images, options.number, answering, batch_size, workers)  # type: ignore[return-value]

    # ----------------------------------------------------------------------------------------- internals

    def _stream(
        self, images: Iterable[ImageInput], prepare: Callable[[ImageInput], _Prepared], answering: Answering,
        batch_size: int, workers: int | None,
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
                if not next_ready or sum(p.work for p in pending) >= batch_size:
                    yield from self._batched(pending, answering, batch_size)
                    pending = []
        yield from self._batched(pending, answering, batch_size)

    def _batched(
        self, prepared: list[_Prepared], answering: Answering, size: int
    ) -> Iterator[DigitReading | NumberReading | ReadFailure]:
        """The network on runs of about ``size`` inputs of ``prepared``; the digits of a number stay together."""
        batch: list[_Prepared] = []
        inputs = 0
        for item in prepared:
            batch.append(item)
            inputs += item.work
            if inputs >= size:
                yield from self._readings(batch, answering, size)
                batch, inputs = [], 0
        if batch:
            yield from self._readings(batch, answering, size)

    def _readings(
        self, prepared: list[_Prepared], answering: Answering, size: int = BATCH
    ) -> Iterator[DigitReading | NumberReading | ReadFailure]:
        """Run the network on every input of ``prepared``, ``size`` at a time; a result for each item."""
        inputs = [pixels for item in prepared for pixels in item.pixels]
        probabilities = iter(self._probabilities(inputs, size) if inputs else [])
        lines = [group.line for item in prepared for group in item.choices or () if group.line is not None]
        lines_read = iter(self._lines_read(lines, size) if lines else [])
        for item in prepared:
            if item.error is not None:
                yield ReadFailure(item.error)
                continue
            if item.boxes is None:
                reading = answering.reading(item.pixels[0], next(probabilities))
                yield dataclasses.replace(reading, several_digits=True) if item.several else reading
            else:
                pairs = zip(item.pixels, item.boxes, strict=True)
                readings = [answering.reading(pixels, next(probabilities), box) for pixels, box in pairs]
                yield NumberReading.of(_chosen(item.choices or [], readings, lines_read, answering))

    def _probabilities(self, inputs: list[np.ndarray], size: int) -> list[list[float]]:
        import torch

        from mnistctl.data.mnist import normalise

        out: list[list[float]] = []
        for start in range(0, len(inputs), size):  # a number's stretches can be thousands
            pixels = torch.from_numpy(np.stack(inputs[start : start + size])).to(self.device)
            with torch.inference_mode():
                scores = self.network(normalise(pixels, self._mean, self._std)).float().div(self._temperature)
                if self.second is not None:
                    scores = self.second.asked(scores.log_softmax(1), pixels)
                out += scores.softmax(1).cpu().tolist()
        return out

    def _lines_read(self, lines: list[Line], size: int) -> list[_LineReading]:
        """Each line's symbols (:meth:`_symbols`). Where a line reads as several and the line networks are unsure
        of one (a digit, but none more likely than not) and its cut-out has ink, the digit network reads that
        cut-out, and where it is at least REREAD_SURE sure of a digit, its reading is the symbol's."""
        read = self._symbols([line.strip for line in lines])
        cut = [
            line.digits([frames for _, frames in symbols])
            if len(symbols) > 1 and any(_unsure(p) for p, _ in symbols)
            else None
            for line, symbols in zip(lines, read, strict=True)
        ]
        again = [
            (k, j)
            for k, digits in enumerate(cut)
            if digits
            for j, (p, _) in enumerate(read[k])
            if _unsure(p) and digits[j].pixels.any()  # not a symbol that no ink was left for
        ]
        if again:
            for (k, j), p in zip(again, self._probabilities([cut[k][j].pixels for k, j in again], size), strict=True):
                if _digit_and_not(p)[0] >= REREAD_SURE:  # (so "not a digit" is under 1 - REREAD_SURE)
                    read[k][j] = (p, read[k][j][1])
        return [_LineReading(symbols, digits) for symbols, digits in zip(read, cut, strict=True)]

    def _symbols(self, strips: list[np.ndarray]) -> list[Symbols]:
        """The line networks' symbols in each strip (:func:`~mnistctl.line.decode_surest`). Strips of one width are
        read together; never padded, so a strip reads the same whatever else is in the batch."""
        import torch

        assert self.line is not None
        out: list[list[tuple[list[float], tuple[int, int]]]] = [[] for _ in strips]
        by_width = itertools.groupby(
            sorted(range(len(strips)), key=lambda k: strips[k].shape[1]), key=lambda k: strips[k].shape[1]
        )
        for width, same in by_width:
            alike = list(same)
            per = max(1, LINE_BATCH_PIXELS // width)  # bounded memory, whatever the strips are
            for start in range(0, len(alike), per):
                chunk = alike[start : start + per]
                x = torch.from_numpy(np.stack([strips[k] for k in chunk])[:, None]).float().div(255)
                with torch.inference_mode():
                    scores = self.line(x.to(self.device)).float().cpu().numpy()
                for i, k in enumerate(chunk):
                    out[k] = decode_surest(scores[:, i])
        return out


class SecondOpinion(NamedTuple):
    """A second digit network (another seed of the same recipe), asked only where the first is unsure: for an
    input whose likeliest class the first gives under ASK_BELOW, the reading is the two's mean log-probabilities
    (each at its own calibration temperature). Two networks misread fewer digits than one (docs/benchmarks.md),
    but asked about every input the second would cost a third of the reading speed; the first is unsure of
    1.6 % of MNIST's test digits, where three in four of its errors are."""

    network: torch.nn.Module
    path: str
    mean: float
    std: float
    temperature: float

    def asked(self, first: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """The log-probabilities to read: ``first`` (the first network's, N×classes), with the inputs it is
        unsure of (of ``pixels``, N×28×28 uint8) replaced by the two networks' mean."""
        from mnistctl.data.mnist import normalise

        unsure = first.exp().amax(1) < ASK_BELOW  # NaN (a broken first network) is not unsure: it stays NaN
        if not bool(unsure.any()):
            return first
        x = normalise(pixels[unsure], self.mean, self.std)
        second = self.network(x).float().div(self.temperature).log_softmax(1)
        out = first.clone()
        out[unsure] = (first[unsure] + second) / 2
        return out


# Measured (docs/benchmarks.md): asked below 0.9 or 0.999 the pair reads the same as asked everywhere, below 0.7
# two MNIST test digits more wrong; below 0.9 the second network reads 1.6 % of MNIST's test digits.
ASK_BELOW = 0.9

# Measured on the bench's numbers (docs/benchmarks.md, "eighth round"), 9,000 of them: the digit network's
# reading of a symbol the line networks are unsure of, taken where it is at least 0.9 sure, read 6 more exactly
# and misread 1 more with no "?" in them (offline; the bench as shipped: 7 and 2). An earlier rule — every symbol
# the line networks do not take for a digit, the digit network's reading wherever it names one — 9 and 6.
REREAD_SURE = 0.9

LINE_BATCH_PIXELS = 16384  # columns of strips of one width the line network reads at once (256 of 64 px), at most


Symbols = list[tuple[list[float], tuple[int, int]]]  # a line's symbols: each one's probabilities, first and last frame


class _LineReading(NamedTuple):
    """A line as read: its symbols, and the digits cut out for them where that was already done (else None)."""

    symbols: Symbols
    digits: list[Digit] | None


def _chosen(
    groups: list[Choices], readings: list[DigitReading], lines: Iterator[_LineReading], answering: Answering
) -> list[DigitReading]:
    """The number's digits: for each group of ink, the reading of the whole where the network takes it for one
    digit (and the line network, where it read the group, finds one symbol there, or several less likely
    together, :func:`_likelihood`, than the whole is that digit); else, where the line
    network read the group, its symbols (each digit cut out where two meet; one the line networks were unsure
    of may have the digit network's reading, :meth:`Reader._lines_read`); else the readings of the spans on
    its best path — the cuts whose pieces the network most believes to be digits
    (:func:`~mnistctl.imaging.segment.best_path`)."""
    out: list[DigitReading] = []
    start = 0
    for group in groups:
        mine = readings[start : start + len(group.spans)]
        start += len(group.spans)
        if group.line is not None:
            read, digits = next(lines)
            if mine and _one_digit(mine[0]) and (len(read) == 1 or mine[0].confidence > _likelihood(read)):
                # One digit, say both networks, or the digit network more surely than the line networks say
                # several: the digit network's reading (measured better).
                out.append(mine[0])
            else:
                digits = digits or group.line.digits([frames for _, frames in read])
                out += [answering.reading(d.pixels, p, d.box) for (p, _), d in zip(read, digits, strict=True)]
            continue
        whole = group.spans.index((0, len(group.cuts) - 1)) if (0, len(group.cuts) - 1) in group.spans else None
        if whole is not None and _one_digit(mine[whole]):
            out.append(mine[whole])  # read whole, it is a digit: no cut is needed (nor, measured, better)
            continue
        # A NaN confidence (a broken model) fails the comparison: the floor, never the best.
        scores = [math.log(r.confidence if r.confidence > 1e-30 else 1e-30) for r in mine]
        out += [mine[k] for k in best_path(group, scores)]
    return out


def _likelihood(symbols: Symbols) -> float:
    """How likely the line networks' reading of a line is: the product of its symbols' likeliest digits'
    probabilities (docs/benchmarks.md, "tenth round": against the digit network's reading of the whole)."""
    return math.prod(_digit_and_not(p)[0] for p, _ in symbols)


def _one_digit(reading: DigitReading) -> bool:
    """Whether the network takes the piece for a digit (whatever ``always_answer`` says): likelier a digit than
    not, and more likely this digit than not."""
    return reading.confidence >= 0.5 and (reading.not_a_digit or 0.0) < reading.confidence


def _digit_and_not(probabilities: list[float]) -> tuple[float, float]:
    """From a network's probabilities (ten, or eleven with "not a digit"): the likeliest digit's, and "not a
    digit"'s (0 for a model without that class)."""
    return max(probabilities[:10]), probabilities[10] if len(probabilities) > 10 else 0.0


def _unsure(probabilities: list[float]) -> bool:
    """Whether the network takes the piece for a digit, but for no digit more likely than not (NaN: no)."""
    digit, not_digit = _digit_and_not(probabilities)
    return not_digit < digit < 0.5


@dataclass(frozen=True)
class Answering:
    """When the reader names a digit: unless the model's "not a digit" class (an eleventh output, where the
    model has one) is its likeliest answer, and the likeliest digit has at least ``min_confidence``; always,
    with ``always_answer``."""

    min_confidence: float = MIN_CONFIDENCE
    always_answer: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.min_confidence <= 1:
            raise UsageError(f"min_confidence must be from 0 to 1, not {self.min_confidence!r}", "pass 0.5, say")

    def reading(self, pixels: np.ndarray, probabilities: list[float], box: Box | None = None) -> DigitReading:
        """The reading of one input from the network's probabilities (ten, or eleven with "not a digit")."""
        digits, rest = probabilities[:10], probabilities[10:]
        not_a_digit = rest[0] if rest else None
        best = max(range(10), key=digits.__getitem__)
        confidence = digits[best]
        reason = None
        if not self.always_answer:
            if not_a_digit is not None and not_a_digit > confidence:
                reason = NOT_A_DIGIT
            elif not confidence >= self.min_confidence:  # NaN, from a broken model, is unsure too
                reason = UNSURE
        digit = None if reason else best
        return DigitReading(digit, confidence, tuple(digits), pixels, box, reason, not_a_digit)


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
