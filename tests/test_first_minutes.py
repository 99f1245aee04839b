"""A newcomer's first ten minutes: nothing lost by a forgotten option, help that fits, messages that say what
to do. Each test is one finding of issue 19, tried the way a user meets it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import MNISTCTL_SCRIPT, write_tiny_mnist
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from mnistctl.cli import app

runner = CliRunner()
TRAIN = ["train", "--epochs", "1", "-b", "64"]
COMMANDS = ["download", "train", "eval", "predict", "compare-optimizers", "info"]


def _digit(path: Path, ink: int = 0, paper: int = 255) -> Path:
    image = Image.new("L", (60, 80), paper)
    ImageDraw.Draw(image).line([(30, 10), (30, 70)], fill=ink, width=6)
    image.save(path)
    return path


# --------------------------------------------------------------------------------------------- nothing lost


def test_a_new_run_does_not_replace_a_finished_model(tiny_data, tmp_path):
    out = tmp_path / "m.pt"
    assert runner.invoke(app, [*TRAIN, "-o", str(out)]).exit_code == 0
    before = out.read_bytes()
    again = runner.invoke(app, [*TRAIN, "-o", str(out)])
    assert again.exit_code == 1 and out.read_bytes() == before
    assert "already holds a trained 'compact' model (1 epoch(s)" in again.stderr
    assert "--resume --epochs 11" in again.stderr and "--force" in again.stderr and "-o" in again.stderr
    forced = runner.invoke(app, [*TRAIN, "-o", str(out), "--force"])
    assert forced.exit_code == 0, forced.output


def test_a_model_named_by_the_environment_must_exist(tmp_path, monkeypatch):
    image = _digit(tmp_path / "x.png")
    monkeypatch.setenv("MNISTCTL_MODEL", str(tmp_path / "nosuch.pt"))
    result = runner.invoke(app, ["predict", str(image)])
    assert result.exit_code == 1 and result.stdout == ""
    assert f"$MNISTCTL_MODEL names {tmp_path / 'nosuch.pt'}, which does not exist" in result.stderr
    assert "unset MNISTCTL_MODEL" in result.stderr


def test_the_model_file_is_named_once(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digit_model.pt").write_bytes(tiny_model.read_bytes())
    result = runner.invoke(app, ["predict", str(_digit(tmp_path / "x.png"))])
    assert result.exit_code == 0
    assert "Using ./digit_model.pt.\n" in result.stderr


def test_a_data_dir_holding_the_gz_files_suggests_mirror_and_creates_nothing(tmp_path):
    folder = tmp_path / "mnist-files"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (folder / f"{name}.gz").write_bytes(b"not really")
    result = runner.invoke(app, ["download", "--data-dir", str(folder)])
    assert result.exit_code == 1
    assert f"pass --mirror {folder}" in result.stderr
    assert not (folder / "MNIST").exists()  # a failed command leaves no folders behind
    fresh = tmp_path / "new-data"
    assert runner.invoke(app, ["download", "--data-dir", str(fresh)]).exit_code == 1
    assert not fresh.exists()


def test_data_dir_may_name_the_raw_folder_itself(tmp_path, tiny_model):
    data = write_tiny_mnist(tmp_path / "d")
    raw = data / "MNIST" / "raw"
    result = runner.invoke(app, ["eval", "-m", str(tiny_model), "--data-dir", str(raw), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 128
    assert not (raw / "MNIST").exists()


def test_save_errors_refuses_a_folder_that_is_not_empty(tiny_data, tmp_path, tiny_model):
    folder = tmp_path / "errors"
    folder.mkdir()
    (folder / "old.png").write_bytes(b"from another run")
    args = ["eval", "-m", str(tiny_model), "--save-errors", str(folder)]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "is not empty (1 entries)" in refused.stderr and "--force" in refused.stderr
    assert os.listdir(folder) == ["old.png"]
    added = runner.invoke(app, [*args, "--force"])
    assert added.exit_code == 0, added.output
    assert len(os.listdir(folder)) > 1


def test_resumed_run_reports_the_time_its_epochs_table_adds_up_to(tiny_data, tmp_path):
    out = tmp_path / "m.pt"
    assert runner.invoke(app, [*TRAIN, "-o", str(out)]).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", "--epochs", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    from mnistctl.checkpoint import load_checkpoint

    total = sum(h["seconds"] for h in load_checkpoint(out).history)  # both epochs, as the table lists them
    assert f"{total:.1f}s of training, " in result.stderr and "since resuming after epoch 1" in result.stderr


# --------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns_without_cutting_names(command):
    from typer.main import get_command

    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    words = set(result.stdout.replace("│", " ").split())
    for param in get_command(app).commands[command].params:
        for name in [*param.opts, *param.secondary_opts]:
            assert name in words or param.param_type_name == "argument", name  # not cut to `--no-channels-la…`
    if command == "train":
        assert "${XDG_CACHE_HOME:-~/.cache}/mnistctl]" in words  # a default path, whole
    assert "<list[str]>" not in result.stdout and "<int range>" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_every_option_has_help():
    from typer.main import get_command

    group = get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            assert getattr(param, "help", None) or param.param_type_name == "argument", f"{name} {param.name}"


def test_help_as_a_command_and_debug_after_the_command(tmp_path):
    page = runner.invoke(app, ["help", "predict"])
    assert page.exit_code == 0 and "Usage: mnistctl predict" in page.stdout
    assert runner.invoke(app, ["help"]).exit_code == 0
    missing = runner.invoke(app, ["eval", "--debug", "-m", str(tmp_path / "none.pt")])
    assert "No such option" not in missing.output
    assert isinstance(missing.exception, Exception) and "does not exist" in str(missing.exception)  # the traceback


# --------------------------------------------------------------------------------------------- messages


def test_a_bad_choice_reads_as_mnistctl_not_as_the_validator():
    result = runner.invoke(app, ["eval", "--split", "validation"])
    assert result.exit_code == 2
    assert "Value error" not in result.stderr and "'validation' is not one of 'test', 'train'" in result.stderr
    assert ". —" not in result.stderr


def test_an_absent_device_is_a_bad_option(tmp_path):
    image = _digit(tmp_path / "x.png")
    for device in ("cuda", "gpu"):
        result = runner.invoke(app, ["predict", "--device", device, str(image)])
        assert result.exit_code == 2, (device, result.output)


def test_forcing_the_wrong_polarity_says_so(tmp_path):
    image = _digit(tmp_path / "dark-ink.png")
    result = runner.invoke(app, ["predict", "--invert", "no", str(image)])
    assert result.exit_code == 1
    assert "blank image with --invert no: the ink is dark (pass --invert auto)" in result.stderr


def test_interrupted_before_the_first_epoch_says_what_to_do():
    from mnistctl.train import _interrupted

    exc = _interrupted(0, Path("m.pt"))
    assert exc.hint and "again" in exc.hint and "nothing was saved" in exc.message


def test_closed_pipe_exits_141_for_help_and_tables(tiny_data, tiny_model):
    """A reader that left before the first write (`| head -c 0`): a pipe whose read end is closed, always."""
    for args in (["--help"], ["predict", "--help"], ["info"], ["eval", "-m", str(tiny_model)]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            proc = subprocess.run([MNISTCTL_SCRIPT, *args], stdout=write_end, stderr=subprocess.PIPE, timeout=120)
        finally:
            os.close(write_end)
        assert proc.returncode == 141, (args, proc.stderr)
        assert b"Error" not in proc.stderr and b"Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------- predict


def test_a_directory_of_images_without_suffixes(tmp_path, tiny_model):
    folder = tmp_path / "scans"
    folder.mkdir()
    _digit(tmp_path / "a.png")
    (folder / "scan0001").write_bytes((tmp_path / "a.png").read_bytes())
    (folder / "notes").write_text("not an image")
    os.mkfifo(folder / "pipe")  # never opened: it would block
    result = runner.invoke(app, ["predict", "-m", str(tiny_model), str(folder)])
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(folder / "scan0001")]


def test_show_multi_draws_the_digits_side_by_side(tmp_path, tiny_model):
    image = Image.new("L", (220, 80), 255)
    draw = ImageDraw.Draw(image)
    for x in (30, 100, 170):
        draw.line([(x, 10), (x, 70)], fill=0, width=6)
    image.save(tmp_path / "n.png")
    result = subprocess.run(
        [MNISTCTL_SCRIPT, "predict", "-m", str(tiny_model), "--multi", "--show", str(tmp_path / "n.png")],
        env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    drawn = [line for line in result.stderr.splitlines() if line.strip()]
    assert 10 <= len(drawn) <= 28  # one row of three 28-line drawings, not three stacked (84 lines)


# --------------------------------------------------------------------------------------------- smaller


def test_sizes_counts_and_info_wording(tiny_data):
    from mnistctl.metrics import summarise
    from mnistctl.report.tables import _human_bytes, eval_report

    assert _human_bytes(190_000) == "190.0 kB"
    import torch

    logits = torch.zeros(1500, 10)
    logits[:, 1] = 1
    labels = torch.zeros(1500, dtype=torch.long)
    head = eval_report(summarise("train", logits, labels), "m.pt", "seed")[0]
    assert "(1,500 errors in 1,500)" in head
    info = runner.invoke(app, ["info"], terminal_width=200)
    assert "this rank" not in info.stdout and "distributed" in info.stdout


def test_compare_names_the_network_and_the_limit_and_estimates_the_time(tiny_data, tmp_path):
    from mnistctl.report import comparison_title

    title = comparison_title({"arch": "seed", "epochs": 1, "batch_size": 32, "seed": 0, "train_limit": 2000})
    assert title == "network seed, 1 epoch(s), batch 32, seed 0, the first 2,000 training images"
    result = runner.invoke(
        app,
        ["compare-optimizers", "--epochs", "2", "--train-limit", "64", "--results", str(tmp_path / "r.json")],
    )
    assert result.exit_code == 0, result.output
    assert "adam (1/2): about " in result.stderr and "to go" in result.stderr
    assert "network seed, 2 epoch(s)" in result.stdout
