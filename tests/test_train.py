"""`train` and `eval` on tiny synthetic data: checkpoints, resume, JSON, confusion matrix, bad models."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from mnistctl.checkpoint import FORMAT, build_model, load_checkpoint, weights_digest
from mnistctl.cli import app
from mnistctl.config import TrainConfig
from mnistctl.data.mnist import load_mnist
from mnistctl.errors import Interrupted, MnistctlError
from mnistctl.metrics import summarise
from mnistctl.models import DigitClassifier, get_architecture
from mnistctl.report import tables as report
from mnistctl.runtime import default_precision
from mnistctl.train import fit

runner = CliRunner()
FAST = ["--batch-size", "64"]


def model_path() -> Path:
    return Path("digit_model.pt")  # train's default, in the test's own working directory


def test_train_writes_a_checkpoint_that_loads_back(tiny_data):
    result = runner.invoke(app, ["train", "--epochs", "2", *FAST])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout
    ckpt = load_checkpoint(model_path())
    assert torch.load(model_path(), weights_only=True)["format"] == FORMAT
    assert ckpt.arch == "compact" and ckpt.epoch == 2
    assert len(ckpt.history) == 2 and ckpt.normalization == (0.1307, 0.3081)
    assert ckpt.training is not None and ckpt.training.optimizer and ckpt.training.scheduler and ckpt.training.rng
    assert ckpt.config and ckpt.metrics and ckpt.versions
    assert ckpt.metrics["test_accuracy"] > 0.5  # the bars are easy to learn
    # The weights saved are the ones that scored it: evaluating the checkpoint finds the same accuracy again.
    evaluated = runner.invoke(app, ["eval", "-m", str(model_path()), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(ckpt.metrics["test_accuracy"], abs=1e-6)


def test_train_json_prints_one_object_per_epoch_then_a_summary(tiny_data):
    result = runner.invoke(app, ["train", "--epochs", "2", "--json", *FAST])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["epoch", "epoch", "summary"]
    assert lines[1]["epoch"] == 2 and 0 <= lines[1]["test_accuracy"] <= 1
    assert lines[2]["checkpoint"] == str(model_path())


def _fit(data, epochs: int, out: Path, stop_after: int | None = None, resume=None, ema: float | None = None):
    class Stop:
        def on_start(self, *a): ...
        def on_batch(self, *a): ...
        def on_end(self): ...

        def on_epoch(self, result):
            if result.epoch == stop_after:
                raise KeyboardInterrupt

    config = TrainConfig(epochs=epochs, batch_size=64, seed=3, ema=ema)
    return fit(config, data, torch.device("cpu"), out=out, resume=resume, callbacks=Stop())


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_after_interruption_is_bit_identical(tiny_data, tmp_path, ema):
    data = load_mnist(tiny_data)
    _fit(data, 3, tmp_path / "straight.pt", ema=ema)
    with pytest.raises(Interrupted) as info:
        _fit(data, 3, tmp_path / "stopped.pt", stop_after=1, ema=ema)
    assert info.value.exit_code == 130 and "--resume" in str(info.value)
    assert load_checkpoint(tmp_path / "stopped.pt").epoch == 1
    resumed = _fit(data, 3, tmp_path / "stopped.pt", resume=load_checkpoint(tmp_path / "stopped.pt"), ema=ema)
    assert resumed.resumed_from == 1 and [h.epoch for h in resumed.history] == [1, 2, 3]
    straight, stopped = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(tmp_path / "stopped.pt")
    pairs = [(straight.state_dict, stopped.state_dict)]  # the average, and what is trained
    if ema:
        pairs.append((straight.training.model_state, stopped.training.model_state))
    for a, b in pairs:
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_same_seed_gives_the_same_checkpoint_weights(tiny_data, tmp_path):
    data = load_mnist(tiny_data)
    _fit(data, 1, tmp_path / "a.pt")
    _fit(data, 1, tmp_path / "b.pt")
    a, b = (load_checkpoint(tmp_path / n).state_dict for n in ("a.pt", "b.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_resume_refuses_a_finished_run_without_more_epochs(tiny_data):
    assert runner.invoke(app, ["train", "--epochs", "1", *FAST]).exit_code == 0
    result = runner.invoke(app, ["train", "--resume"])
    assert result.exit_code == 1 and "already finished all 1 epochs" in result.stderr


def test_refuses_to_overwrite_another_architecture(tiny_data):
    assert runner.invoke(app, ["train", "--epochs", "1", *FAST]).exit_code == 0
    before = model_path().read_bytes()
    result = runner.invoke(app, ["train", "--arch", "seed", "--epochs", "1", "--train-limit", "64"])
    assert result.exit_code == 1
    assert "already holds a trained 'compact' model" in result.stderr and "--force" in result.stderr
    assert "--resume" not in result.stderr  # another network: resuming it would not give a 'seed' model
    assert model_path().read_bytes() == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--device", "tpu"], 2, "unknown device 'tpu'"),
        (["--device", "cuda:7"], 2, "not available"),
        (["--epochs", "0"], 2, "Invalid value"),
        (["--batch-size", "-1"], 2, "Invalid value"),
        (["--lr", "nan"], 2, "--lr must be a positive number"),
        (["--optimizer", "lion"], 2, "unknown optimizer 'lion'"),
        (["--arch", "resnet"], 2, "unknown architecture 'resnet'"),
    ],
)
def test_bad_training_options(tiny_data, args, code, message):
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not model_path().exists()


def test_eval_reports_confusion_matrix_and_saves_errors(tiny_data, tmp_path):
    assert runner.invoke(app, ["train", "--epochs", "1", *FAST]).exit_code == 0
    result = runner.invoke(app, ["eval", "--json", "--save-errors", str(tmp_path / "err")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["count"] == 128 and sum(map(sum, out["confusion"])) == 128
    assert len(out["per_class"]) == 10
    assert out["errors"] == 128 - sum(out["confusion"][i][i] for i in range(10))
    saved = sorted((tmp_path / "err").glob("*.png"))
    assert out["saved_errors"] == out["errors"] == len(saved)
    names = [re.fullmatch(r"\d{5}_true(\d)_pred(\d)", f.stem) for f in saved]
    assert all(m and m[1] != m[2] for m in names)  # each named by its index, true digit and a different reading
    human = runner.invoke(app, ["eval"])
    assert human.exit_code == 0 and "confusion matrix" in human.stdout and "per class" in human.stdout


def test_confusion_matrix_counts_and_rendering():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2, 0, 2])
    logits = torch.nn.functional.one_hot(predicted, 10).float() * 5
    result = summarise("test", logits, labels)
    assert result.confusion[0][:3] == [1, 1, 0]
    assert result.confusion[1][:3] == [0, 2, 0]
    assert result.confusion[2][:3] == [1, 0, 2]
    assert result.errors == 2 and abs(result.accuracy - 5 / 7) < 1e-9
    assert result.per_class[1].precision == pytest.approx(2 / 3) and result.per_class[1].recall == 1.0
    assert {(m.index, m.true, m.predicted) for m in result.mistakes} == {(1, 0, 1), (5, 2, 0)}
    console = Console(record=True, width=120)
    console.print(report.confusion_table(result.confusion))
    text = console.export_text()
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert [c.strip() for c in rows["2"].split("│")[2:5]] == ["1", "·", "2"]


def test_original_state_dict_loads_as_seed(tiny_data, tmp_path):
    path = tmp_path / "digit_model.pt"
    torch.save(DigitClassifier().state_dict(), path)
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "seed" and ckpt.normalization == (0.0, 1.0)
    result = runner.invoke(app, ["eval", "-m", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["arch"] == "seed"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil(marker)}, f)
    torch.save({"format": FORMAT, "payload": _Evil(marker)}, tmp_path / "evil2.pt")
    assert not marker.exists()
    for p in (path, tmp_path / "evil2.pt"):
        result = runner.invoke(app, ["eval", "-m", str(p)])
        assert result.exit_code == 1
        assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    # Proof that the pickle really would have run code if loaded unsafely.
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_text('{"weights": [1, 2, 3]}'), "not a"),
        (lambda p: torch.save({"conv.weight": torch.zeros(3)}, p), "network mnistctl does not know"),
        (lambda p: torch.save([1, 2, 3], p), "not an mnistctl checkpoint"),
    ],
)
def test_bad_checkpoints_are_one_line_errors(tmp_path, make, message):
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(MnistctlError, match=message):
        load_checkpoint(path)
    result = runner.invoke(app, ["eval", "-m", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_truncated_and_wrong_shape_checkpoints(tiny_data, tmp_path):
    assert runner.invoke(app, ["train", "--epochs", "1", *FAST]).exit_code == 0
    blob = model_path().read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(MnistctlError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    ckpt = load_checkpoint(model_path()).to_dict()
    ckpt["state_dict"]["classifier.weight"] = torch.zeros(10, 3)
    ckpt["weights_sha256"] = weights_digest(ckpt["state_dict"])  # a consistent file, just not this network's
    torch.save(ckpt, tmp_path / "shape.pt")
    result = runner.invoke(app, ["eval", "-m", str(tmp_path / "shape.pt")])
    assert result.exit_code == 1 and "do not fit architecture 'compact'" in result.stderr


def test_missing_model_says_how_to_train_one(tiny_data, tmp_path):
    # Without -m, eval uses the bundled model (test_bundled.py); a model named with -m must exist.
    result = runner.invoke(app, ["eval", "-m", str(tmp_path / "nowhere.pt")])
    assert result.exit_code == 1
    assert "does not exist" in result.stderr and "mnistctl train" in result.stderr


def test_whole_pixel_shift_moves_images_without_changing_them():
    from mnistctl.batches import augment_batch

    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 10:18, 10:18] = torch.rand(64, 8, 8)  # a patch well inside the border: no pixel may fall off
    u = torch.rand(64, 4, generator=torch.Generator().manual_seed(0))
    y = augment_batch(x, u, rotate=0.0, scale=0.0, shift=2.0)
    assert torch.allclose(y.sum((1, 2, 3)), x.sum((1, 2, 3)))
    moved = 0
    for a, b in zip(x, y, strict=True):
        nz = b[0].nonzero()
        dy, dx = int(nz[:, 0].min()) - 10, int(nz[:, 1].min()) - 10
        assert abs(dy) <= 2 and abs(dx) <= 2
        assert torch.equal(b[0, 10 + dy : 18 + dy, 10 + dx : 18 + dx], a[0, 10:18, 10:18])
        moved += (dy, dx) != (0, 0)
    assert moved > 40  # most images move


def test_affine_augmentation_keeps_shape_and_black_background():
    from mnistctl.batches import augment_batch

    x = torch.zeros(8, 1, 28, 28)
    x[:, 0, 12:16, 12:16] = 1.0
    y = augment_batch(x, torch.rand(8, 4), rotate=10.0, scale=0.1, shift=2.0)
    assert y.shape == x.shape and float(y[:, 0, 0, 0].abs().max()) == 0.0 and float(y.sum()) > 0


def test_build_model_predicts_as_trained(tiny_data):
    assert runner.invoke(app, ["train", "--epochs", "1", *FAST]).exit_code == 0
    ckpt = load_checkpoint(model_path())
    trained = get_architecture(ckpt.arch).build(**ckpt.arch_config)
    trained.load_state_dict(ckpt.state_dict)
    built = build_model(ckpt)
    assert not built.training
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(built(x), trained.eval()(x), rtol=1e-4, atol=1e-4)


def test_elastic_warp_keeps_shape_and_black_background_and_is_seeded():
    from mnistctl.batches import ELASTIC_NUMBERS, augment_batch

    x = torch.zeros(8, 1, 28, 28)
    x[:, 0, 8:20, 12:16] = 1.0
    u = torch.rand(8, 4 + ELASTIC_NUMBERS, generator=torch.Generator().manual_seed(1))
    plain = augment_batch(x, u, rotate=0.0, scale=0.0, shift=0.0, elastic=0.0)
    warped = augment_batch(x, u, rotate=0.0, scale=0.0, shift=0.0, elastic=2.0)
    assert warped.shape == x.shape and float(warped[:, 0, 0, 0].abs().max()) == 0.0
    assert torch.equal(plain, x)  # nothing asked: nothing done
    assert not torch.allclose(warped, x, atol=1e-3)  # the strokes moved ...
    ratio = warped.sum((1, 2, 3)) / x.sum((1, 2, 3))  # ... and stretched or squeezed, but not lost
    assert bool(((ratio > 0.5) & (ratio < 1.5)).all()), ratio
    assert torch.equal(warped, augment_batch(x, u, rotate=0.0, scale=0.0, shift=0.0, elastic=2.0))


def test_the_gpu_recipe_runs_on_the_cpu_too(tiny_data, tmp_path):
    """The GPU default (wide network, big batches, its own EMA) is the same code on any device; here on tiny data."""
    config = TrainConfig(arch="wide", epochs=1, train_limit=192)
    result = fit(config, load_mnist(tiny_data), torch.device("cpu"), out=tmp_path / "wide.pt")
    saved = load_checkpoint(tmp_path / "wide.pt")
    assert saved.arch == "wide" and saved.config["batch_size"] == 512 and saved.config["ema"] > 0
    assert saved.config["precision"] == result.config.precision == default_precision(torch.device("cpu"))
    assert build_model(saved)(torch.zeros(2, 1, 28, 28)).shape == (2, 11)  # the ten digits and "not a digit"


def test_low_resolution_augmentation_blurs_a_share_and_keeps_the_rest():
    from mnistctl.batches import ELASTIC_NUMBERS, LOWRES_NUMBERS, augment_batch

    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 6:22, 12:14] = 1.0  # a sharp stroke
    u = torch.rand(64, 4 + ELASTIC_NUMBERS + LOWRES_NUMBERS, generator=torch.Generator().manual_seed(2))
    u[:, :4] = 0.5  # no rotation, scaling or shift
    u[:32, -2] = 0.0  # the first half chosen for low resolution, the rest not
    u[32:, -2] = 0.99
    y = augment_batch(x, u, rotate=10.0, scale=0.1, shift=2.0, elastic=0.0, lowres=0.15)
    torch.testing.assert_close(y[32:], augment_batch(x[32:], u[32:, :-2], 10.0, 0.1, 2.0))  # untouched
    blurred = y[:32]
    assert float(blurred.max()) < 0.95 and float(((blurred > 0.05) & (blurred < 0.95)).sum()) > 32 * 20
    torch.testing.assert_close(blurred.sum((1, 2, 3)), x[:32].sum((1, 2, 3)), rtol=0.35, atol=0)  # ink kept, roughly
