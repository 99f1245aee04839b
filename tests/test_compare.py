"""compare-optimizers on tiny data: fairness, outputs, resume, plots, bad input."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

from mnistctl.checkpoint import weights_digest
from mnistctl.cli import app
from mnistctl.compare import compare_optimizers, parse_lrs
from mnistctl.config import TrainConfig
from mnistctl.data.mnist import load_mnist
from mnistctl.errors import UsageError
from mnistctl.models import get_architecture
from mnistctl.runtime import seed_everything

runner = CliRunner()
TINY = ["--epochs", "1", "--arch", "compact", "--batch-size", "64"]


def test_runs_start_from_identical_weights_and_see_the_same_data(tiny_data, tmp_path):
    data = load_mnist(tiny_data)
    base = TrainConfig(arch="compact", epochs=1, batch_size=64, seed=5, schedule="constant", augment=True)
    result = compare_optimizers(["adam", "sgd"], {"adam": 1e-3, "sgd": 0.05}, base, data, torch.device("cpu"))
    seed_everything(5)
    expected = weights_digest(get_architecture("compact").build().state_dict())
    assert [r.init_digest for r in result.runs] == [expected, expected]
    assert [r.optimizer for r in result.runs] == ["adam", "sgd"]
    # Same data, same start, different optimizer: different results.
    assert result.runs[0].final.train_loss != result.runs[1].final.train_loss


def test_table_json_csv_and_resume(tiny_data, tmp_path):
    results = tmp_path / "results.json"
    args = ["compare-optimizers", *TINY, "--optimizers", "adam,rmsprop", "--results", str(results)]
    first = runner.invoke(app, [*args, "--csv", str(tmp_path / "h.csv")])
    assert first.exit_code == 0, first.output
    assert "adam" in first.stdout and "rmsprop" in first.stdout and "★" in first.stdout
    saved = json.loads(results.read_text())
    assert [r["optimizer"] for r in saved["runs"]] == ["adam", "rmsprop"]
    assert saved["winner"] in ("adam", "rmsprop")
    csv_lines = (tmp_path / "h.csv").read_text().splitlines()
    assert csv_lines[0].startswith("optimizer,lr,epoch") and len(csv_lines) == 3

    again = runner.invoke(app, [*args, "--resume", "--json"])
    assert again.exit_code == 0, again.output
    assert "Skipped adam, rmsprop" in again.stderr
    out = json.loads(again.stdout)
    assert [r["history"] for r in out["runs"]] == [r["history"] for r in saved["runs"]]

    more = runner.invoke(app, [*args[:-4], "--optimizers", "adam,sgd", "--results", str(results), "--resume"])
    assert more.exit_code == 0, more.output
    assert "Skipped adam" in more.stderr and "sgd" in more.stdout


def test_resume_refuses_results_of_another_comparison(tiny_data, tmp_path):
    results = tmp_path / "r.json"
    assert (
        runner.invoke(app, ["compare-optimizers", *TINY, "--optimizers", "adam", "--results", str(results)]).exit_code
        == 0
    )
    result = runner.invoke(
        app, ["compare-optimizers", *TINY, "--seed", "9", "--optimizers", "adam", "--results", str(results), "--resume"]
    )
    assert result.exit_code == 1 and "different comparison" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib (the plot extra) is absent")
def test_plot_writes_a_png(tiny_data, tmp_path):
    from PIL import Image

    png = tmp_path / "curves.png"
    args = ["compare-optimizers", *TINY, "--optimizers", "adam,sgd", "--results", str(tmp_path / "r.json")]
    result = runner.invoke(app, [*args, "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.size[0] > 400 and im.size[1] > 200


def test_unknown_optimizer_lists_the_valid_ones(tiny_data):
    result = runner.invoke(app, ["compare-optimizers", "--optimizers", "adam,lion"])
    assert result.exit_code == 2
    assert "unknown optimizer 'lion'" in result.stderr and "sgd-nesterov" in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("adam=fast", "'adam=fast' does not hold a number"),
        ("adam=-1", "'adam=-1' is not a positive number"),
        ("adam:1e-3", "does not hold a number"),
        ("=1e-3", "'=1e-3' is not NAME=NUMBER"),
        ("adamw=1e-3", "'adamw' is not one of the optimizers being compared"),
    ],
)
def test_malformed_lr_mapping_names_the_bad_part(text, message):
    with pytest.raises(UsageError, match=message):
        parse_lrs(text, ["adam", "sgd-nesterov"])
    result = runner.invoke(app, ["compare-optimizers", "--lr", text])
    assert result.exit_code == 2 and message in result.stderr


def test_lr_defaults_and_single_value():
    assert parse_lrs(None, ["adam", "sgd-nesterov"]) == {"adam": 1e-3, "sgd-nesterov": 1e-3}
    assert parse_lrs("0.01", ["adam", "sgd"]) == {"adam": 0.01, "sgd": 0.01}
    assert parse_lrs("sgd=0.1", ["adam", "sgd"]) == {"adam": 1e-3, "sgd": 0.1}
