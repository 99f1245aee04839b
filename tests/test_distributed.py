"""Data-parallel training with torchrun: two gloo processes on the CPU equal one process."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch
from helpers import MNISTCTL_SCRIPT, write_tiny_mnist
from typer.testing import CliRunner

from mnistctl.batches import shard
from mnistctl.checkpoint import load_checkpoint
from mnistctl.cli import app
from mnistctl.config import TrainConfig
from mnistctl.data.mnist import load_mnist
from mnistctl.errors import MnistctlError
from mnistctl.runtime import Accelerators, DistInfo, check_nproc, rank_device_name
from mnistctl.train import fit

runner = CliRunner()


# SGD, not Adam, for the equivalence: Adam divides by the root of tiny second moments, which turns the last-bit
# differences of an all-reduce (its sums run in another order) into visible ones. With SGD a weight moves by
# lr × gradient each step (momentum 0.9 gives at most 10 × that over time): float32 rounding of the summed
# gradients (~1e-6 of them, relative) times lr × steps × 10 stays far below TOLERANCE for gradients below ~100.
LR = 0.05
SGD = ["--optimizer", "sgd", "--lr", str(LR), "--no-amp"]  # fp32 on every CPU: bf16 would round far more
STEPS = 4  # 256 images, batch 64
TOLERANCE = LR * STEPS * 10 * 1e-4


def test_two_gloo_processes_match_one_process(tmp_path):
    """Same global batch and seed: the weights after one epoch agree to float tolerance.

    The network is `seed` (no BatchNorm): on the CPU each rank normalises its own half of the batch (SyncBatchNorm
    needs GPUs), which is the one documented difference for BatchNorm networks.
    """
    data_dir = write_tiny_mnist(tmp_path / "data", n_train=256, n_test=64)
    args = [*SGD, "--arch", "seed", "--epochs", "1", "--batch-size", "64", "--augment", "--seed", "4"]
    env = {**os.environ, "MNISTCTL_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [MNISTCTL_SCRIPT, "train", "--nproc", "2", "--device", "cpu", "-o", str(tmp_path / "ddp.pt"), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"event": "summary"') == 1  # rank 0 alone prints

    config = TrainConfig(
        arch="seed", epochs=1, optimizer="sgd", lr=LR, batch_size=64, augment=True, seed=4, precision="fp32"
    )
    fit(config, load_mnist(data_dir), torch.device("cpu"), out=tmp_path / "single.pt")
    ddp = load_checkpoint(tmp_path / "ddp.pt")
    single = load_checkpoint(tmp_path / "single.pt")
    assert ddp.state_dict.keys() == single.state_dict.keys()  # no "module." prefixes
    for key, value in single.state_dict.items():
        difference = float((ddp.state_dict[key] - value).abs().max())
        assert difference <= TOLERANCE, (key, difference)
    assert abs(ddp.history[0]["train_loss"] - single.history[0]["train_loss"]) < 1e-4
    # The data-parallel checkpoint resumes in a single process.
    resumed = runner.invoke(
        app, ["train", "--resume", "-o", str(tmp_path / "ddp.pt")], env={"MNISTCTL_DATA_DIR": str(data_dir)}
    )
    assert resumed.exit_code == 1 and "already finished" in resumed.stderr


def test_shards_cover_the_batch_once():
    for length in (1, 7, 64, 65):
        for world in (1, 2, 3):
            parts = [range(length)[shard(length, r, world)] for r in range(world)]
            assert [i for p in parts for i in p] == list(range(length))


def test_nproc_on_cuda_without_enough_gpus_is_a_one_line_error():
    with pytest.raises(MnistctlError, match="needs 2 GPUs, but 1 found"):
        check_nproc(2, "cuda", Accelerators(cuda_names=("A",)))
    assert check_nproc(2, "cpu", Accelerators(cuda_names=("A",))) == "cpu"
    assert check_nproc(4, "auto", Accelerators(cuda_names=("A", "B", "C", "D"))) == "cuda"
    result = runner.invoke(app, ["train", "--nproc", "2", "--device", "cuda"])
    assert result.exit_code == 2  # a device that is not there is a bad option
    assert result.stderr.count("\n") == 1 and "Error: device 'cuda' is not available" in result.stderr


def test_each_rank_takes_the_gpu_of_its_local_rank():
    two = Accelerators(cuda_names=("A", "B"))
    assert rank_device_name("cuda:0", DistInfo(rank=3, world_size=4, local_rank=1), two) == "cuda:1"
    with pytest.raises(MnistctlError, match="local rank 2 needs GPU cuda:2"):
        rank_device_name("cuda:0", DistInfo(rank=2, world_size=3, local_rank=2), two)


def test_uneven_shards_batchnorm_and_ema_under_two_gloo_processes(tmp_path):
    """The default network (BatchNorm) with a moving average, and global batches that split unevenly between the
    two processes (63 = 32 + 31; the last batch of 250 images is 61 = 31 + 30): it trains, rank 0 alone writes,
    and the checkpoint resumes in a single process."""
    data_dir = write_tiny_mnist(tmp_path / "data", n_train=250, n_test=64)
    env = {**os.environ, "MNISTCTL_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp.pt"
    args = ["--arch", "compact", "--ema", "0.9", "--epochs", "1", "--batch-size", "63", "--json"]
    proc = subprocess.run(
        [MNISTCTL_SCRIPT, "train", "--nproc", "2", "--device", "cpu", "-o", str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"event": "summary"') == 1
    saved = load_checkpoint(out)
    assert saved.epoch == 1 and saved.config["batch_size"] == 63 and saved.training.model_state
    assert 0 <= saved.history[0]["train_loss"] < 10 and 0 <= saved.history[0]["test_accuracy"] <= 1
    resumed = runner.invoke(
        app, ["train", "--resume", "--epochs", "2", "-o", str(out)], env={"MNISTCTL_DATA_DIR": str(data_dir)}
    )
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out).epoch == 2
