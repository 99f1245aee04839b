"""The second digit network (#22): the bundled model asks another seed of its recipe where it is unsure, and
reads the two networks' mean log-probabilities there; where it is sure, its own reading stands."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import mnist_like, model_file

import mnistctl
from mnistctl.checkpoint import bundled_model_path, bundled_second_path
from mnistctl.errors import MnistctlError


def test_the_bundled_model_asks_its_second_network_and_a_model_of_ones_own_none(tmp_path: Path) -> None:
    second = str(bundled_second_path())
    assert mnistctl.load_reader(device="cpu").meta.second_model == second
    assert mnistctl.load_reader(bundled_model_path(), device="cpu").meta.second_model == second  # as the CLI names it
    mine = model_file(tmp_path / "m.pt", classes=11)  # outputs as the bundled pair's
    assert mnistctl.load_reader(mine).meta.second_model is None
    assert mnistctl.load_reader(mine, second_model=True).meta.second_model == second
    assert mnistctl.load_reader(device="cpu", second_model=False).meta.second_model is None
    with pytest.raises(mnistctl.UsageError, match="second_model must be True, False, None or a path"):
        mnistctl.load_reader(mine, second_model=3)


def _log_softmax(bias: dict[int, float], classes: int = 10, temperature: float = 1.0) -> torch.Tensor:
    logits = torch.zeros(classes, dtype=torch.float64)
    for cls, value in bias.items():
        logits[cls] = value
    return (logits / temperature).log_softmax(0)


def test_where_the_first_is_unsure_the_reading_is_the_two_networks_mean(tmp_path: Path) -> None:
    first = model_file(tmp_path / "a.pt", bias={3: 1.0, 5: 0.5})  # 3 at 0.19: unsure
    second = model_file(tmp_path / "b.pt", bias={5: 6.0}, temperature=2.0)  # at its own temperature: 5 at 0.67
    reading = mnistctl.load_reader(first, second_model=second).read_digit(mnist_like(), always_answer=True)
    expected = ((_log_softmax({3: 1.0, 5: 0.5}) + _log_softmax({5: 6.0}, temperature=2.0)) / 2).softmax(0)
    assert reading.top_digit == 5
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(reading.probabilities, expected.tolist(), strict=True))
    alone = mnistctl.load_reader(first, second_model=False).read_digit(mnist_like(), always_answer=True)
    assert alone.top_digit == 3


def test_where_the_first_is_sure_the_second_is_not_asked(tmp_path: Path) -> None:
    """Asked, the second's 5 would win the mean (log-probabilities -4 against -10); it is not asked."""
    first = model_file(tmp_path / "a.pt", bias={3: 8.0})  # 3 at 0.997
    second = model_file(tmp_path / "b.pt", bias={5: 20.0})
    reader = mnistctl.load_reader(first, second_model=second)
    reading = reader.read_digit(mnist_like())
    assert reading.digit == 3 and math.isclose(reading.confidence, _log_softmax({3: 8.0})[3].exp().item(), rel_tol=1e-5)
    number = reader.read_number(mnist_like())
    assert number.text == "3"


def test_a_second_model_with_other_outputs_is_refused(tmp_path: Path) -> None:
    first = model_file(tmp_path / "a.pt")
    second = model_file(tmp_path / "b.pt", classes=11)
    with pytest.raises(MnistctlError, match=r"b\.pt: its outputs \(11\) are not the first model's \(10\)"):
        mnistctl.load_reader(first, second_model=second)
    with pytest.raises(MnistctlError, match="missing.pt"):
        mnistctl.load_reader(first, second_model=tmp_path / "missing.pt")
