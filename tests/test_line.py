"""The line network: its input strips, what its outputs are read as, its file, and the reader's use of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import reader_of
from PIL import Image, ImageDraw
from test_numbers import close, ink_box, page

import mnistctl
from mnistctl.errors import MnistctlError
from mnistctl.imaging.segment import FRAME, LINE_BOX, LINE_PAD, Line, line_strip, segment_choices
from mnistctl.line import (
    BLANK_CLASS,
    LINE_MODEL,
    NOT_A_DIGIT_CLASS,
    Member,
    decode,
    decode_surest,
    load_line_model,
    read_line_model,
    save_line_model,
)
from mnistctl.models import LineEnsemble, LineNet
from mnistctl.results import NumberReading


def scores_for(classes: list[int], sure: float = 8.0) -> np.ndarray:
    """Scores (classes × frames) whose likeliest class at each frame is the one given."""
    scores = np.zeros((BLANK_CLASS + 1, len(classes)))
    scores[classes, np.arange(len(classes))] = sure
    return scores


def test_decode_reads_runs_of_one_class_as_one_symbol_and_blanks_as_none() -> None:
    b = BLANK_CLASS
    read = decode(scores_for([b, 3, 3, b, 3, b, b, NOT_A_DIGIT_CLASS, 7]))
    assert [max(range(11), key=p.__getitem__) for p, _ in read] == [3, 3, NOT_A_DIGIT_CLASS, 7]
    assert [frames for _, frames in read] == [(1, 2), (4, 4), (7, 7), (8, 8)]
    for probabilities, _ in read:
        assert len(probabilities) == 11 and sum(probabilities) == pytest.approx(1)


def test_decode_divides_by_the_temperature() -> None:
    ((sharp, _),) = decode(scores_for([5], sure=3.0), temperature=0.5)
    ((soft, _),) = decode(scores_for([5], sure=3.0), temperature=2.0)
    assert max(sharp) > max(soft) > 1 / 11


def test_decode_of_ink_that_no_frame_takes_for_a_symbol_is_still_one_symbol() -> None:
    scores = scores_for([BLANK_CLASS] * 4)
    scores[2, 2] = 7.0  # a 2 is likeliest there, though blank is likelier still
    ((probabilities, frames),) = decode(scores)
    assert frames == (2, 2) and max(range(11), key=probabilities.__getitem__) == 2


def test_a_strip_is_the_ink_at_twenty_px_high_in_a_black_margin() -> None:
    ink = np.zeros((50, 130), np.uint8)
    ink[:, :] = 255
    strip, scale = line_strip(ink)
    assert scale == pytest.approx(LINE_BOX / 50)
    assert strip.shape[0] == LINE_BOX + 2 * LINE_PAD and strip.shape[1] % FRAME == 0
    rows, cols = np.flatnonzero(strip.max(1)), np.flatnonzero(strip.max(0))
    assert (rows[0], rows[-1] + 1) == (LINE_PAD, LINE_PAD + LINE_BOX)
    assert cols[0] == LINE_PAD and cols[-1] + 1 == LINE_PAD + round(130 * scale)


TOUCHING = [("1", (40, 50, 90, 150)), ("0", (75, 50, 150, 150)), ("1", (230, 50, 290, 150))]


def _touching() -> np.ndarray:
    """A 1 and a 0 written into each other, then a 1 apart: one wide group of ink, and one narrow digit."""
    return page(TOUCHING, (360, 200))


def _mark(line: Line, ink: tuple[int, int, int, int]) -> tuple[int, int]:
    """The frames where the line networks mark a digit whose ink is ``ink`` (an image box; working pixels are the
    image's on a page this small): the two either side of its right edge, as the bundled networks mark these."""
    edge = int(((ink[2] - line.group.box[0]) * line.scale + LINE_PAD) // FRAME)
    return edge - 1, edge


def test_a_wide_group_becomes_a_line_only_when_lines_are_asked_for() -> None:
    plain = segment_choices(_touching())
    assert [c.line is None for c in plain] == [True, True]
    first, second = segment_choices(_touching(), lines=True)
    assert first.line is not None and second.line is None
    # Not too wide to be one digit: the whole group is offered to the digit network too.
    assert first.spans == ((0, 1),) and first.digits[0].box == first.line.group.box  # (working pixels = the image's)
    assert first.line.strip.shape[0] == LINE_BOX + 2 * LINE_PAD


def test_a_line_is_cut_where_its_digits_meet_just_after_the_first_ones_mark() -> None:
    # The line networks mark a digit near its right edge (the bundled ones: this 1 at x = 73, this 0 at 150), so
    # two digits meet just after the first one's mark. Looked for midway between the marks, the cut fell inside
    # the 0, and the 1's box took half of it.
    (group, _) = segment_choices(_touching(), lines=True)
    line = group.line
    one_ink, zero_ink = (ink_box(digit, box, (360, 200)) for digit, box in TOUCHING[:2])
    marks = [_mark(line, one_ink), _mark(line, zero_ink)]
    assert marks[1][1] < line.strip.shape[1] // FRAME
    one, zero = line.digits(marks)
    assert close(one.box, one_ink) and close(zero.box, zero_ink)  # the cut is where the two touch
    assert one.pixels.shape == zero.pixels.shape == (28, 28) and one.pixels.max() == 255


def test_the_bundled_networks_read_a_touching_number_with_each_digit_in_its_own_box() -> None:
    reading = mnistctl.load_reader(device="cpu").read_number(_touching())
    assert reading.text == "101"
    for digit, (shape, box) in zip(reading.digits, TOUCHING, strict=True):
        assert close(digit.box, ink_box(shape, box, (360, 200)))


class _Scores:
    """A stand-in for the line networks: the same scores (classes × frames) for every strip of a batch."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = torch.from_numpy(scores).float().log_softmax(0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(1, x.shape[0], *self.scores.shape)


def _sure_7_unsure_0(line: Line) -> tuple[np.ndarray, int]:
    """Line scores for the touching "10": a sure 7 where the 1 is marked, and "0, perhaps" (unsure) where the 0
    is; and the 0's frame."""
    (a, b), (second, _) = (_mark(line, ink_box(digit, box, (360, 200))) for digit, box in TOUCHING[:2])
    classes = [BLANK_CLASS] * (line.strip.shape[1] // FRAME)
    classes[a], classes[b], classes[second] = 7, 7, 0
    scores = scores_for(classes)
    scores[:, second] = 0.0
    scores[[0, 6, NOT_A_DIGIT_CLASS], second] = 1.0, 0.9, 0.9
    return scores, second


def test_a_digit_the_line_networks_are_unsure_of_is_read_from_its_cut_out_where_the_digit_network_is_sure() -> None:
    reader = mnistctl.load_reader(device="cpu")
    (group, _) = segment_choices(_touching(), lines=True)
    line = group.line
    scores, second = _sure_7_unsure_0(line)
    reader.line = _Scores(scores)
    # The 0 the line was unsure of is read by the digit network from the digit cut out for it; the 7 it was sure
    # of stays its reading (the digit network would read a 1 there); the last 1 is a group alone.
    assert reader.read_number(_touching()).text == "701"
    # "Not a digit", the line networks say: that stands (a ten-class digit network could not say it).
    scores[[0, 6, NOT_A_DIGIT_CLASS], second] = 1.0, 0.9, 3.0
    reader.line = _Scores(scores)
    assert reader.read_number(_touching()).text == "7?1"
    # Where the digit network does not take the cut-out for a digit either, the line's reading stands: "?".
    blotted = _touching()
    blotted[60:140, 95:135] = 30  # the 0 filled in: a blot
    scores[[0, 6, NOT_A_DIGIT_CLASS], second] = 1.0, 0.9, 0.9
    reader.line = _Scores(scores)
    read = reader.read_number(blotted)
    (blot_line,) = [g.line for g in segment_choices(blotted, lines=True) if g.line is not None]
    unsure = reader._symbols([blot_line.strip])[0][1][0]
    assert read.text == "7?1" and read.digits[1].probabilities == pytest.approx(unsure[:10])  # the line's
    # A symbol that no ink is left for (four marked in the first four frames: the second one's cut-out is empty)
    # is not read from its empty 28×28, which the digit network takes for a sure 1.
    classes = [2, 3, 7, 0] + [BLANK_CLASS] * (line.strip.shape[1] // FRAME - 4)
    scores = scores_for(classes)
    scores[:, 1] = 0.0
    scores[[3, 8, NOT_A_DIGIT_CLASS], 1] = 1.0, 0.9, 0.9
    reader.line = _Scores(scores)
    assert not line.digits([(k, k) for k in range(4)])[1].pixels.any()
    assert reader.read_number(_touching()).text == "2?701"


class _Zero(torch.nn.Module):
    """A digit network that reads every input as a 0, with probability ``p`` (and "not a digit" as likely as each
    other digit)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.full((x.shape[0], 11), (1 - self.p) / 10)
        probabilities[:, 0] = self.p
        return probabilities.log()


class _ZeroWhereNarrow(_Zero):
    """As :class:`_Zero`, but an input whose ink is nearly as wide as high (the touching "10" read whole: 18 of
    its 20 px; the 0 cut out of it: 14) is not a digit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ink = x.reshape(-1, 28, 28) > 0.5
        wide = ink.any(1).sum(1) >= 0.85 * ink.any(2).sum(1)
        return torch.where(wide[:, None], torch.tensor([-9.0] * 10 + [0.0]), super().forward(x))


def test_the_digit_networks_reading_of_a_cut_out_stands_only_where_it_is_at_least_nine_tenths_sure() -> None:
    (group, _) = segment_choices(_touching(), lines=True)
    scores, _ = _sure_7_unsure_0(group.line)
    for p, number in ((0.7, "7?0"), (0.95, "700")):  # the lone 1, read by this network, is a 0 either way
        reader = reader_of(_ZeroWhereNarrow(p))
        reader.line = _Scores(scores)
        assert reader.read_number(_touching()).text == number


def test_one_digit_the_line_networks_read_as_two_is_the_digit_networks_where_it_is_surer_of_the_whole() -> None:
    """A 0 alone, which the line networks read as "60": the 6 three in four, the 0 nearly sure (together 0.75).
    The digit network's 0 stands where it is surer of it than that, and not where it is less sure."""
    zero = page([("0", (60, 50, 135, 150))], (200, 200))
    (group,) = segment_choices(zero, lines=True)
    assert group.line is not None and group.spans == ((0, 1),)  # read by both: it may be one digit
    frames = group.line.strip.shape[1] // FRAME
    classes = [BLANK_CLASS] * frames
    classes[1], classes[frames - 2] = 6, 0
    scores = scores_for(classes)
    scores[:, 1] = 0.0
    scores[6, 1] = np.log(0.75 * BLANK_CLASS / 0.25)  # p = 0.75 against the eleven other classes at 0
    for p, number in ((0.9, "0"), (0.6, "60")):
        reader = reader_of(_Zero(p))
        reader.line = _Scores(scores)
        assert reader.read_number(zero).text == number


def test_a_line_model_is_saved_in_half_precision_and_loads_the_same(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = LineNet().eval()
    path = tmp_path / "line.pt"
    save_line_model([Member(net, 1.3, {"command": "a test"})], path)
    (member,) = read_line_model(path)
    assert member.temperature == 1.3 and member.made == {"command": "a test"} and path.stat().st_size < 600_000
    x = torch.rand(2, 1, 28, 64)
    with torch.inference_mode():
        assert torch.allclose(member.net(x), net(x), atol=0.05)
        # Loaded for reading: each network's log-probabilities at its temperature, stacked.
        (one,) = load_line_model(path, torch.device("cpu"))(x)
        assert torch.allclose(one, (net(x) / 1.3).log_softmax(1), atol=0.05)
        other = LineNet().eval()
        save_line_model([Member(net, 1.3, {}), Member(other, 0.9, {})], path)
        both = torch.stack([(net(x) / 1.3).log_softmax(1), (other(x) / 0.9).log_softmax(1)])
        assert torch.allclose(load_line_model(path, torch.device("cpu"))(x), both, atol=0.05)


def test_of_several_networks_readings_the_likeliest_under_all_of_them_is_taken() -> None:
    b = BLANK_CLASS

    def classes(read: list) -> list[int]:
        return [max(range(11), key=p.__getitem__) for p, _ in read]

    sure_pair = scores_for([b, 3, b, 8, b], sure=10.0)  # "38", sure of the 8
    fairly_one = scores_for([b, 3, b, b, b], sure=6.0)  # "3": blank where the 8 is, less sure of it
    for order in ((sure_pair, fairly_one), (fairly_one, sure_pair)):
        assert classes(decode_surest(np.stack(order))) == [3, 8]  # not the shorter reading for being short
    sure_one = scores_for([b, 3, b, b, b], sure=10.0)
    fairly_pair = scores_for([b, 3, b, 8, b], sure=6.0)
    for order in ((sure_one, fairly_pair), (fairly_pair, sure_one)):
        assert classes(decode_surest(np.stack(order))) == [3]  # nor the longer one
    # The less sure network's reading, where the surer one only just took a frame for blank: not the reading
    # of whichever network is surest, nor the one whose symbols' confidences multiply to the most.
    only_just = scores_for([b, 3, b, b, b], sure=10.0)
    only_just[b, 3], only_just[8, 3] = 1.0, 0.9
    assert classes(decode(only_just)) == [3]
    for order in ((only_just, fairly_pair), (fairly_pair, only_just)):
        assert classes(decode_surest(np.stack(order))) == [3, 8]
    # Two networks that agree, peaking in different frames: "35" (a mean frame by frame would lose the 5).
    early, late = scores_for([b, 3, b, 5, b, b]), scores_for([b, 3, b, b, 5, b])
    early[b, 4], late[b, 3] = 9.0, 9.0
    assert classes(decode_surest(np.stack([early, late]))) == [3, 5]
    assert classes(decode((early + late) / 2)) == [3]  # what the mean would have read
    broken = np.full_like(sure_pair, np.nan)  # a network gone wrong: no reading can be scored, none is a crash
    ((probabilities, _),) = decode_surest(np.stack([broken, sure_pair]))  # the first's: unsure, so "?"
    assert all(np.isnan(probabilities))
    (alone,) = decode_surest(sure_one[None])  # one network: its reading
    assert alone == decode(sure_one)[0]


def test_the_reader_reads_each_strip_of_a_batch_by_all_its_networks(tiny_net: torch.nn.Module) -> None:
    torch.manual_seed(0)
    nets = [LineNet().eval(), LineNet().eval()]
    reader = reader_of(tiny_net)
    reader.line = LineEnsemble(nets, [1.0, 1.3])
    strips = [np.random.default_rng(k).integers(0, 256, (28, 64), dtype=np.uint8) for k in range(3)]
    together = reader._symbols(strips)  # one batch of three strips of one width
    for strip, read in zip(strips, together, strict=True):
        with torch.inference_mode():
            alone = reader.line(torch.from_numpy(strip[None, None]).float().div(255))
        expected = decode_surest(alone[:, 0])  # the same, to rounding (a batch of three may round otherwise)
        assert [frames for _, frames in read] == [frames for _, frames in expected]
        assert np.allclose([p for p, _ in read], [p for p, _ in expected], atol=1e-5)


def test_a_damaged_line_model_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "line.pt"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(MnistctlError, match="line.pt"):
        load_line_model(bad, torch.device("cpu"))
    torch.save({"format": "something else"}, bad)
    with pytest.raises(MnistctlError, match="not an mnistctl line model"):
        load_line_model(bad, torch.device("cpu"))
    torch.save({"format": "mnistctl-line/1", "state_dict": {}}, bad)  # the first release's format
    with pytest.raises(MnistctlError, match=r"another mnistctl \(mnistctl-line/1; this one reads mnistctl-line/2\)"):
        load_line_model(bad, torch.device("cpu"))
    good = tmp_path / "good.pt"
    save_line_model([Member(LineNet(), 1.0, {})], good)
    for change, problem in (
        (lambda w: w.__setitem__("sequence.6.bias", torch.full((12,), float("nan"))), "not all finite"),
        (lambda w: w.pop("sequence.6.bias"), "lacks weight 'sequence.6.bias'"),
        (lambda w: w.__setitem__("extra", torch.zeros(1)), "unknown weight 'extra'"),
        (lambda w: w.__setitem__("sequence.6.bias", torch.zeros(13)), r"not a \(12,\) tensor"),
        (lambda w: w.__setitem__("sequence.6.bias", torch.zeros(12, dtype=torch.complex64)), "not a"),
        (lambda w: w.__setitem__("features.2.running_var", -torch.ones(32)), "negative variance"),
    ):
        saved = torch.load(good, weights_only=True)
        change(saved["members"][0]["state_dict"])
        torch.save(saved, bad)
        with pytest.raises(MnistctlError, match=problem):
            load_line_model(bad, torch.device("cpu"))
    saved = torch.load(good, weights_only=True)
    saved["members"][0]["temperature"] = 2  # a whole number is a number
    torch.save(saved, bad)
    assert read_line_model(bad)[0].temperature == 2.0
    saved["members"] = saved["members"] * 5
    torch.save(saved, bad)
    with pytest.raises(MnistctlError, match="1 to 4 networks"):
        load_line_model(bad, torch.device("cpu"))


def test_the_bundled_reader_has_the_line_network_and_false_leaves_it_out() -> None:
    import mnistctl

    assert mnistctl.load_reader(device="cpu").meta.line_model == str(LINE_MODEL)
    assert mnistctl.load_reader(device="cpu", line_model=False).meta.line_model is None
    assert mnistctl.load_reader(device="cpu", line_model=None).meta.line_model == str(LINE_MODEL)
    with pytest.raises(mnistctl.UsageError, match="line_model must be True, False or a path"):
        mnistctl.load_reader(device="cpu", line_model=3)


def test_a_number_with_a_line_is_read_by_the_line_network(tiny_net: torch.nn.Module) -> None:
    """Which digits are read depends on the weights (random here): that the touching pair is read by the line
    network, and the 1 apart by the digit network, with a box and a 28×28 input for each, is what is tested."""
    torch.manual_seed(0)
    line = LineNet().eval()
    calls: list[tuple[int, ...]] = []
    line.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    reader = reader_of(tiny_net)
    reader.line = LineEnsemble([line], [1.0])
    reading = reader.read_number(_touching(), always_answer=True)
    assert len(calls) == 1 and calls[0][:3] == (1, 1, LINE_BOX + 2 * LINE_PAD)
    assert len(reading.digits) >= 2
    for d in reading.digits:
        assert d.pixels.shape == (28, 28) and d.box[2] > d.box[0]
    assert reading.digits[-1].box[0] >= 225  # the 1, read alone, is last


def test_the_bundled_line_network_reads_numbers_that_touch() -> None:
    """Numbers drawn with pen strokes (not MNIST's writers), digits running into each other."""
    from test_numbers import draw_digit

    import mnistctl

    reader = mnistctl.load_reader(device="cpu")
    for text, step in (("4751", 0.8), ("2031", 0.75), ("70", 0.7)):
        img = Image.new("L", (80 + 80 * len(text), 200), 235)
        draw = ImageDraw.Draw(img)
        for k, digit in enumerate(text):
            x = 40 + round(k * 100 * step)
            draw_digit(draw, digit, (x, 50, x + 100 if digit != "1" else x + 60, 150), 30)
        assert reader.read_number(np.asarray(img)).text == text


def test_numbers_whose_digits_all_touch_stream_as_they_are_read(tiny_net: torch.nn.Module) -> None:
    """Such a number has no 28×28 input for the digit network, only a strip: its strip counts towards the batch,
    so results come while a stream is still being read."""
    torch.manual_seed(0)
    reader = reader_of(tiny_net)
    reader.line = LineEnsemble([LineNet().eval()], [1.0])
    touching = page([("4", (40, 50, 120, 150)), ("0", (100, 50, 180, 150)), ("2", (160, 50, 240, 150))], (280, 200))
    taken = 0

    def many():  # as good as endless here (finite, so that a failure is an assertion, not a hang)
        nonlocal taken
        for _ in range(200):
            taken += 1
            yield touching

    results = reader.read_numbers(many(), workers=0, batch_size=16)
    first = next(results)
    assert isinstance(first, NumberReading) and taken <= 40
    results.close()


def test_the_bundled_line_model_is_small_and_says_how_it_was_made() -> None:
    assert LINE_MODEL.stat().st_size <= 1 << 20  # #22: each bundled model at most 1 MB
    for member in read_line_model(LINE_MODEL):
        assert member.made["command"].startswith("python bench/line_model.py") and member.made["machine"]
        assert 0.9 < member.made["held_out_exact"] <= 1
