"""Reading a number: segmentation into digits (`segment_digits`) and `Reader.read_numbers`.

Digits are drawn with Pillow as pen strokes in a box, so each test knows where every digit is. The network is
a tiny one with random weights: what it reads is arbitrary; boxes, order and counts are what is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import centre_of_mass, reader_of
from PIL import Image, ImageDraw, ImageFilter

from mnistctl.imaging import ImageError, load_image, segment_digits
from mnistctl.results import NumberReading, ReadFailure

# Pen strokes of each digit in a unit box (x right, y down): a list of polylines.
STROKES = {
    "0": [[(0.5, 0), (0.9, 0.2), (0.95, 0.5), (0.85, 0.85), (0.5, 1), (0.15, 0.85), (0.05, 0.5), (0.1, 0.2), (0.5, 0)]],
    "1": [[(0.3, 0.15), (0.55, 0), (0.55, 1)]],
    "2": [[(0.1, 0.25), (0.35, 0.02), (0.7, 0.02), (0.9, 0.25), (0.85, 0.45), (0.1, 1), (0.95, 1)]],
    "3": [[(0.1, 0.05), (0.85, 0.05), (0.45, 0.42), (0.85, 0.6), (0.9, 0.85), (0.6, 1), (0.1, 0.95)]],
    "4": [[(0.7, 1), (0.7, 0), (0.05, 0.68), (0.95, 0.68)]],
    "5": [[(0.9, 0.02), (0.2, 0.02)], [(0.2, 0.02), (0.15, 0.45), (0.6, 0.4), (0.9, 0.65), (0.8, 0.95), (0.1, 0.97)]],
    "7": [[(0.05, 0.02), (0.95, 0.02), (0.4, 1)]],
}
# A 5 whose bar the pen did not join to the body, and a 1 with a gap in its stroke.
BROKEN = {
    "5": [[(0.95, 0.02), (0.3, 0.02)], [(0.18, 0.12), (0.15, 0.45), (0.6, 0.4), (0.9, 0.65), (0.8, 0.95), (0.1, 0.97)]],
    "1": [[(0.3, 0.15), (0.55, 0), (0.55, 0.45)], [(0.55, 0.55), (0.55, 1)]],
}


def draw_digit(draw: ImageDraw.ImageDraw, digit: str, box: tuple[int, int, int, int], ink: int, broken=False) -> None:
    x0, y0, x1, y1 = box
    width = max(3, (y1 - y0) // 9)
    for line in (BROKEN if broken else STROKES)[digit]:
        points = [(x0 + u * (x1 - x0), y0 + v * (y1 - y0)) for u, v in line]
        draw.line(points, fill=ink, width=width, joint="curve")


def page(
    digits: list[tuple[str, tuple[int, int, int, int]]],
    size: tuple[int, int] = (600, 200),
    dark_on_light: bool = True,
    broken: frozenset[int] = frozenset(),
) -> np.ndarray:
    """A gray page with ``digits`` (digit, box) drawn on it; ``broken``: the positions drawn broken."""
    paper, ink = (235, 30) if dark_on_light else (10, 240)
    img = Image.new("L", size, paper)
    draw = ImageDraw.Draw(img)
    for k, (digit, box) in enumerate(digits):
        draw_digit(draw, digit, box, ink, broken=k in broken)
    return np.array(img)


def ink_box(digit: str, box: tuple[int, int, int, int], size: tuple[int, int] = (600, 200), broken=False) -> tuple:
    """Where the ink of ``digit`` drawn in ``box`` is: (x0, y0, x1, y1), x1 and y1 exclusive."""
    alone = page([(digit, box)], size, broken=frozenset({0}) if broken else frozenset())
    rows, cols = np.flatnonzero((alone < 128).any(1)), np.flatnonzero((alone < 128).any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def close(found: tuple[int, ...], expected: tuple[int, ...], slack: int = 3) -> bool:
    """A found box matches the ink's box up to a few pixels (anti-aliasing, the ink threshold)."""
    return all(abs(a - b) <= slack for a, b in zip(found, expected, strict=True))


# --------------------------------------------------------------------------------------------- segmentation


def test_a_number_is_read_left_to_right_whatever_the_sizes_and_baselines() -> None:
    drawn = [
        ("2", (40, 50, 100, 150)),
        ("0", (130, 20, 190, 100)),
        ("4", (230, 70, 260, 130)),
        ("7", (300, 40, 380, 180)),
    ]
    digits = segment_digits(page(drawn[::-1]))  # drawn right to left: the order comes from the positions
    assert len(digits) == 4
    for digit, (name, box) in zip(digits, drawn, strict=True):
        assert close(digit.box, ink_box(name, box)), (digit.box, ink_box(name, box))
        assert digit.pixels.shape == (28, 28) and digit.pixels.dtype == np.uint8
        assert digit.pixels.max() == 255 and digit.pixels[0].max() == 0  # white on black, MNIST-style
        cy, cx = centre_of_mass(digit.pixels)
        assert abs(cy - 14) <= 1.5 and abs(cx - 14) <= 1.5


def test_light_ink_on_dark_gives_the_same_digits() -> None:
    drawn = [("1", (40, 40, 90, 160)), ("5", (130, 40, 210, 160)), ("3", (250, 40, 330, 160))]
    dark_ink = segment_digits(page(drawn))
    light_ink = segment_digits(page(drawn, dark_on_light=False))
    assert [d.box for d in dark_ink] == [d.box for d in light_ink]
    assert all(close(d.box, ink_box(*drawn_digit)) for d, drawn_digit in zip(dark_ink, drawn, strict=True))
    assert len(segment_digits(page(drawn), invert="yes")) == 3
    with pytest.raises(ImageError, match="blank"):  # forced the wrong way, there is no ink
        segment_digits(page(drawn), invert="no")


def test_a_broken_stroke_is_one_digit() -> None:
    drawn = [("1", (40, 40, 90, 160)), ("0", (130, 40, 210, 160))]
    gray = page(drawn, broken=frozenset({0}))
    assert gray[100, 40 + int(0.55 * 50)] == 235  # the 1 really has a gap
    digits = segment_digits(gray)
    assert len(digits) == 2 and close(digits[0].box, ink_box(*drawn[0], broken=True))


def test_the_detached_bar_of_a_5_belongs_to_it() -> None:
    drawn = [("5", (40, 40, 120, 160)), ("7", (160, 40, 240, 160))]
    digits = segment_digits(page(drawn, broken=frozenset({0})))
    assert len(digits) == 2
    assert close(digits[0].box, ink_box(*drawn[0], broken=True))  # the box reaches up to the bar
    assert digits[0].pixels[:7, 18:].sum() > 0  # and the bar is in what the network sees: ink at the top right


@pytest.mark.parametrize("bar", [(0.7, 1.3), (1.0, 1.45)], ids=["reaching-past-the-body", "right-of-the-body"])
def test_a_5s_bar_drawn_apart_to_the_right_belongs_to_it(bar: tuple[float, float]) -> None:
    """MNIST's writers often lift the pen before a 5's bar and draw it further right: over only part of the body's
    columns, or just past them. It is the 5's, not punctuation (a bar alone is lower than any digit)."""
    gray = page([("7", (260, 40, 340, 160))])
    img = Image.fromarray(gray)
    draw = ImageDraw.Draw(img)
    x0, y0, w, h = 40, 40, 80, 120
    body = BROKEN["5"][1]
    draw.line([(x0 + u * w, y0 + v * h) for u, v in body], fill=30, width=h // 9, joint="curve")
    draw.line([(x0 + bar[0] * w, y0 + 0.02 * h), (x0 + bar[1] * w, y0 + 0.02 * h)], fill=30, width=h // 9)
    digits = segment_digits(np.array(img))
    assert len(digits) == 2
    assert digits[0].box[1] <= y0 + 0.02 * h and digits[0].box[2] >= x0 + bar[1] * w  # the bar is in the 5's box
    assert digits[0].pixels[:7, 18:].sum() > 0  # and in what the network sees: ink at the top right


# Marks beside a 3 (ink box x 40-110, y 40-160) that are not its bar: drawn as (kind, box).
NOT_BARS = {
    "minus-sign": ("rectangle", (114, 95, 150, 108)),  # at the middle of the 3's height
    "apostrophe": ("rectangle", (116, 40, 124, 62)),  # taller than wide, at the 3's top
    "degree-sign": ("ellipse", (116, 36, 136, 56)),
    "dash-far-above-to-the-right": ("rectangle", (112, 0, 150, 8)),
}


@pytest.mark.parametrize("mark", NOT_BARS.values(), ids=NOT_BARS.keys())
def test_punctuation_beside_a_digit_is_not_its_bar(mark: tuple[str, tuple[int, int, int, int]]) -> None:
    drawn = [("3", (40, 40, 110, 160)), ("1", (200, 40, 250, 160))]
    gray = page(drawn)
    img = Image.fromarray(gray)
    kind, box = mark
    getattr(ImageDraw.Draw(img), kind)(box, fill=30)
    digits = segment_digits(np.array(img))
    assert [d.box for d in digits] == [d.box for d in segment_digits(gray)]


def test_a_digit_takes_one_bar() -> None:
    """Dashes in a row along a digit's top do not chain onto it, each reaching from the last one's end."""
    drawn = [("3", (40, 40, 110, 160))]
    gray = page(drawn)
    img = Image.fromarray(gray)
    for x in range(118, 400, 30):  # the 3's ink ends at x = 110; a bar may start 19 px (0.15 sizes) past it
        ImageDraw.Draw(img).rectangle((x, 40, x + 24, 48), fill=30)
    (digit,) = segment_digits(np.array(img))
    assert digit.box[2] <= 118 + 24 + 3
    img = Image.fromarray(gray)  # two bars, both within reach of the 3 as found: the one it shares most columns with
    ImageDraw.Draw(img).rectangle((113, 40, 135, 47), fill=30)
    ImageDraw.Draw(img).rectangle((127, 26, 152, 33), fill=30)
    (digit,) = segment_digits(np.array(img))
    assert digit.box[1] > 33 and digit.box[2] <= 136 + 3


def test_specks_and_punctuation_are_not_digits() -> None:
    drawn = [("3", (40, 40, 110, 160)), ("1", (200, 40, 250, 160)), ("4", (300, 40, 380, 160))]
    gray = page(drawn)
    img = Image.fromarray(gray)
    draw = ImageDraw.Draw(img)
    for x, y in ((10, 10), (150, 180), (450, 30), (520, 150), (280, 20)):
        draw.ellipse((x, y, x + 3, y + 3), fill=30)  # dust
    draw.rectangle((140, 95, 175, 108), fill=30)  # a minus sign between the 3 and the 1
    draw.ellipse((270, 148, 282, 160), fill=30)  # a decimal point between the 1 and the 4
    digits = segment_digits(np.array(img))
    assert [d.box for d in digits] == [d.box for d in segment_digits(gray)]
    assert len(digits) == 3


def test_touching_digits_are_cut_apart() -> None:
    drawn = [("0", (40, 40, 130, 160)), ("4", (121, 40, 221, 128))]  # the 4's bar starts on the 0
    gray = page(drawn)
    from scipy import ndimage

    assert ndimage.label(gray < 128, structure=np.ones((3, 3)))[1] == 1  # one piece of ink
    digits = segment_digits(gray)
    assert len(digits) == 2
    cut = digits[1].box[0]
    assert 115 <= cut <= 140 and digits[0].box[2] <= cut  # near where the two meet
    assert close(digits[0].box[:2], ink_box(*drawn[0])[:2]) and close(digits[1].box[2:], ink_box(*drawn[1])[2:])


def test_three_touching_digits_make_three() -> None:
    drawn = [("0", (40, 40, 136, 160)), ("0", (130, 40, 226, 160)), ("0", (220, 40, 316, 160))]  # each on the next
    gray = page(drawn)
    from scipy import ndimage

    assert ndimage.label(gray < 128, structure=np.ones((3, 3)))[1] == 1
    digits = segment_digits(gray)
    assert len(digits) == 3
    assert abs(digits[1].box[0] - 133) <= 10 and abs(digits[2].box[0] - 223) <= 10


def test_small_digits_on_a_big_page_are_found_where_they_are() -> None:
    """Digits 30 px high on a 4000×3000 page: read from the page's own pixels round them, boxes in its pixels."""
    drawn = [(d, (1500 + 40 * k, 2000, 1522 + 40 * k, 2030)) for k, d in enumerate("20475")]
    digits = segment_digits(page(drawn, size=(4000, 3000)))
    assert len(digits) == 5
    for digit, (name, box) in zip(digits, drawn, strict=True):
        assert close(digit.box, ink_box(name, box, size=(4000, 3000))), (digit.box, box)


def test_a_hundred_digits_in_a_row_are_a_hundred() -> None:
    """A long strip keeps its digits' pixels: it is reduced by its area, not by its longer side."""
    text = "2047153" * 14 + "07"
    drawn = [(d, (10 + 26 * k, 10, 26 + 26 * k, 32)) for k, d in enumerate(text)]  # 22 px high, 16 wide
    size = (26 * len(text) + 20, 42)
    digits = segment_digits(page(drawn, size=size))
    assert len(digits) == len(text) == 100
    assert all(close(d.box, ink_box(*drawn_k, size=size)) for d, drawn_k in zip(digits, drawn, strict=True))


def test_a_long_strip_of_scribbles_is_bounded_work() -> None:
    """A megapixel strip of zigzags, each wide enough to be digits that touch: the stretches read are capped
    per image (the groups past the cap are cut at their weakest columns), not tens of thousands."""
    from mnistctl.imaging.segment import MOST_LINE, MOST_STRETCHES, segment_choices

    img = Image.new("L", (26000, 40), 255)
    draw = ImageDraw.Draw(img)
    for k in range(100):
        draw.line([(10 + 258 * k + 10 * i, 5 if i % 2 else 35) for i in range(26)], fill=0, width=3)
    groups = segment_choices(np.asarray(img))
    assert len(groups) == 100 and sum(len(g.spans) for g in groups) <= 2 * MOST_STRETCHES
    # For the line network, the strips are capped per image too; the groups past the cap are cut. (With gaps of
    # 8 px, the zigzags are near enough to be joined into one, too long a strip: they are taken one by one.)
    for gap in (8, 40):
        img = Image.new("L", (100 * (250 + gap), 40), 255)
        draw = ImageDraw.Draw(img)
        for k in range(100):
            draw.line([(10 + (250 + gap) * k + 10 * i, 5 if i % 2 else 35) for i in range(26)], fill=0, width=3)
        groups = segment_choices(np.asarray(img), lines=True)
        strips = [g.line.strip.shape[1] for g in groups if g.line is not None]
        assert sum(strips) <= MOST_LINE + 16  # the last one a margin over
        assert 0 < len(strips) < 100
        assert sum(len(g.spans) for g in groups if g.line is None) <= 2 * MOST_STRETCHES


def test_thousands_of_marks_are_compared_with_the_others_in_bounded_work(monkeypatch) -> None:
    """Each group is judged against the typical size of the others: worked out once for each size there is, not
    once for each of 2,199 marks (which took most of a minute on a megapixel strip of them)."""
    from mnistctl.imaging import segment

    strip = np.full((30, 33000), 255, np.uint8)
    for x in range(4, 33000 - 15, 15):
        strip[5:27, x : x + 2] = 0  # a stroke as tall as a digit
        strip[5:9, x + 3 : x + 11] = 0  # and a bar at its top drawn apart (not dust: 8 px, on so long a page)
    medians = []
    typical = segment._typical
    monkeypatch.setattr(segment, "_typical", lambda sizes: medians.append(sizes.size) or typical(sizes))
    groups = segment.segment_choices(strip)
    assert len(groups) == 2199 and all(g.digits[0].box[2] - g.digits[0].box[0] == 11 for g in groups)  # with bars
    assert len(medians) <= 10


def test_a_blank_page_has_no_number() -> None:
    for gray in (np.full((200, 600), 235, np.uint8), np.zeros((200, 600), np.uint8)):
        with pytest.raises(ImageError, match="^blank image: no ink found$"):
            segment_digits(gray)
    dusty = np.full((200, 600), 235, np.uint8)
    dusty[50:52, 300:302] = 20
    with pytest.raises(ImageError, match="blank"):
        segment_digits(dusty)


def test_a_big_photo_is_reduced_but_boxes_are_in_its_own_pixels() -> None:
    drawn = [("2", (200, 300, 600, 1100)), ("5", (800, 300, 1200, 1100)), ("1", (1400, 300, 1700, 1100))]
    digits = segment_digits(page(drawn, size=(4000, 1400)))  # reduced by 4 to work on
    assert len(digits) == 3
    expected = [ink_box(*drawn_digit, size=(4000, 1400)) for drawn_digit in drawn]
    assert all(close(d.box, box, slack=8) for d, box in zip(digits, expected, strict=True))  # 4 px of work: 1


def test_segment_digits_wants_a_gray_array() -> None:
    with pytest.raises(TypeError, match="2-D uint8"):
        segment_digits(np.zeros((20, 20, 3), np.uint8))


# --------------------------------------------------------------------------------------------- predicting numbers


def _numbers(tmp_path: Path) -> list[str]:
    first = page([("2", (40, 40, 100, 160)), ("0", (130, 50, 200, 150)), ("4", (230, 40, 300, 170))])
    second = page([("7", (30, 30, 110, 170)), ("1", (150, 40, 190, 160))], dark_on_light=False)
    paths = [str(tmp_path / "204.png"), str(tmp_path / "71.jpg"), str(tmp_path / "blank.png")]
    Image.fromarray(first).save(paths[0])
    Image.fromarray(second).save(paths[1], quality=85)
    Image.new("L", (300, 100), 235).save(paths[2])
    return paths


@pytest.mark.parametrize("workers", [0, 2])
def test_read_numbers(tmp_path: Path, tiny_net: torch.nn.Module, workers: int) -> None:
    paths = _numbers(tmp_path)
    results = list(reader_of(tiny_net).read_numbers(paths, workers=workers, always_answer=True))  # a random net
    assert [len(getattr(r, "digits", ())) for r in results] == [3, 2, 0]
    assert isinstance(results[2], ReadFailure) and results[2].error == "blank image: no ink found"
    for path, n in zip(paths[:2], results[:2], strict=True):
        assert isinstance(n, NumberReading)
        assert n.text == "".join(str(d.digit) for d in n.digits)
        assert n.confidence == min(d.confidence for d in n.digits)
        assert [d.box for d in n.digits] == [d.box for d in segment_digits(load_image(path))]
        for d in n.digits:
            assert 0 <= d.digit <= 9 and abs(sum(d.probabilities) - 1) < 1e-5
            assert d.confidence == pytest.approx(max(d.probabilities))
            assert d.pixels.shape == (28, 28)


def test_the_digits_of_all_images_go_through_the_network_together(tmp_path: Path, tiny_net: torch.nn.Module) -> None:
    paths = _numbers(tmp_path)[:2] * 3
    calls: list[int] = []
    tiny_net.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    reader = reader_of(tiny_net)
    batched = list(reader.read_numbers(paths, workers=0, batch_size=512))
    assert calls == [15]  # the six images' digits in one batch
    calls.clear()
    small = list(reader.read_numbers(paths, workers=0, batch_size=4))
    assert all(n <= 4 + 2 for n in calls)  # batches of about 4 inputs; a number's digits are never split
    for a, b in zip(batched, small, strict=True):
        assert a.text == b.text
        for da, db in zip(a.digits, b.digits, strict=True):
            assert da.probabilities == pytest.approx(db.probabilities, abs=1e-5)


def test_a_number_renders_as_a_line_json_and_a_panel(tmp_path: Path, tiny_net: torch.nn.Module) -> None:
    import json

    from rich.console import Console

    from mnistctl.report import predictions as report

    path = _numbers(tmp_path)[0]
    (n,) = reader_of(tiny_net).read_numbers([path], always_answer=True)
    assert report.number_line(path, n) == f"{path}\t{n.text}\t{n.confidence:.4f}"
    data = json.loads(json.dumps(report.result_json(path, n)))
    assert data["number"] == n.text and len(data["digits"]) == 3
    assert [tuple(d["box"]) for d in data["digits"]] == [d.box for d in n.digits]
    console = Console(record=True, width=200, color_system=None)
    console.print(report.number_panel(path, n))
    text = console.export_text()
    assert n.text in text and path in text
    assert all(f"{d.digit} ({d.confidence:.0%})" in text for d in n.digits)


# --------------------------------------------------------------------------------------------- through the CLI


def _number_file(tmp_path: Path, name: str, digits: str) -> Path:
    boxes = [(30 + 90 * i, 40 + 10 * (i % 2), 90 + 90 * i, 150) for i in range(len(digits))]
    path = tmp_path / name
    Image.fromarray(page(list(zip(digits, boxes, strict=True)), size=(120 + 90 * len(digits), 200))).save(path)
    return path


def test_predict_multi_prints_path_number_confidence(tmp_path: Path, tiny_model: Path) -> None:
    from typer.testing import CliRunner

    from mnistctl.cli import app

    a, b = _number_file(tmp_path, "a.png", "1742"), _number_file(tmp_path, "b.png", "50")
    blank = tmp_path / "blank.png"
    Image.new("L", (300, 120), 255).save(blank)
    runner = CliRunner()
    options = ["predict", "--multi", "--always-answer", "-m", str(tiny_model)]  # a random network: often unsure
    result = runner.invoke(app, [*options, str(a), str(blank), str(b)])
    assert result.exit_code == 1  # the blank page
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(path, len(number)) for path, number, _ in rows] == [(str(a), 4), (str(b), 2)]
    assert all(number.isdigit() and 0 < float(confidence) <= 1 for _, number, confidence in rows)
    assert result.stderr.strip() == f"Error: {blank}: blank image: no ink found — this file was skipped"

    as_json = runner.invoke(app, ["predict", "--multi", "--json", "-m", str(tiny_model), str(a)])
    (record,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert as_json.exit_code == 0 and record["path"] == str(a) and len(record["digits"]) == 4
    assert record["number"] == "".join("?" if d["digit"] is None else str(d["digit"]) for d in record["digits"])
    assert record["confidence"] == min(d["confidence"] for d in record["digits"])
    xs = [d["box"][0] for d in record["digits"]]
    assert xs == sorted(xs) and all(len(d["probabilities"]) == 10 for d in record["digits"])

    refused = runner.invoke(app, ["predict", "--multi", "--no-preprocess", "-m", str(tiny_model), str(a)])
    assert refused.exit_code == 2 and "--no-preprocess" in refused.stderr


def test_predict_multi_in_a_pipeline_with_nul_separated_names(tmp_path: Path, tiny_model: Path) -> None:
    import subprocess

    from helpers import MNISTCTL_SCRIPT

    odd = _number_file(tmp_path, "with\nnewline.png", "31")
    plain = _number_file(tmp_path, "plain.png", "777")
    proc = subprocess.run(
        [MNISTCTL_SCRIPT, "predict", "--multi", "-0", "-", "-m", str(tiny_model)],
        input=f"{odd}\0{plain}\0".encode(),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""  # nothing on stderr when nothing is a terminal
    lines = proc.stdout.decode().split("\n")
    # A name with a newline in it comes through whole, on one line: the newline written as \n.
    assert lines[0].split("\t")[0] == str(odd).replace("\n", "\\n") and len(lines[0].split("\t")[1]) == 2
    assert lines[1].split("\t")[0] == str(plain) and len(lines[1].split("\t")[1]) == 3
    glued = subprocess.run(
        [MNISTCTL_SCRIPT, "predict", "-", "-m", str(tiny_model)],
        input=f"{plain}\0{plain}\0".encode(),
        capture_output=True,
    )
    assert glued.returncode == 2 and b"--null" in glued.stderr and glued.stdout == b""


# --------------------------------------------------------------------------------------------- digits that touch


def test_best_path_takes_the_cuts_the_network_believes() -> None:
    from mnistctl.imaging.segment import Choices, best_path

    digit = segment_digits(page([("1", (30, 30, 60, 150))]))[0]
    # Cuts at 0, 10, 20, 30; spans: the whole, two halves, and the three thirds.
    spans = ((0, 3), (0, 2), (2, 3), (0, 1), (1, 2), (1, 3))
    choices = Choices((0, 10, 20, 30), spans, (digit,) * len(spans))
    assert best_path(choices, [-5.0, -0.1, -0.2, -1.0, -1.0, -1.0]) == [1, 2]  # two sure digits beat one doubt
    assert best_path(choices, [-0.1, -0.1, -0.2, -1.0, -1.0, -1.0]) == [0]  # one sure digit beats two
    assert best_path(choices, [-9.0, -9.0, -9.0, -0.1, -9.0, -0.1]) == [3, 5]
    broken = Choices((0, 10, 20), ((0, 1),), (digit,))  # no way to the right edge: the likeliest span alone
    assert best_path(broken, [-0.5]) == [0]


def test_segment_choices_offers_cuts_through_a_wide_group_only() -> None:
    from mnistctl.imaging.segment import segment_choices

    apart = page([("2", (40, 40, 100, 160)), ("0", (130, 50, 200, 150)), ("4", (230, 40, 300, 170))])
    assert [len(c.spans) for c in segment_choices(apart)] == [1, 1, 1]
    touching = page([("2", (40, 40, 110, 160)), ("0", (100, 40, 170, 160)), ("4", (160, 40, 230, 160))])
    (group,) = segment_choices(touching)  # one piece of ink: three digits that run into each other
    assert len(group.spans) > 3 and group.cuts[0] == 0 and len(group.digits) == len(group.spans)
    assert all(d.pixels.shape == (28, 28) for d in group.digits)
    plain = segment_choices(touching, recognise=False)  # segment_digits' own cuts: one way through each group
    assert all(c.spans == tuple((i, i + 1) for i in range(len(c.spans))) for c in plain)
    assert [d.box for c in plain for d in c.digits] == [d.box for d in segment_digits(touching)]


def test_a_legible_number_whose_digits_touch_is_read_not_called_blank() -> None:
    """Dark ink on uneven, grainy grey paper (whose grain was once taken for ink joining everything), a 1 and a 0
    written into each other, then a 7: read by the bundled model, digit by digit."""
    import mnistctl

    rng = np.random.default_rng(0)
    img = Image.new("L", (260, 160), 0)
    draw = ImageDraw.Draw(img)
    draw.line([(62, 30), (68, 130)], fill=255, width=12)  # a 1 ...
    draw.ellipse([74, 28, 150, 132], outline=255, width=12)  # ... touching a 0
    draw.line([(146, 40), (215, 40), (185, 130)], fill=255, width=12)  # a 7
    ink = np.asarray(img.filter(ImageFilter.GaussianBlur(1.2)), np.float64) / 255
    paper = 180 + 0.05 * (np.arange(260)[None, :] - 130) + rng.normal(0, 6, (160, 260))
    number = np.clip(paper * (1 - ink) + 30 * ink, 0, 255).astype(np.uint8)
    assert len(segment_digits(number)) == 2  # the 1 and the 0 are one piece of ink
    reading = mnistctl.load_reader(device="cpu").read_number(number)
    assert reading.text == "107"
