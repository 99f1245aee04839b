"""Declining to answer (#22): "not a digit" from a model's eleventh class, "unsure" below --min-confidence —
results, not errors, in the API, in TSV/JSON lines, on a terminal and over HTTP; --always-answer; the
calibration temperature; training with drawn non-digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import black_on_white, mnist_like, model_file, save
from terminal import run_at_terminal
from typer.testing import CliRunner

import mnistctl
from mnistctl.checkpoint import load_checkpoint
from mnistctl.cli import app
from mnistctl.metrics import expected_calibration_error, fit_temperature

runner = CliRunner()


@pytest.fixture
def images(tmp_path: Path) -> list[str]:
    return [save(black_on_white(), tmp_path / "a.png"), save(black_on_white(), tmp_path / "b.png")]


def test_the_not_a_digit_class_declines_in_the_api(tmp_path: Path) -> None:
    reader = mnistctl.load_reader(model_file(tmp_path / "m.pt", classes=11, bias={10: 8.0, 3: 2.0}))
    assert reader.meta.classes[-1] == "not a digit" and len(reader.meta.classes) == 11
    reading = reader.read_digit(mnist_like())
    assert reading.digit is None and reading.reason == "not a digit"
    assert reading.top_digit == 3 and reading.not_a_digit > 0.99
    assert math.isclose(sum(reading.probabilities) + reading.not_a_digit, 1.0, rel_tol=1e-6)
    out = reading.to_dict()
    assert out["digit"] is None and out["reason"] == "not a digit"
    assert out["not_a_digit"] == round(reading.not_a_digit, 6)
    assert reader.read_digit(mnist_like(), always_answer=True).digit == 3
    number = reader.read_number(black_on_white((300, 120), box=(40, 20, 60, 100)))
    assert "?" in number.text and number.to_dict()["number"] == number.text


def test_below_the_bar_is_unsure_and_the_bar_moves(tmp_path: Path) -> None:
    reader = mnistctl.load_reader(model_file(tmp_path / "m.pt", bias={7: 1.0}))  # 7: e/(e+9) = 0.23
    reading = reader.read_digit(mnist_like())
    assert reading.digit is None and reading.reason == "unsure" and reading.top_digit == 7
    assert reading.not_a_digit is None and "not_a_digit" not in reading.to_dict()
    assert reader.read_digit(mnist_like(), min_confidence=0.2).digit == 7
    assert reader.read_digit(mnist_like(), min_confidence=0.2).reason is None
    with pytest.raises(mnistctl.UsageError, match="min_confidence must be from 0 to 1"):
        reader.read_digit(mnist_like(), min_confidence=2)


def test_a_declined_line_is_a_result_in_its_place(tmp_path: Path, images: list[str]) -> None:
    model = model_file(tmp_path / "m.pt", classes=11, bias={10: 8.0})
    missing = str(tmp_path / "missing.png")
    result = runner.invoke(app, ["predict", "-m", str(model), images[0], missing, images[1]])
    assert result.exit_code == 1  # for the missing file only
    lines = result.stdout.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [[images[0], "?"], [images[1], "?"]]
    assert float(lines[0].split("\t")[2]) < 0.01  # the likeliest digit's probability, still shown
    ok = runner.invoke(app, ["predict", "-m", str(model), "--json", *images])
    assert ok.exit_code == 0
    first = json.loads(ok.stdout.splitlines()[0])
    assert first["digit"] is None and first["reason"] == "not a digit"
    always = runner.invoke(app, ["predict", "-m", str(model), "--always-answer", images[0]])
    assert always.exit_code == 0 and always.stdout.split("\t")[1] in "0123456789"


def test_top_k_on_a_declined_line_starts_with_the_likeliest_digit(tmp_path: Path, images: list[str]) -> None:
    model = model_file(tmp_path / "m.pt", bias={4: 1.0, 6: 0.5})  # 4 at 0.21: unsure, 6 next
    line = runner.invoke(app, ["predict", "-m", str(model), "--top-k", "2", images[0]]).stdout.split("\t")
    assert line[1] == "?" and line[3] == "4" and line[4] == line[2] and line[5] == "6"
    answered = runner.invoke(app, ["predict", "-m", str(model), "--top-k", "1", "--always-answer", images[0]])
    assert answered.stdout.split("\t")[1:4:2] == ["4", "6"]  # named: the runners-up come after it
    declined = json.loads(runner.invoke(app, ["predict", "-m", str(model), "--top-k", "1", "--json", images[0]]).stdout)
    assert declined["digit"] is None and declined["top_k"][0]["digit"] == 4


def test_min_confidence_on_the_command_line(tmp_path: Path, images: list[str]) -> None:
    model = model_file(tmp_path / "m.pt", bias={4: 3.0})  # 4: e³/(e³+9) = 0.69
    assert runner.invoke(app, ["predict", "-m", str(model), images[0]]).stdout.split("\t")[1] == "4"
    high = runner.invoke(app, ["predict", "-m", str(model), "--min-confidence", "0.9", "--json", images[0]])
    assert high.exit_code == 0 and json.loads(high.stdout)["reason"] == "unsure"
    bad = runner.invoke(app, ["predict", "-m", str(model), "--min-confidence", "1.5", images[0]])
    assert bad.exit_code == 2 and "--min-confidence" in bad.stderr


def test_the_terminal_panel_says_it(tmp_path: Path, images: list[str]) -> None:
    model = model_file(tmp_path / "m.pt", classes=11, bias={10: 8.0, 5: 1.0})
    run = run_at_terminal(["predict", "-m", str(model), images[0]], stdout="terminal", columns=160)
    assert run.returncode == 0, run.screen
    assert "not a digit" in run.screen and "likeliest digit 5" in run.screen


def test_the_temperature_softens_the_confidence_and_is_checked(tmp_path: Path) -> None:
    sharp = mnistctl.load_reader(model_file(tmp_path / "a.pt", bias={2: 4.0}))
    soft = mnistctl.load_reader(model_file(tmp_path / "b.pt", bias={2: 4.0}, temperature=4.0))
    assert soft.meta.temperature == 4.0
    a, b = sharp.read_digit(mnist_like()), soft.read_digit(mnist_like())
    assert a.digit == 2 and a.confidence == pytest.approx(math.e**4 / (math.e**4 + 9))
    assert b.digit is None and b.confidence == pytest.approx(math.e / (math.e + 9)) and b.top_digit == 2
    with pytest.raises(mnistctl.MnistctlError, match="calibration temperature"):
        mnistctl.load_reader(model_file(tmp_path / "c.pt", temperature=-1.0))


def test_calibration_on_tiny_data() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 4000
    logits = torch.randn(n, 10, generator=gen)
    logits[torch.arange(n), torch.randint(0, 10, (n,), generator=gen)] += 2.0
    labels = torch.multinomial(logits.softmax(1), 1, generator=gen).squeeze(1)  # calibrated at T = 1, by design

    def error(scores: torch.Tensor) -> float:
        confidence, predicted = scores.softmax(1).max(1)
        return expected_calibration_error(confidence, predicted == labels)

    assert error(logits) < 0.04
    overconfident = logits * 3
    assert error(overconfident) > 0.2
    temperature = fit_temperature(overconfident, labels)
    assert 2.5 < temperature < 3.5
    assert error(overconfident / temperature) < 0.04
    assert expected_calibration_error(torch.tensor([0.9, 0.9]), torch.tensor([True, False])) == pytest.approx(0.4)
    assert expected_calibration_error(torch.tensor([1.0, 0.05]), torch.tensor([True, False])) == pytest.approx(0.025)


def test_training_with_drawn_non_digits_makes_eleven_classes(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    args = ["train", "--epochs", "1", "--batch-size", "32", "-o", str(out), "-q"]
    result = runner.invoke(app, [*args, "--negatives", "0.25"])
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out)
    assert checkpoint.arch_config["classes"] == 11 and checkpoint.config["negatives"] == 0.25
    assert checkpoint.state_dict["classifier.bias"].shape == (11,)
    assert 0 <= checkpoint.metrics["test_accuracy"] <= 1  # over the ten digits
    result = runner.invoke(app, [*args, "--negatives", "0", "--force"])
    assert result.exit_code == 0, result.output
    assert "classes" not in load_checkpoint(out).arch_config
    seed = runner.invoke(app, [*args, "--force", "--arch", "seed", "--negatives", "0.2"])
    assert seed.exit_code == 2 and "pass --negatives 0 with --arch seed" in seed.stderr


def test_the_drawn_non_digits_are_reproducible_and_look_like_inputs() -> None:
    from mnistctl.data.negatives import negatives

    a, b = negatives(20, seed=3), negatives(20, seed=3)
    assert a.shape == (20, 28, 28) and a.dtype.name == "uint8" and (a == b).all()
    assert (negatives(20, seed=4) != a).any()
    assert (a[:, 0, :] == 0).all() and (a.reshape(20, -1).max(1) > 200).all()  # white on black, framed like MNIST


def test_pieces_of_numbers_written_fast_are_labelled_by_what_they_hold() -> None:
    """What a number reader cuts out of touching digits: half of it one digit (labelled as it was, slivers of
    its neighbours and all), half not (two digits, part of one)."""
    import numpy as np

    from mnistctl.data.negatives import cut_pieces
    from mnistctl.train import with_negatives

    bar = np.zeros((28, 28), np.uint8)
    bar[4:24, 12:16] = 255  # a "1"
    ring = np.array(black_on_white((28, 28), box=(6, 4, 22, 24)).point(lambda v: 255 - v))  # a "0" with a tail
    digits, labels = np.stack([bar, ring, ring]), np.array([1, 0, 0])
    images, got = cut_pieces(digits, labels, 40, seed=5, not_a_digit=10)
    again, _ = cut_pieces(digits, labels, 40, seed=5, not_a_digit=10)
    assert images.shape == (40, 28, 28) and (images == again).all()
    assert (got == 10).sum() == 20 and set(got[got != 10]) <= {0, 1}
    bars = images[got == 1].reshape(-1, 28, 28).astype(np.int64)
    # A bar with slivers of rings beside it is still mostly one upright stroke, in the middle of the frame.
    assert len(bars) and (bars[:, 4:24, 11:17].sum((1, 2)) > 0.6 * bars.sum((1, 2))).all()

    x, y = with_negatives(torch.from_numpy(digits), torch.from_numpy(labels), 8, seed=5)
    assert len(x) == 3 + 8 + 4 and (y[3:11] == 10).all() and (y[11:] == 10).sum() == 2


def test_plain_predict_on_a_number_hints_at_multi_once(tmp_path: Path, images: list[str]) -> None:
    import numpy as np
    from PIL import Image

    model = model_file(tmp_path / "m.pt", bias={4: 3.0})
    numbers = []
    for name in ("n1.png", "n2.png"):
        numbers.append(save(Image.fromarray(np.hstack([mnist_like()] * 3)), tmp_path / name))
    result = runner.invoke(app, ["predict", "-m", str(model), images[0], *numbers])
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 3  # each still read as one digit, as asked
    hints = [line for line in result.stderr.splitlines() if "--multi" in line]
    assert hints == [f"{numbers[0]} looks like several digits: pass --multi to read it as a number."]
    single = runner.invoke(app, ["predict", "-m", str(model), *images])
    assert "--multi" not in single.stderr
    assert "--multi" not in runner.invoke(app, ["predict", "-m", str(model), "-q", numbers[0]]).stderr
