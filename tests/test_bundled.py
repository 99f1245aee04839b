"""The model that ships inside the package: safe to load, made by today's CPU default recipe, accurate, and
used when no other model is there."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import MNISTCTL_SCRIPT, SHARED_MNIST
from PIL import Image
from typer.testing import CliRunner

from mnistctl.checkpoint import bundled_model_path, bundled_second_path, find_model, load_checkpoint
from mnistctl.cli import app
from mnistctl.config import DEFAULT_ARCH, DEFAULT_EPOCHS, RECIPES
from mnistctl.errors import MnistctlError

runner = CliRunner()
BUNDLED = bundled_model_path()
BOTH = pytest.mark.parametrize("path", [BUNDLED, bundled_second_path()], ids=["model", "second"])


@BOTH
def test_it_is_in_the_package_small_and_loads_with_weights_only(path: Path):
    assert path.is_file() and path.stat().st_size <= 1 << 20
    checkpoint = load_checkpoint(path)  # torch.load(weights_only=True), checksum of the weights checked
    assert not checkpoint.has_training_state  # weights and metadata only
    made = checkpoint.extra["bundle"]
    assert made["command"].startswith("mnistctl train ") and f"--seed {made['seed']}" in made["command"]
    assert made["mnistctl"] and made["machine"] and made["test_accuracy"] == checkpoint.metrics["test_accuracy"]


@BOTH
def test_it_was_trained_with_the_current_cpu_default_recipe(path: Path):
    """Changing the default recipe must come with a retrained bundle: `python bench/bundle.py` (and `--second`)."""
    config = load_checkpoint(path).config
    arch = DEFAULT_ARCH["cpu"]
    expected = {"arch": arch, "epochs": DEFAULT_EPOCHS, "train_limit": None, **RECIPES[arch]}
    assert {key: config[key] for key in expected} == expected
    assert config["seed"] == (0 if path == BUNDLED else 1)  # two seeds: two networks that err apart


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="no local MNIST mirror")
def test_it_scores_at_least_99_4_percent_on_the_test_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTCTL_VERIFY_DATA", "1")
    result = runner.invoke(app, ["eval", "--json", "--data-dir", str(tmp_path), "--mirror", str(SHARED_MNIST)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["model"] == str(BUNDLED) and out["count"] == 10_000
    assert out["accuracy"] >= 0.994
    assert f"Using the bundled model: {BUNDLED}" in result.stderr


def test_the_model_used_when_none_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_model(None) == (BUNDLED, "the bundled model")
    (tmp_path / "digit_model.pt").write_bytes(b"x")
    assert find_model(None) == (Path("digit_model.pt"), "./digit_model.pt")
    monkeypatch.setenv("MNISTCTL_MODEL", str(tmp_path / "mine.pt"))  # set, but not there: an error, not the next one
    with pytest.raises(MnistctlError, match=r"\$MNISTCTL_MODEL names .*mine.pt, which does not exist"):
        find_model(None)
    (tmp_path / "mine.pt").write_bytes(b"x")
    assert find_model(None) == (tmp_path / "mine.pt", "$MNISTCTL_MODEL")
    assert find_model(tmp_path / "none.pt") == (tmp_path / "none.pt", "option")  # -m is never second-guessed
    result = runner.invoke(app, ["predict", "-m", str(tmp_path / "none.pt"), "x.png"])
    assert result.exit_code == 1 and "model file" in result.stderr and "does not exist" in result.stderr


def test_a_fresh_directory_predicts_with_the_bundled_model_and_says_so(tmp_path, monkeypatch):
    digit = Image.new("L", (120, 160), 255)
    digit.paste(0, (50, 20, 66, 140))  # a thick vertical stroke: a "1"
    digit.save(tmp_path / "digit.png")
    env = {k: v for k, v in os.environ.items() if k != "MNISTCTL_MODEL"}
    proc = subprocess.run(
        [MNISTCTL_SCRIPT, "predict", "digit.png"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\t")[:2] == ["digit.png", "1"]
    assert proc.stderr.strip() == f"Using the bundled model: {BUNDLED}."
    quiet = subprocess.run(
        [MNISTCTL_SCRIPT, "predict", "-q", "digit.png"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert quiet.returncode == 0 and quiet.stderr == ""
    monkeypatch.chdir(tmp_path)
    info = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert info["model"] == {"path": str(BUNDLED), "source": "the bundled model", "exists": True}


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="no local MNIST mirror")
def test_a_fresh_directory_reads_a_number_with_the_bundled_model(tmp_path):
    """Four MNIST test digits (never trained on) written as a photo of a number: dark ink on light paper."""
    import numpy as np

    from mnistctl.data.mnist import read_idx

    digits = read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")[:4].numpy()
    labels = read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")[:4].tolist()
    page = np.full((120, 370), 235, np.uint8)
    for i, digit in enumerate(digits):  # each digit at three times its size, uneven gaps and baselines
        big = np.asarray(Image.fromarray(digit).resize((84, 84), Image.Resampling.BILINEAR))
        x, y = 10 + i * 90 - (i % 2) * 6, 12 + (i % 3) * 6
        page[y : y + 84, x : x + 84] = np.minimum(page[y : y + 84, x : x + 84], 255 - big)
    Image.fromarray(page).convert("RGB").save(tmp_path / "number.jpg", quality=90)
    env = {k: v for k, v in os.environ.items() if k != "MNISTCTL_MODEL"}
    proc = subprocess.run(
        [MNISTCTL_SCRIPT, "predict", "--multi", "number.jpg"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\t")[:2] == ["number.jpg", "".join(str(label) for label in labels)]
    assert proc.stderr.strip() == f"Using the bundled model: {BUNDLED}."
