"""A number written on one line: its digits found, left to right, and each made to look like an MNIST digit
(:mod:`mnistctl.imaging.digit`'s steps)."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mnistctl.imaging.decode import ImageError
from mnistctl.imaging.digit import (
    BLANK,
    Box,
    bounding_box,
    box_stroke_width,
    check_gray,
    detail_region,
    dust_pixels,
    dust_side,
    fit_and_centre,
    ink_levels,
    ink_strength,
    normalise_stroke,
    reduce_to_work_size,
    resize_ink,
    work_reduction,
)

# Sizes below are fractions of the typical digit size: the median longer side (height, or width for a wide digit)
# of the digits of the number, as MNIST fits every digit's longer side to the same 20 px.
SPECK = 0.15  # a mark smaller than this, both ways, is dust
FAINT = 0.5  # a piece whose strongest ink is under this fraction of the strongest is shading or noise, not a stroke
MERGE_OVERLAP = 0.5  # pieces whose columns overlap by this fraction of the narrower one's width are one digit
MIN_DIGIT_HEIGHT = 0.4  # merged pieces lower than this are not a digit (a minus sign, a decimal point)
# ... unless it is a digit's bar drawn apart (a 5's, past the body): its columns the digit's or starting up to
# BAR_REACH right of them, its bottom at the digit's top (BAR_REACH above it to BAR_TOP of its height down), and
# at least BAR_WIDE times as wide as high (not an apostrophe or a degree sign).
BAR_REACH, BAR_TOP, BAR_WIDE = 0.15, 0.5, 1.5
# MNIST digits are never wider than their size (the 20 px box: median width 16 px); two touching digits are 1.55
# sizes wide on median. So a group wider than SPLIT_WIDTH sizes (and its own height) is digits that touch,
# about DIGIT_WIDTH sizes each.
SPLIT_WIDTH = 1.3
DIGIT_WIDTH = 0.8
SPLIT_WINDOW = 0.25  # look for the cut this fraction of a digit's width either side of where it is expected


@dataclass(frozen=True)
class Digit:
    """One digit of a number: where it is in the image, and the 28×28 input the network sees for it."""

    box: Box  # in the original image's pixels
    pixels: np.ndarray  # 28×28 uint8, white on black, as preprocess makes them


@dataclass
class _Group:
    """Connected pieces of ink taken as one digit: their labels and bounding box (working pixels)."""

    labels: list[int]
    box: Box

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> int:
        return max(self.width, self.height)

    @property
    def digit_size(self) -> float:
        """The size of a digit in it: its size, but no more than WIDEST times its height (a group wider than
        that is digits side by side, each about as wide as it is high)."""
        return min(self.size, WIDEST * self.height)


def segment_digits(gray: np.ndarray, invert: str = "auto", *, normalise_strokes: bool = True) -> list[Digit]:
    """The digits of a number written on one line, left to right (H×W uint8 gray image in).

    Polarity and ink as for one digit (the border decides; ``invert`` forces it), then connected pieces of ink
    (8-connectivity). A piece with no ink over FAINT of the strongest is shading (a photo's uneven light) or noise.
    Pieces whose columns overlap substantially are one digit: a broken stroke, the detached bar of a 5 or 7, a 4
    drawn in two strokes. Sizes are judged against the typical digit size (the median longer side, as MNIST fits
    every digit's longer side to 20 px): marks under SPECK of it are dust, groups lower than MIN_DIGIT_HEIGHT of it
    are punctuation (a minus sign, a decimal point) — unless a stroke across at a digit's top, over its columns or
    starting just right of them: that is the digit's bar (a 5's, drawn apart). Digits may differ in size and
    baseline. A group wider than SPLIT_WIDTH sizes of the other digits (and its own height) is taken for digits that
    touch: it is cut, into as many digits as its width suggests, at the weakest columns near where the cuts are
    expected: fewest strokes crossed, then least ink (where two digits touch a column crosses one stroke; inside a
    0, two). A cut that crosses more strokes, or leaves a part too low for a digit, is not made: that is one wide
    digit. Each digit is cut out (its own pixels only) and passed through the single-digit steps: stroke width,
    fitted to 20 px, centred by mass in 28×28.

    Not handled: several lines of digits (pieces above one another are merged); digits whose columns overlap
    a lot without touching (a 7's long bar over a 1); touching digits that are narrow together ("11" looks
    like one digit) or among narrow ones (a touching "141" is cut by its width, in two); digits touching at
    two places or along a slanted stroke; a digit broken into pieces side by side (a 0 drawn as two arcs); a
    stray stroke as tall as a digit (it is read as a 1); an underline or a box round the number; small digits
    far apart on a big page (the part holding them is the whole page, reduced). A big photo
    is reduced to about WORK_PIXELS first, as for one digit, and where the digits take only a part of it, that
    part is read again from the image's own pixels (small digits on a big page); boxes are in the original
    image's pixels.

    Raises ImageError("blank image: no ink found") when there is no digit.
    """
    groups = segment_choices(gray, invert, normalise_strokes=normalise_strokes, recognise=False)
    return [digit for group in groups for digit in group.digits]


@dataclass(frozen=True)
class Choices:
    """One group of ink of a number, and the ways of reading it as digits: ``cuts`` are columns in it (its left
    and right edge first and last), each of ``spans`` a (from, to) pair of them that may hold one digit, with
    that digit in ``digits`` (same order). A group that is one digit has one span: (0, 1). The reader chooses
    the spans from what the network makes of each (:func:`best_path`). A group with a ``line`` is read by
    the line network; its only span, if any, is the whole group, where it may be one digit."""

    cuts: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    digits: tuple[Digit, ...]
    line: Line | None = None


@dataclass(frozen=True)
class Line:
    """A group of ink that may be digits touching, for the line network: ``strip`` is its input
    (:func:`line_strip`); :meth:`digits` cuts the group where the network's symbols meet."""

    strip: np.ndarray
    scale: float  # strip pixels per working pixel
    group: _Group
    strength: np.ndarray  # the group's own ink, working pixels (its box)
    factor: int  # working pixels → the image's
    shape: tuple[int, int]  # the image's
    normalise_strokes: bool
    pen: float | None  # the group's stroke width, measured once
    offset: tuple[int, int] = (0, 0)  # where the part of the image it was found in starts

    def digits(self, frames: Sequence[tuple[int, int]]) -> list[Digit]:
        """One digit for each symbol (its first and last frame, left to right): the group cut between each two
        symbols at the column crossing the fewest strokes within MEET_WINDOW of where they are expected to meet
        (SYMBOLS_MEET), the nearest of those, by a path that winds between the strokes there (:func:`_seams`)."""
        width = self.strength.shape[1]
        strokes = _strokes(self.strength > 0)
        # Where each symbol is marked, in the group's columns.
        at = [min(width - 1, max(0, round(((a + b + 1) * FRAME / 2 - LINE_PAD) / self.scale))) for a, b in frames]
        cuts = [0]
        for left, right in zip(at, at[1:], strict=False):
            meet, reach = left + SYMBOLS_MEET * (right - left), MEET_WINDOW * (right - left)
            window = range(max(cuts[-1] + 1, round(meet - reach)), min(width - 1, round(meet + reach)) + 1)
            cuts.append(min(window, key=lambda i: (strokes[i], abs(i - meet))) if window else cuts[-1])
        cuts.append(width)
        seams = _seams(self.strength, cuts, round(SEAM_REACH * self.group.height))
        out = []
        for k in range(len(frames)):
            cut = _cut_out(self.strength, self.group, seams[k], seams[k + 1], self.normalise_strokes, self.pen)
            if cut is None:  # nothing between the seams (two symbols at one column): the whole group's box
                box, pixels = self.group.box, np.zeros((28, 28), np.uint8)
            else:
                box, pixels = cut
            x0, y0, x1, y1 = _scale_box(box, self.factor, self.shape)
            dx, dy = self.offset
            out.append(Digit((x0 + dx, y0 + dy, x1 + dx, y1 + dy), pixels))
        return out


def segment_choices(
    gray: np.ndarray,
    invert: str = "auto",
    *,
    normalise_strokes: bool = True,
    recognise: bool = True,
    lines: bool = False,
) -> list[Choices]:
    """:func:`segment_digits`' groups of ink, left to right, each with its ways of being read: a group wide
    enough to be digits that touch has, with ``recognise``, every plausible cut (:func:`_candidate_cuts`) and
    every stretch between two of them that could be one digit; without, the cuts :func:`segment_digits` makes
    (the weakest columns near where cuts are expected). With ``lines`` (and ``recognise``), groups less than
    JOIN_GAP sizes apart are joined, and a joined group, one that may be digits touching, or one wider than
    LINE_SEVERAL of its height, is a :class:`Line` for the line network instead, while the image's strips are
    under MOST_LINE (past it, a joined group is its parts again). Raises ImageError when there is no digit."""
    gray = check_gray(gray)
    return _choices(gray, invert, normalise_strokes, recognise and lines, recognise, dust_pixels(gray.shape))


def _choices(
    gray: np.ndarray, invert: str, normalise_strokes: bool, lines: bool, recognise: bool, dust: float
) -> list[Choices]:
    """:func:`segment_choices`, ``dust`` being in the pixels of the page the image is (a part of)."""
    from scipy import ndimage  # ~0.1 s to import: only when a number is read

    factor = work_reduction(gray.shape)
    work = reduce_to_work_size(gray)
    inverted, *levels = ink_levels(work, invert)
    ink = ink_strength(work, inverted, *levels)
    labels, count = ndimage.label(ink > 0, structure=np.ones((3, 3), bool))
    strokes = np.bincount(labels[ink >= FAINT * 255], minlength=count + 1)[1:] > 0  # which hold a stroke
    groups = _digit_groups(labels, ndimage.find_objects(labels), strokes, dust_side(gray.shape, dust))
    if not groups:
        raise ImageError(BLANK)
    region = detail_region(_union(*(g.box for g in groups)), factor, gray.shape, round(factor * _typical_size(groups)))
    if region is not None:  # small digits on a big page: read from the image's own pixels round them
        x0, y0, x1, y1 = region
        polarity = "yes" if inverted else "no"  # as the page decided it
        inside = _choices(gray[y0:y1, x0:x1], polarity, normalise_strokes, lines, recognise, dust)
        return [_moved(choices, x0, y0) for choices in inside]
    out = []
    budget, line_budget = MOST_STRETCHES, MOST_LINE
    parts = {}  # the groups each joined one was made of
    if lines:
        groups, parts = _runs(groups, JOIN_GAP * _typical_size(groups))
    compared, everyone = _typical_of_others(groups), _typical_size(groups)
    pending = list(reversed(groups))
    while pending:
        group = pending.pop()
        fits = group.width * LINE_BOX <= line_budget * group.height
        if id(group) in parts and not (lines and fits):  # past the budget: its parts, each as it is
            pending += reversed(parts[id(group)])
            continue
        size = compared.get(id(group), everyone)  # the digits it is to be compared with (a part: all of them)
        mask = np.isin(labels[group.box[1] : group.box[3], group.box[0] : group.box[2]], group.labels)
        strength = np.where(mask, ink[group.box[1] : group.box[3], group.box[0] : group.box[2]], 0)
        several = group.width > MAYBE_SEVERAL * group.height or group.width > SPLIT_WIDTH * size
        for_line = id(group) in parts or group.width > LINE_SEVERAL * group.height or several
        if lines and for_line and fits:
            pen = box_stroke_width(strength, size) if normalise_strokes else None
            strip, scale = line_strip(strength)
            line_budget -= strip.shape[1]
            line = Line(strip, scale, group, strength, factor, gray.shape, normalise_strokes, pen)
            whole = ()
            if group.width <= SPLIT_WIDTH * max(size, group.height):  # it may be one digit: the digit network too
                edges = np.repeat(np.asarray([[0], [group.width]]), group.height, 1)
                cut = _cut_out(strength, group, edges[0], edges[1], normalise_strokes, pen)
                if cut is not None:
                    whole = (Digit(_scale_box(cut[0], factor, gray.shape), cut[1]),)
            out.append(Choices((0, group.width), ((0, 1),) if whole else (), whole, line))
            continue
        spans = []
        if recognise and several and group.width <= MOST_CUTS * CUT_SPACING * size:  # bounded work per group
            cuts = _candidate_cuts(mask, strength, size)
            spans = [(i, j) for i in range(len(cuts)) for j in range(i + 1, len(cuts))
                     if SPAN_WIDTH[0] * size <= cuts[j] - cuts[i] <= SPAN_WIDTH[1] * size]  # fmt: skip
            if group.width <= SPLIT_WIDTH * max(size, group.height) and (0, len(cuts) - 1) not in spans:
                spans.append((0, len(cuts) - 1))  # not too wide for one digit: being one stays a choice
            spans = _reaching(spans, len(cuts) - 1)
            if len(spans) > budget:  # ... and per image (a long strip of scribbles): the rest are cut simply
                spans = []
            budget -= len(spans)
        if spans:
            seams = _seams(strength, cuts, round(SEAM_REACH * size))
            pen = box_stroke_width(strength, size) if normalise_strokes else None  # once, not for every span
        else:
            boxes = _split_touching(group, labels, ink, size)
            cuts = [b[0] - group.box[0] for b in boxes] + [group.width]
            spans = [(i, i + 1) for i in range(len(boxes))]
            seams = np.repeat(np.asarray(cuts)[:, None], group.height, 1)  # straight down
            pen = None  # each digit's own
        digits = []
        for a, b in spans:
            digit = _cut_out(strength, group, seams[a], seams[b], normalise_strokes, pen)
            if digit is None:  # no ink between the two cuts
                continue
            box, pixels = digit
            digits.append((a, b, Digit(_scale_box(box, factor, gray.shape), pixels)))
        if digits:
            out.append(Choices(tuple(cuts), tuple((a, b) for a, b, _ in digits), tuple(d for *_, d in digits)))
    if not out:
        raise ImageError(BLANK)
    return out


# With recognition, a group this many times wider than high may be digits that touch or overlap (two overlapping
# by a third are about 1.1 times as wide as high): its cuts are tried, and the whole stays one of the choices.
MAYBE_SEVERAL = 0.75
# A stretch between two cuts may be one digit if it is this many typical digit sizes wide (a 1 is narrow; MNIST
# digits are at most a size wide, and a cut may leave a little of the next one).
SPAN_WIDTH = (0.2, 1.25)
CUT_SPACING = 0.1  # candidate cuts are the least inked columns of windows this fraction of a size wide ...
CUT_STROKES = 2  # ... that cross no more than this many strokes (the seam winds round them; three: inside an 8)
MOST_CUTS = 96  # more than this (a long line, an underline: about 9 digits touching) and cuts are not tried
MOST_STRETCHES = 2048  # stretches read in one image, at most: groups past it are cut at their weakest columns
MOST_LINE = 8192  # strip pixels the line network reads in one image, at most (340 digits apart, 500 touching):
# groups past it are cut as above


# For the line network: groups closer than JOIN_GAP sizes are read together (a digit broken into pieces side by
# side, digits that nearly touch), and a group wider than LINE_SEVERAL of its height is read by it. Measured
# (docs/benchmarks.md): 0.15 and 0.5 read more numbers, apart and touching, than 0 or 0.3 and 0.75.
JOIN_GAP = 0.15
LINE_SEVERAL = 0.5


def _runs(groups: list[_Group], gap: float) -> tuple[list[_Group], dict[int, list[_Group]]]:
    """Groups less than ``gap`` apart joined into one, left to right; and for each joined one (by id), the
    groups it was made of."""
    out: list[_Group] = []
    parts: dict[int, list[_Group]] = {}
    for g in groups:
        if out and g.box[0] - out[-1].box[2] < gap:
            last = out[-1]
            merged = _Group(last.labels + g.labels, _union(last.box, g.box))
            parts[id(merged)] = [*parts.pop(id(last), [last]), g]
            out[-1] = merged
        else:
            out.append(g)
    return out, parts


def _strokes(mask: np.ndarray) -> np.ndarray:
    """How many strokes each column of ``mask`` (ink: True) crosses: its separate runs of ink."""
    return mask[0] + np.count_nonzero(mask[1:] & ~mask[:-1], axis=0)


def _candidate_cuts(mask: np.ndarray, strength: np.ndarray, size: float) -> list[int]:
    """Columns of a wide group where one digit may end and the next begin: its edges, and in each window of
    CUT_SPACING sizes, the column that crosses the fewest strokes, then holds the least ink (unless it crosses
    more than CUT_STROKES)."""
    width = mask.shape[1]
    strokes = _strokes(mask)
    profile = strength.sum(0, dtype=np.int64)
    step = max(2, round(CUT_SPACING * size))
    cuts = [0]
    for start in range(step // 2, width - step // 2, step):
        window = range(start, min(width - 1, start + step))
        if window:
            best = min(window, key=lambda i: (strokes[i], profile[i]))
            if strokes[best] <= CUT_STROKES:
                cuts.append(best)
    return sorted({*cuts, width})


# The line networks mark a digit near its right edge (at 0.94 of its width, median, on the bench's numbers; at
# 0.79-1.24 of it in nine cases of ten), so two digits meet just after the first one's mark: 0.07 of the way to
# the next one's, median (-0.16 to 0.23). Their cut is looked for within MEET_WINDOW of that way either side of
# SYMBOLS_MEET (that median rounded down, not tuned further; the window was: docs/benchmarks.md, "eighth round").
# A window round the middle, as if each mark were at its digit's middle, held the place where they meet in few
# cases, and half the digits' boxes were misplaced.
SYMBOLS_MEET, MEET_WINDOW = 0.05, 0.2
SEAM_REACH = 0.2  # a cut may wind this many digit sizes either side of its column, round the strokes in its way
SEAM_BEND = 0.5  # ... each pixel away from its column costing this fraction of a pixel of full ink


def _seams(strength: np.ndarray, cuts: list[int], reach: int) -> np.ndarray:
    """For each cut, the path from the top of the group to its bottom that crosses the least ink (one column
    per row, moving at most one column from row to row, within ``reach`` of the cut's column): where digits
    overlap, a straight cut slices both, and a path winds between their strokes. The edges stay straight.
    All the cuts at once, by dynamic programming down the rows."""
    h, w = strength.shape
    cols = np.asarray(cuts)[:, None] + np.arange(-reach, reach + 1)[None, :]  # each cut's columns
    inside = (cols >= 0) & (cols < w)
    cost = np.where(inside[None], strength[:, np.clip(cols, 0, w - 1)].astype(np.float64), np.inf)  # h×cuts×cols
    cost += SEAM_BEND * 255 * np.abs(np.arange(-reach, reach + 1))[None, None, :] / max(1, reach)
    total = cost[0].copy()
    step = np.zeros(cost.shape, np.int8)  # which way each row's best path came from: -1, 0 or +1
    for y in range(1, h):
        best = total.copy()
        from_left = total[:, :-1] < best[:, 1:]
        best[:, 1:][from_left] = total[:, :-1][from_left]
        step[y, :, 1:][from_left] = -1
        from_right = total[:, 1:] < best[:, :-1]
        best[:, :-1][from_right] = total[:, 1:][from_right]
        step[y, :, :-1][from_right] = 1
        total = cost[y] + best
    seams = np.empty((len(cuts), h), np.int64)
    at = total.argmin(1)
    for y in range(h - 1, -1, -1):
        seams[:, y] = at
        at = at + step[y, np.arange(len(cuts)), at] if y else at
    seams = cols[np.arange(len(cuts))[:, None], seams]
    seams[0], seams[-1] = cuts[0], cuts[-1]  # the group's own edges
    return seams


def _reaching(spans: list[tuple[int, int]], last: int) -> list[tuple[int, int]]:
    """The spans on some path of spans from cut 0 to cut ``last`` (the others can never be chosen)."""
    forward, backward = {0}, {last}
    for a, b in sorted(spans):
        if a in forward:
            forward.add(b)
    for a, b in sorted(spans, reverse=True):
        if b in backward:
            backward.add(a)
    kept = [(a, b) for a, b in spans if a in forward and b in backward]
    return kept or [(0, last)]  # no way through: the whole group, read as it is


def _cut_out(
    strength: np.ndarray,
    group: _Group,
    left: np.ndarray,
    right: np.ndarray,
    normalise_strokes: bool,
    pen: float | None = None,
) -> tuple[Box, np.ndarray] | None:
    """The group's own ink (``strength``) between two cuts (a column for each row), trimmed: its box (working
    pixels) and 28×28 input (``pen``: the stroke width, if it was measured for the whole group)."""
    lo, hi = int(left.min()), int(right.max())  # the columns either cut reaches: all the rest is outside
    columns = np.arange(lo, hi)[None, :]
    between = np.where((columns >= left[:, None]) & (columns < right[:, None]), strength[:, lo:hi], 0)
    part = bounding_box(between)
    if part is None:
        return None
    x0, y0 = group.box[0] + lo, group.box[1]
    patch = between[part[1] : part[3], part[0] : part[2]]
    if normalise_strokes:
        patch = normalise_stroke(patch, pen)
    return (x0 + part[0], y0 + part[1], x0 + part[2], y0 + part[3]), fit_and_centre(patch)


def best_path(choices: Choices, scores: Sequence[float]) -> list[int]:
    """The spans (indices into ``choices.spans``) that read the group from its left edge to its right: the path
    whose spans' ``scores`` (log-probabilities that each is a digit) sum highest (dynamic programming over the
    cuts, left to right)."""
    last = len(choices.cuts) - 1
    best: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}
    for k in sorted(range(len(choices.spans)), key=lambda k: choices.spans[k]):
        a, b = choices.spans[k]
        if a in best:
            total = best[a][0] + scores[k]
            if b not in best or total > best[b][0]:
                best[b] = (total, [*best[a][1], k])
    if last in best:
        return best[last][1]
    return [max(range(len(scores)), key=scores.__getitem__)]  # no path through: the likeliest digit alone


def _digit_groups(labels: np.ndarray, slices: list, strokes: Sequence[bool], dust: float) -> list[_Group]:
    """Pieces of ink (``labels``, their ``ndimage.find_objects`` slices, whether each holds ink over FAINT) →
    digits, left to right: faint shading, noise and dust (under ``dust`` pixels both ways: as for one digit)
    dropped, pieces of one digit merged (and bars drawn apart given to their digits), punctuation dropped."""
    pieces = [
        _Group([k], (s[1].start, s[0].start, s[1].stop, s[0].stop))
        for k, (s, stroke) in enumerate(zip(slices, strokes, strict=True), 1)
        if s is not None and stroke
    ]
    pieces = [p for p in pieces if p.size >= dust]
    if not pieces:
        return []
    speck = SPECK * _typical_size(pieces)
    pieces = sorted((p for p in pieces if p.size >= speck), key=lambda p: p.box[0])
    groups: list[_Group] = []
    active: list[_Group] = []  # the groups that reach past where this piece starts: only they can overlap it
    for piece in pieces:
        active = [g for g in active if g.box[2] > piece.box[0]]
        best = max(active, key=lambda g: _overlap(g, piece) / min(g.width, piece.width), default=None)
        if best is not None and _overlap(best, piece) >= MERGE_OVERLAP * min(best.width, piece.width):
            best.labels += piece.labels
            best.box = _union(best.box, piece.box)
        else:
            groups.append(piece)
            active.append(piece)
    size = _typical_size(groups)
    digits = [g for g in groups if g.height >= MIN_DIGIT_HEIGHT * size]
    _attach_bars(digits, [g for g in groups if g.height < MIN_DIGIT_HEIGHT * size], size)
    return digits


def _attach_bars(digits: list[_Group], lows: list[_Group], size: float) -> None:
    """Give each digit its bar drawn apart (a 5's top stroke, the pen lifted and the bar drawn further right),
    from the pieces too low for a digit (``lows``; the rest are punctuation). A bar is a stroke across: at least
    BAR_WIDE times as wide as high and at most a digit ``size`` wide. Its columns are the digit's or start
    within BAR_REACH sizes right of them, and its bottom is at the digit's top: from BAR_REACH sizes above it to
    BAR_TOP of the way down. Bars are placed left to right, each to the digit without one yet whose columns it
    shares most (of equals, the one starting furthest right), judged by the digits' boxes as found (not as bars
    widen them). The digits looked at for a bar are those that may reach it: few, unless one digit-high group
    spans the page left of many bars (a box drawn round the number, which is not handled anyway)."""
    reach = BAR_REACH * size
    found = [g.box for g in digits]
    starts = [box[0] for box in found]  # left to right
    reaches = list(itertools.accumulate((box[2] for box in found), max))  # the furthest right any up to k ends
    barred: set[int] = set()
    for low in lows:
        x0, _, x1, bottom = low.box
        if not BAR_WIDE * low.height <= low.width <= size:
            continue
        under = []
        k = bisect.bisect_left(starts, x1) - 1  # the digits starting left of its end, right to left ...
        while k >= 0 and reaches[k] + reach > x0:  # ... while one may still end near enough its start
            _, top, end, foot = found[k]
            if k not in barred and x0 < end + reach and top - reach <= bottom <= top + BAR_TOP * (foot - top):
                under.append(k)
            k -= 1
        if under:
            k = max(under, key=lambda k: (_overlap(digits[k], low), k))
            barred.add(k)
            digits[k].labels += low.labels
            digits[k].box = _union(digits[k].box, low.box)


WIDEST = 1.25  # a digit is at most this many times as wide as it is high (MNIST's: at most 1)


def _typical_size(groups: list[_Group]) -> float:
    """The median size of the big ones (at least half the biggest): digits, not their broken-off parts."""
    return _typical(np.array([g.digit_size for g in groups]))


def _typical(sizes: np.ndarray) -> float:
    return float(np.median(sizes[2 * sizes >= sizes.max()]))


def _typical_of_others(groups: list[_Group]) -> dict[int, float]:
    """For each group (by id), :func:`_typical_size` of the others, or its own height where it is alone. Worked
    out once for each size there is, not for each group (thousands of marks of a few sizes: a few medians)."""
    listed = [g.digit_size for g in groups]
    sizes = np.array(listed)
    by_size: dict[float, float] = {}
    out = {}
    for group, size in zip(groups, listed, strict=True):
        if size not in by_size and len(groups) > 1:
            by_size[size] = _typical(np.delete(sizes, listed.index(size)))
        out[id(group)] = by_size.get(size, float(group.height))
    return out


def _overlap(a: _Group, b: _Group) -> int:
    """How many columns the two have in common."""
    return max(0, min(a.box[2], b.box[2]) - max(a.box[0], b.box[0]))


def _union(*boxes: Box) -> Box:
    x0s, y0s, x1s, y1s = zip(*boxes, strict=True)
    return min(x0s), min(y0s), max(x1s), max(y1s)


def _moved(choices: Choices, dx: int, dy: int) -> Choices:
    """``choices`` found in a part of an image whose corner is at (dx, dy): its boxes in the whole image's pixels."""
    moved = (Digit((d.box[0] + dx, d.box[1] + dy, d.box[2] + dx, d.box[3] + dy), d.pixels) for d in choices.digits)
    line = choices.line
    if line is not None:
        line = dataclasses.replace(line, offset=(line.offset[0] + dx, line.offset[1] + dy))
    return Choices(choices.cuts, choices.spans, tuple(moved), line)


def _split_touching(group: _Group, labels: np.ndarray, ink: np.ndarray, size: float) -> list[Box]:
    """The group's box, or, for digits that touch (a group much wider than a digit of ``size``), one box per
    digit: cut at the weakest columns near where the cuts are expected, each part trimmed to its own ink."""
    x0, y0, x1, y1 = group.box
    if group.width <= SPLIT_WIDTH * max(size, group.height):
        return [group.box]
    mask = np.isin(labels[y0:y1, x0:x1], group.labels)
    strokes = _strokes(mask)
    profile = np.where(mask, ink[y0:y1, x0:x1], 0).sum(0, dtype=np.int64)
    parts = max(2, round(group.width / (DIGIT_WIDTH * size)))
    step = group.width / parts
    cuts = [0]
    for j in range(1, parts):
        expected = j * step
        window = range(max(cuts[-1] + 1, int(expected - SPLIT_WINDOW * step)), int(expected + SPLIT_WINDOW * step) + 1)
        # The weakest column: it crosses the fewest strokes, then holds the least ink, then is nearest to where
        # the cut is expected. Where two digits touch, a column crosses one stroke; if every column near the
        # expected cut crosses two or more, this is one wide digit (a 0, a 2, a 5 written large), not a cut.
        cut = min(window, key=lambda i: (strokes[i], profile[i], abs(i - expected)))
        if strokes[cut] <= 1:
            cuts.append(cut)
    cuts.append(group.width)
    boxes = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        part = bounding_box(mask[:, a:b])
        if part is not None:
            boxes.append((x0 + a + part[0], y0 + part[1], x0 + a + part[2], y0 + part[3]))
    if any(box[3] - box[1] < MIN_DIGIT_HEIGHT * size for box in boxes):
        return [group.box]  # a part too low for a digit: the long bar of one wide digit (a 5, a 7), not a cut
    return boxes


def _scale_box(box: Box, factor: int, shape: tuple[int, int]) -> Box:
    """A box in working pixels → the same box in the original image's pixels."""
    h, w = shape
    return box[0] * factor, box[1] * factor, min(w, box[2] * factor), min(h, box[3] * factor)


# The line network's input (:func:`line_strip`): a group of ink with its height fitted to LINE_BOX px (as MNIST
# fits a digit's longer side to 20 px), LINE_PAD px of black round it, its width a multiple of FRAME: the
# network gives one output a FRAME px column.
LINE_BOX = 20
LINE_PAD = 4
FRAME = 4


def line_strip(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """A group of ink (white on black, cropped to it) as the line network reads it, and its scale (strip
    pixels per pixel of ``ink``)."""
    h, w = ink.shape
    scale = LINE_BOX / h
    width = max(1, round(w * scale))
    small = resize_ink(ink, (width, LINE_BOX))
    total = -(-(width + 2 * LINE_PAD) // FRAME) * FRAME
    strip = np.zeros((LINE_BOX + 2 * LINE_PAD, total), np.uint8)
    strip[LINE_PAD : LINE_PAD + LINE_BOX, LINE_PAD : LINE_PAD + width] = small
    return strip, scale
