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
from mnistctl.reader import ASK_BELOW, SecondOpinion


def test_the_bundled_model_asks_its_second_network_and_a_model_of_ones_own_none(tmp_path: Path) -> None:
    second = str(bundled_second_path())
    assert mnistctl.load_reader(device="cpu").meta.second_model == second
    assert mnistctl.load_reader(bundled_model_path(), device="cpu").meta.second_model == second  # as the CLI names it
    copy = tmp_path / "copy.pt"
    copy.write_bytes(bundled_model_path().read_bytes())
    assert mnistctl.load_reader(copy, device="cpu").meta.second_model is None  # a model of one's own now
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
    with pytest.raises(
        MnistctlError, match=r"second digit network: .*b\.pt: its outputs \(11\) are not the first model's \(10\)"
    ):
        mnistctl.load_reader(first, second_model=second)
    with pytest.raises(MnistctlError, match="the second digit network: .*missing.pt.* or second_model=False"):
        mnistctl.load_reader(first, second_model=tmp_path / "missing.pt")


def test_a_missing_bundled_second_network_says_which_and_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("mnistctl.checkpoint.bundled_second_path", lambda: tmp_path / "second_model.pt")
    with pytest.raises(MnistctlError) as caught:
        mnistctl.load_reader(device="cpu")
    assert caught.value.message.startswith("the second digit network: ") and "second_model.pt" in caught.value.message
    assert caught.value.hint.startswith("reinstall mnistctl") and caught.value.hint.endswith("second_model=False")
    assert mnistctl.load_reader(device="cpu", second_model=False).meta.second_model is None


class _Recording(torch.nn.Module):
    """A second network that surely reads each input as its pixels' value (row k of the test's batch: k), and
    keeps what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.asked.append(x)
        return torch.nn.functional.one_hot((x[:, 0, 0, 0] * 255).round().long(), 10).float() * 20


def test_in_a_batch_only_the_unsure_inputs_are_asked_each_in_its_row() -> None:
    sure, unsure = 0.99, ASK_BELOW - 0.01
    first = torch.tensor([[sure] + [(1 - sure) / 9] * 9, [unsure] + [(1 - unsure) / 9] * 9] * 3).log()
    first[3] = float("nan")  # a broken first network's row: not asked, still NaN
    pixels = torch.arange(6, dtype=torch.uint8).view(6, 1, 1).expand(6, 28, 28).contiguous()  # row k: all k
    second = _Recording()
    out = SecondOpinion(second, "b.pt", 0.0, 1.0, 2.0).asked(first, pixels)  # at its temperature, 2
    (asked,) = second.asked
    assert (asked[:, 0, 0, 0] * 255).round().tolist() == [1.0, 5.0]  # rows 1 and 5, in order (row 3 is NaN)
    for row in (0, 2, 4):
        assert torch.equal(out[row], first[row])
    assert bool(out[3].isnan().all())
    for row in (1, 5):
        says_row = (torch.nn.functional.one_hot(torch.tensor(row), 10).float() * 20 / 2).log_softmax(0)
        assert torch.allclose(out[row], (first[row] + says_row) / 2) and int(out[row].argmax()) == row


def test_the_command_line_reader_has_the_second_network_unless_told_not_to() -> None:
    """`eval` asks for none (it measures the checkpoint); `predict` and `serve` read with both."""
    from mnistctl.cli.loading import model_reader

    bundled = bundled_model_path()  # as `-m` names it: neither $MNISTCTL_MODEL nor ./digit_model.pt
    assert model_reader(bundled, None, "cpu", None, True, second=False).meta.second_model is None
    assert model_reader(bundled, None, "cpu", None, True).meta.second_model == str(bundled_second_path())
