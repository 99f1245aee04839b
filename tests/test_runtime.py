"""Device selection and device-aware defaults (with mocked capabilities), torchrun's environment, precision."""

from __future__ import annotations

import pytest
import torch

from mnistctl.config import DEFAULT_ARCH, DEFAULT_LR, RECIPES, TrainConfig
from mnistctl.engine import Precision
from mnistctl.errors import MnistctlError, UsageError
from mnistctl.runtime import (
    Accelerators,
    default_precision,
    dist_info,
    precision_option,
    resolve_device_name,
    seed_everything,
)

CPU_ONLY = Accelerators()
TWO_GPUS = Accelerators(cuda_names=("GPU A", "GPU B"))
MAC = Accelerators(mps=True)


@pytest.mark.parametrize(
    ("spec", "acc", "expected"),
    [
        ("auto", CPU_ONLY, "cpu"),
        ("auto", TWO_GPUS, "cuda:0"),
        ("auto", MAC, "mps"),
        ("auto", Accelerators(cuda_names=("G",), mps=True), "cuda:0"),
        ("cpu", TWO_GPUS, "cpu"),
        ("cuda", TWO_GPUS, "cuda:0"),
        ("cuda:1", TWO_GPUS, "cuda:1"),
        ("CUDA:1", TWO_GPUS, "cuda:1"),
        ("mps", MAC, "mps"),
        (None, CPU_ONLY, "cpu"),
    ],
)
def test_resolve_device(spec, acc, expected):
    assert resolve_device_name(spec, acc) == expected


@pytest.mark.parametrize(
    ("spec", "acc", "message"),
    [
        ("cuda", CPU_ONLY, "no CUDA GPU found — use one of: cpu"),
        ("cuda:2", TWO_GPUS, "only 2 CUDA GPU"),
        ("mps", TWO_GPUS, "use one of: cpu, cuda:0, cuda:1"),
    ],
)
def test_unavailable_device_is_an_error_naming_what_exists(spec, acc, message):
    with pytest.raises(MnistctlError) as info:
        resolve_device_name(spec, acc)
    assert message in str(info.value)
    assert info.value.exit_code == 2  # a bad option, like an unknown device


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu"])
def test_unknown_device_is_a_usage_error(spec):
    with pytest.raises(UsageError):
        resolve_device_name(spec, CPU_ONLY)


def test_environment_variable_is_the_default(monkeypatch):
    monkeypatch.setenv("MNISTCTL_DEVICE", "cuda:1")
    assert resolve_device_name(None, TWO_GPUS) == "cuda:1"
    assert resolve_device_name("cpu", TWO_GPUS) == "cpu"  # the option wins


def test_dist_info_reads_torchrun_environment():
    assert dist_info({}).world_size == 1 and dist_info({}).is_main
    master = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    info = dist_info({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", **master})
    assert (info.rank, info.world_size, info.local_rank, info.enabled, info.is_main) == (3, 4, 1, True, False)
    for broken in ({"RANK": "x"}, {"RANK": "4", "WORLD_SIZE": "4", **master}, {"WORLD_SIZE": "2"}):
        with pytest.raises(MnistctlError):
            dist_info(broken)


def test_seeding_repeats_torch_random_numbers():
    seed_everything(7)
    a = torch.rand(5)
    seed_everything(7)
    assert torch.equal(a, torch.rand(5))


@pytest.mark.parametrize(("name", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_precision_autocasts_to_its_dtype(name, dtype):
    layer = torch.nn.Linear(4, 4)
    with Precision(name, torch.device("cpu")).autocast():
        assert layer(torch.ones(1, 4)).dtype == dtype


def test_only_fp16_scales_the_loss():
    cpu = torch.device("cpu")
    assert Precision("fp16", cpu).scaler.is_enabled()
    assert not Precision("bf16", cpu).scaler.is_enabled() and not Precision("fp32", cpu).scaler.is_enabled()
    layer = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    before = layer.weight.detach().clone()
    precision = Precision("fp16", cpu)
    start = precision.scaler.get_scale()
    with precision.autocast():  # a loss whose scaled gradients overflow fp16: the step is skipped ...
        loss = (layer(torch.ones(2, 4)).float() * 1e30).sum()
    precision.backward_and_step(loss, optimizer)
    assert torch.equal(before, layer.weight) and precision.scaler.get_scale() == start / 2  # ... and it backs off
    with precision.autocast():  # an ordinary loss trains
        loss = layer(torch.ones(2, 4)).float().sum() * 1e-3
    precision.backward_and_step(loss, optimizer)
    assert not torch.equal(before, layer.weight)


# --------------------------------------------------------------------------------------------- device-aware defaults

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "fma"}, "fp32"),  # bf16 would be emulated: several times slower
        ({"avx2", "avx512f", "avx512bw"}, "fp32"),
        ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
        ({"amx_tile", "amx_bf16"}, "bf16"),
        (set(), "fp32"),  # no /proc/cpuinfo (macOS): the safe choice
    ],
)
def test_cpu_precision_follows_native_bf16(flags, expected):
    assert default_precision(CPU, cpu_flags=flags) == expected


@pytest.mark.parametrize(
    ("capability", "default", "amp"),
    [((9, 0), "bf16", "bf16"), ((8, 0), "bf16", "bf16"), ((7, 5), "fp32", "fp16"), ((6, 0), "fp32", "fp16")],
)
def test_cuda_precision_follows_the_gpu(monkeypatch, capability, default, amp):
    """H100 and A100 compute bf16; a T4 (7.5) or P100 (6.0) only emulates it (torch's is_bf16_supported()
    says yes there too), so they train in fp32 by default and --amp means fp16 with a GradScaler."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    gpu = torch.device("cuda:0")
    assert default_precision(gpu) == default
    assert precision_option(True, gpu) == amp  # --amp: fp16 (with its GradScaler) only where bf16 is missing
    assert precision_option(False, gpu) == "fp32" and precision_option(None, gpu) is None


def test_recipe_by_device_kind_and_explicit_options_win():
    cpu, gpu = TrainConfig().resolved("cpu", "fp32"), TrainConfig().resolved("gpu", "bf16")
    assert (cpu.arch, gpu.arch) == (DEFAULT_ARCH["cpu"], DEFAULT_ARCH["gpu"])
    assert cpu.batch_size == RECIPES[cpu.arch]["batch_size"] and gpu.batch_size == RECIPES[gpu.arch]["batch_size"]
    assert (cpu.precision, gpu.precision, cpu.epochs, cpu.seed) == ("fp32", "bf16", 10, 0)
    mine = TrainConfig(arch="compact", batch_size=32, lr=0.01, precision="fp32").resolved("gpu", "bf16")
    assert (mine.arch, mine.batch_size, mine.lr, mine.precision) == ("compact", 32, 0.01, "fp32")
    assert TrainConfig(optimizer="sgd").resolved().lr == DEFAULT_LR["sgd"]  # another optimizer: its own rate
