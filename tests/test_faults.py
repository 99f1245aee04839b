"""Faults: processes killed mid-epoch, mid-checkpoint and mid-download; a full disk. Nothing is lost."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import Route, cli_expecting, write_tiny_mnist
from typer.testing import CliRunner

from mnistctl.checkpoint import load_checkpoint
from mnistctl.cli import app
from mnistctl.data.download import download_mnist
from mnistctl.data.mnist import check_files, raw_dir

runner = CliRunner()
TRAIN = ["train", "--epochs", "3", "--batch-size", "32", "--seed", "2"]

# Runs the real CLI in a subprocess after applying a patch (the fault to inject).
LAUNCH = """
import os, signal, sys
{patch}
from mnistctl.cli import app
sys.argv = ["mnistctl", *sys.argv[1:]]
app()
"""

KILL_IN_EPOCH_2 = """
import mnistctl.batches as t
_aug, _calls = t.augment_batch, [0]
def augment_batch(*a, **k):
    _calls[0] += 1
    if _calls[0] == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return _aug(*a, **k)
t.augment_batch = augment_batch
"""

KILL_IN_SECOND_SAVE = """
_fsync, _calls = os.fsync, [0]
def fsync(fd):  # checkpoints are written whole, then synced: cut the second one in half and die there
    _calls[0] += 1
    if _calls[0] == 2:
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return _fsync(fd)
os.fsync = fsync
"""


def run_cli(args: list[str], env: dict[str, str], patch: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LAUNCH.format(patch=patch), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


@pytest.fixture
def train_env(tmp_path: Path) -> dict[str, str]:
    data = write_tiny_mnist(tmp_path / "data", n_train=128, n_test=32)
    return {"MNISTCTL_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a).state_dict, load_checkpoint(b).state_dict
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("fault", ["mid-epoch", "mid-checkpoint-write"])
def test_sigkilled_training_resumes_to_the_same_weights(tmp_path, train_env, fault):
    straight = run_cli([*TRAIN, "-o", str(tmp_path / "straight.pt")], train_env)
    assert straight.returncode == 0, straight.stderr
    target = tmp_path / "killed.pt"
    if fault == "mid-epoch":  # 4 steps per epoch: step 6 is inside epoch 2
        killed = run_cli([*TRAIN, "-o", str(target)], {**train_env, "KILL_AT_STEP": "6"}, KILL_IN_EPOCH_2)
    else:
        killed = run_cli([*TRAIN, "-o", str(target)], train_env, KILL_IN_SECOND_SAVE)
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(target).epoch == 1  # the last complete checkpoint survived and loads
    resumed = run_cli(["train", "--resume", "-o", str(target)], train_env)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(target).epoch == 3
    assert_same_weights(tmp_path / "straight.pt", target)


def test_ctrl_c_keeps_the_last_checkpoint_and_says_how_to_resume(tmp_path, train_env):
    patch = KILL_IN_EPOCH_2.replace("signal.SIGKILL", "signal.SIGINT")
    proc = run_cli([*TRAIN, "-o", str(tmp_path / "m.pt")], {**train_env, "KILL_AT_STEP": "6"}, patch)
    assert proc.returncode == 130
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "holds the complete epoch 1" in errors[0] and "--resume" in errors[0]
    assert "Traceback" not in proc.stderr
    assert load_checkpoint(tmp_path / "m.pt").epoch == 1


def test_full_disk_while_saving_a_checkpoint_keeps_the_old_one(tmp_path, monkeypatch):
    data = write_tiny_mnist(tmp_path / "data", n_train=64, n_test=32)
    real_fsync, calls = os.fsync, []

    def failing_fsync(fd):  # the second checkpoint's bytes do not fit (a real full disk: test_hostile_checkpoint)
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    out = tmp_path / "m.pt"
    result = runner.invoke(app, ["train", "--epochs", "2", "-o", str(out), "--data-dir", str(data), "-b", "32"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: the disk is full while writing {out} — free some space and run the command again"]
    assert load_checkpoint(out).epoch == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "m.pt"]  # no temporary file left


def test_full_disk_while_downloading_keeps_the_old_files(tmp_path, fake_mnist, monkeypatch):
    download_mnist(tmp_path / "d", mirror=str(fake_mnist.directory))
    rd = raw_dir(tmp_path / "d")
    before = {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file()}
    real_fdopen = os.fdopen

    class FullDisk:
        """A temporary file whose writes fail as on a full disk."""

        def __init__(self, f):
            self.f = f

        def write(self, block):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fdopen(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        return FullDisk(f) if "w" in mode and os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") else f

    monkeypatch.setattr(os, "fdopen", fdopen)  # what fsutil.atomic_file writes an installed file through
    result = runner.invoke(
        app, ["download", "--force", "--data-dir", str(tmp_path / "d"), "--mirror", str(fake_mnist.directory)]
    )
    assert result.exit_code == 1
    assert "the disk is full" in result.stderr and "Traceback" not in result.output
    after = {p.name: p.read_bytes() for p in rd.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if not k.endswith(".part")} == before


def test_sigkilled_download_never_leaves_a_partial_file_and_resumes(tmp_path, fake_mnist, mirror_server):
    mirror_server.serve("/m/", fake_mnist.gz)
    big = "/m/train-images-idx3-ubyte.gz"
    route: Route = mirror_server.routes[big]
    half = len(route.body) // 2
    route.stall_after = half
    data_dir = tmp_path / "d"
    proc = subprocess.Popen(
        [
            *cli_expecting(fake_mnist),
            "download",
            "--data-dir",
            str(data_dir),
            "--mirror",
            mirror_server.url("/m/"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    part = raw_dir(data_dir) / "train-images-idx3-ubyte.gz.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= half) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    route.resume.set()
    assert not (raw_dir(data_dir) / "train-images-idx3-ubyte").exists()
    assert not (raw_dir(data_dir) / "train-images-idx3-ubyte.gz").exists()
    assert [f.state for f in check_files(data_dir)][0] == "missing"

    results = download_mnist(data_dir, mirror=mirror_server.url("/m/"))
    assert results[0].status == "downloaded"
    assert (big, f"bytes={half}-") in mirror_server.log
    assert (raw_dir(data_dir) / "train-images-idx3-ubyte").read_bytes() == fake_mnist.raw["train-images-idx3-ubyte"]
