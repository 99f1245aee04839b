"""Round two of the adversarial review: no silent loss, no silent corruption, messages that name the right thing.

Each case goes through the real CLI (CliRunner in process, or a subprocess where signals, pipes and a second
process matter).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import MNISTCTL_SCRIPT, cli_expecting, write_tiny_mnist
from typer.testing import CliRunner

import mnistctl.data.mnist as data_mod
from mnistctl.checkpoint import load_checkpoint
from mnistctl.cli import app
from mnistctl.config import RECIPES
from mnistctl.fsutil import exclusive_lock

runner = CliRunner()
FAST = ["--batch-size", "64"]


def errors_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


# --------------------------------------------------------------------------------------------- silent loss


def test_a_second_run_with_the_same_output_refuses_at_once(tiny_data, tmp_path):
    out = tmp_path / "run.pt"
    with exclusive_lock(tmp_path / ".run.pt.lock", wait=False, what=str(out)):  # a run in progress
        result = runner.invoke(app, ["train", "--epochs", "1", *FAST, "-o", str(out)])
    assert result.exit_code == 1
    assert errors_of(result) == [
        f"Error: {out} is in use by process {os.getpid()} — wait for it to finish, or write elsewhere"
    ]
    assert not out.exists()
    assert runner.invoke(app, ["train", "--epochs", "1", *FAST, "-o", str(out)]).exit_code == 0  # lock released
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # and no lock file left behind


def test_two_training_processes_on_one_output(tmp_path):
    data = write_tiny_mnist(tmp_path / "data", n_train=256, n_test=32)
    out = tmp_path / "run.pt"
    env = {**os.environ, "MNISTCTL_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    cmd = [MNISTCTL_SCRIPT, "train", "-o", str(out), "--batch-size", "8", "-q"]
    first = subprocess.Popen([*cmd, "--epochs", "1000"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # until the first run holds the lock and has saved its first epoch
        while not out.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.exists(), "the first run saved no epoch"
        second = subprocess.run([*cmd, "--arch", "seed", "--epochs", "1"], env=env, capture_output=True, text=True)
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(60)
    assert second.returncode == 1, second.stderr
    assert second.stderr.strip() == (
        f"Error: {out} is in use by process {first.pid} — wait for it to finish, or write elsewhere"
    )
    assert load_checkpoint(out).arch == "compact"  # the first run's file, untouched by the second


def test_resume_refuses_options_that_conflict_with_the_run(tiny_data):
    assert runner.invoke(app, ["train", "--epochs", "2", *FAST]).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", "--epochs", "23", "--lr", "0.1", "--arch", "seed"])
    assert result.exit_code == 2
    (line,) = errors_of(result)
    assert f"--lr 0.1 (the run has {RECIPES['compact']['lr']})" in line
    assert "--arch seed (the run has 'compact')" in line
    assert "--epochs" not in line.split("differ:")[1]  # a new total is not a conflict
    result = runner.invoke(app, ["train", "--resume", "--train-limit", "100", "--no-augment"])
    assert result.exit_code == 2 and "--train-limit 100" in result.stderr and "--no-augment" in result.stderr


def test_a_finished_run_is_extended_with_a_replanned_schedule(tiny_data, tmp_path):
    args = ["train", *FAST, "--schedule", "onecycle", "--seed", "1"]
    assert runner.invoke(app, [*args, "--epochs", "2", "-o", str(tmp_path / "a.pt")]).exit_code == 0
    finished = load_checkpoint(tmp_path / "a.pt")
    result = runner.invoke(app, ["train", "--resume", "--epochs", "4", "-o", str(tmp_path / "a.pt"), "--json"])
    assert result.exit_code == 0, result.output
    extended = load_checkpoint(tmp_path / "a.pt")
    assert extended.epoch == 4 and extended.config["epochs"] == 4
    assert [h["epoch"] for h in extended.history] == [1, 2, 3, 4]
    assert extended.history[:2] == finished.history
    # The one-cycle plan for 4 epochs: epoch 3 runs at a rate well above where the 2-epoch plan had ended ...
    lrs = [h["lr"] for h in extended.history]
    assert lrs[2] > 100 * lrs[1]
    # ... and ends the new total as a plan for 4 epochs does.
    assert lrs[3] == pytest.approx(lrs[1], rel=0.05)
    again = runner.invoke(app, ["train", "--resume", "--epochs", "4", "-o", str(tmp_path / "a.pt")])
    assert again.exit_code == 1 and "already finished all 4 epochs" in again.stderr


# --------------------------------------------------------------------------------------------- corruption


def _flip_a_weight_byte(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor's data inside a torch.save zip (stored uncompressed)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    blob = bytearray(path.read_bytes())
    name_len, extra_len = (
        int.from_bytes(blob[info.header_offset + 26 : info.header_offset + 28], "little"),
        int.from_bytes(blob[info.header_offset + 28 : info.header_offset + 30], "little"),
    )
    start = info.header_offset + 30 + name_len + extra_len
    blob[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(blob))


def test_a_flipped_byte_in_a_checkpoint_is_an_error(tiny_data, tmp_path):
    out = tmp_path / "m.pt"
    assert runner.invoke(app, ["train", "--epochs", "1", *FAST, "-o", str(out)]).exit_code == 0
    _flip_a_weight_byte(out)
    result = runner.invoke(app, ["eval", "-m", str(out)])
    assert result.exit_code == 1
    assert errors_of(result) == [
        f"Error: {out} is corrupt: its weights do not match their checksum — train one with `mnistctl train`, "
        "or pass another with -m/--model"
    ]


def test_original_state_dicts_without_a_digest_still_load(tmp_path):
    from mnistctl.models import DigitClassifier

    torch.save(DigitClassifier().state_dict(), tmp_path / "digit_model.pt")
    assert load_checkpoint(tmp_path / "digit_model.pt").arch == "seed"


@pytest.fixture
def verified_tiny_data(tiny_data, monkeypatch):
    """Tiny data whose own checksums stand in for MNIST's, with verification on as for real MNIST."""
    raw = data_mod.raw_dir(tiny_data)
    specs = tuple(
        data_mod.MnistFile(
            f.name, hashlib.sha256((raw / f.name).read_bytes()).hexdigest(), (raw / f.name).stat().st_size
        )
        for f in data_mod.MNIST_FILES
    )
    monkeypatch.setattr(data_mod, "MNIST_FILES", specs)
    monkeypatch.setenv("MNISTCTL_VERIFY_DATA", "1")
    return tiny_data


def test_a_flipped_byte_in_the_training_images_is_reported(verified_tiny_data, tmp_path):
    images = data_mod.raw_dir(verified_tiny_data) / "train-images-idx3-ubyte"
    blob = bytearray(images.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one pixel, one bit: the file is still a well-formed IDX file
    images.write_bytes(bytes(blob))
    result = runner.invoke(app, ["train", "--epochs", "1", *FAST, "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 1
    assert errors_of(result) == [
        f"Error: {images} is corrupt (its content is not MNIST's) — run `mnistctl download --force` to fetch it again"
    ]
    assert not (tmp_path / "m.pt").exists()
    info = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    states = {f["name"]: f["state"] for f in info["data_files"]}
    assert states["train-images-idx3-ubyte"] == "corrupt" and states["t10k-images-idx3-ubyte"] == "present"
    (data_mod.raw_dir(verified_tiny_data) / "t10k-labels-idx1-ubyte").unlink()
    info = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert {f["name"]: f["state"] for f in info["data_files"]}["t10k-labels-idx1-ubyte"] == "missing"


def test_verified_data_trains(verified_tiny_data, tmp_path):
    assert runner.invoke(app, ["train", "--epochs", "1", *FAST, "-o", str(tmp_path / "m.pt")]).exit_code == 0


# --------------------------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--save-errors", "{file}"], "{file} is a file, not a directory — pass a directory to --save-errors"),
        (
            ["eval", "--save-errors", "{file}/sub"],
            "cannot create {file}/sub: {file} is a file, not a directory — fix the --save-errors path",
        ),
        (
            ["train", "-o", "{file}/x.pt"],
            "cannot write {file}/x.pt: {file} is a file, not a directory — fix the -o path",
        ),
        (
            ["compare-optimizers", "--plot", "{file}/p.png"],
            "cannot write {file}/p.png: {file} is a file, not a directory — fix the --plot path",
        ),
        (
            ["compare-optimizers", "--csv", "{dir}"],
            "{dir} is a directory — pass a file name to --csv, e.g. --csv {dir}/x",
        ),
    ],
)
def test_output_paths_that_cannot_be_used_name_the_option(tiny_data, tmp_path, args, message):
    plain = tmp_path / "plain.txt"
    plain.write_text("a file")
    fill = {"file": str(plain), "dir": str(tmp_path)}
    result = runner.invoke(app, [a.format(**fill) for a in args])
    assert result.exit_code == 1, result.output
    assert errors_of(result) == ["Error: " + message.format(**fill)]
    assert "Traceback" not in result.output and plain.read_text() == "a file"


# --------------------------------------------------------------------------------------------- signals and pipes


def test_ctrl_c_during_a_download_says_what_it_kept(tmp_path, fake_mnist, mirror_server):
    mirror_server.serve("/m/", fake_mnist.gz)
    route = mirror_server.routes["/m/train-images-idx3-ubyte.gz"]
    route.stall_after = len(route.body) // 2
    data_dir = tmp_path / "d"
    proc = subprocess.Popen(
        [*cli_expecting(fake_mnist), "download", "--force", "--data-dir", str(data_dir),
         "--mirror", mirror_server.url("/m/")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    part = data_mod.raw_dir(data_dir) / "train-images-idx3-ubyte.gz.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= route.stall_after) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    route.resume.set()
    assert proc.returncode == 130
    assert stderr.strip() == (
        f"Error: interrupted; the partial download train-images-idx3-ubyte.gz.part in {part.parent} is kept — "
        "run the same command again to resume it"
    )
    assert part.exists()


def test_a_closed_pipe_ends_predict_quietly_like_other_tools(tmp_path, tiny_model):
    from PIL import Image

    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (12, 4, 16, 24))  # a "1"
    for i in range(300):
        digit.save(tmp_path / f"{i:03}.png")
    proc = subprocess.run(
        [
            "bash",
            "-c",
            f"'{MNISTCTL_SCRIPT}' predict -m '{tiny_model}' '{tmp_path}' | head -1; echo \"${{PIPESTATUS[0]}}\"",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[-1] == "141", proc.stdout
    assert "Error" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_new_run_does_not_replace_an_unfinished_one(tiny_data, tmp_path):
    out = tmp_path / "run.pt"
    stop = runner.invoke(app, ["train", "--epochs", "1", *FAST, "-o", str(out)])
    assert stop.exit_code == 0
    checkpoint = load_checkpoint(out)
    checkpoint.config["epochs"] = 5  # as if Ctrl-C had stopped a 5-epoch run after its first epoch
    torch.save(checkpoint.to_dict(), out)
    again = runner.invoke(app, ["train", "--epochs", "1", *FAST, "-o", str(out)])
    assert again.exit_code == 1
    assert errors_of(again) == [
        f"Error: {out} holds an unfinished run (1 of 5 epochs) — continue it with --resume, or pass --force "
        "to start over"
    ]
    assert runner.invoke(app, ["train", "--epochs", "1", *FAST, "-o", str(out), "--force"]).exit_code == 0


def test_precision_may_change_on_resume(tiny_data, tmp_path):
    """The run may go on on another device: precision is the new device's default, or as --amp/--no-amp say."""
    out = tmp_path / "run.pt"
    assert runner.invoke(app, ["train", "--epochs", "1", *FAST, "-o", str(out), "--amp"]).exit_code == 0
    assert load_checkpoint(out).config["precision"] == "bf16"
    resumed = runner.invoke(app, ["train", "--resume", "--epochs", "2", "--no-amp", "-o", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out).config["precision"] == "fp32"
