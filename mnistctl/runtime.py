"""The device-aware core: which device, how many threads, seeds, autocast, and torchrun's environment.

torch is imported inside the functions, never at module level, so importing this module is free.
"""

from __future__ import annotations

import datetime
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mnistctl.errors import MnistctlError, UsageError, first_line

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


@dataclass(frozen=True)
class Accelerators:
    """What the machine offers: the number of CUDA devices (with names) and whether MPS works."""

    cuda_names: tuple[str, ...] = ()
    mps: bool = False

    @classmethod
    def detect(cls) -> Accelerators:
        import torch

        names: tuple[str, ...] = ()
        if torch.cuda.is_available():
            names = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        mps_backend = getattr(torch.backends, "mps", None)
        mps = bool(mps_backend is not None and mps_backend.is_available())
        return cls(names, mps)

    def available(self) -> list[str]:
        return ["cpu"] + [f"cuda:{i}" for i in range(len(self.cuda_names))] + (["mps"] if self.mps else [])


def resolve_device_name(spec: str | None, acc: Accelerators) -> str:
    """Turn ``--device`` (or ``$MNISTCTL_DEVICE``) into a concrete device string, checked against ``acc``.

    ``auto`` picks CUDA, then MPS, then CPU. Asking for a device that is not there is an error.
    """
    spec = (spec or os.environ.get("MNISTCTL_DEVICE") or "auto").strip().lower()
    available = ", ".join(acc.available())
    if spec == "auto":
        if acc.cuda_names:
            return "cuda:0"
        return "mps" if acc.mps else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "mps":
        if not acc.mps:
            raise UsageError("device 'mps' is not available here", f"use one of: {available}")
        return "mps"
    if spec == "cuda" or spec.startswith("cuda:"):
        index_text = spec.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise UsageError(f"invalid device {spec!r}", f"use {DEVICE_CHOICES}")
        index = int(index_text)
        if not acc.cuda_names:
            raise UsageError(f"device {spec!r} is not available: no CUDA GPU found", f"use one of: {available}")
        if index >= len(acc.cuda_names):
            raise UsageError(
                f"device {spec!r} is not available: only {len(acc.cuda_names)} CUDA GPU(s) found",
                f"use one of: {available}",
            )
        return f"cuda:{index}"
    raise UsageError(f"unknown device {spec!r}", f"use {DEVICE_CHOICES}")


def select_device(spec: str | None = None, dist: DistInfo | None = None) -> torch.device:
    """The device for this process; under torchrun, CUDA ranks take the GPU of their local rank."""
    import torch

    acc = Accelerators.detect()
    name = resolve_device_name(spec, acc)
    if dist is not None and dist.enabled and name.startswith("cuda"):
        name = rank_device_name(name, dist, acc)
    return torch.device(name)


def rank_device_name(name: str, dist: DistInfo, acc: Accelerators) -> str:
    """One GPU per process: local rank i uses cuda:i."""
    if dist.local_rank >= len(acc.cuda_names):
        raise MnistctlError(
            f"local rank {dist.local_rank} needs GPU cuda:{dist.local_rank}, but this machine has "
            f"{len(acc.cuda_names)} GPU(s)",
            "start at most one process per GPU (--nproc_per_node), or train on the CPU with --device cpu",
        )
    return f"cuda:{dist.local_rank}"


def check_nproc(nproc: int, spec: str | None, acc: Accelerators) -> str:
    """Validate ``mnistctl train --nproc N`` before launching; return the device kind the ranks will use."""
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, not {nproc}", "pass the number of processes")
    name = resolve_device_name(spec, acc)
    if name.startswith("cuda") and nproc > len(acc.cuda_names):
        raise MnistctlError(
            f"--nproc {nproc} on CUDA needs {nproc} GPUs, but {len(acc.cuda_names)} found",
            f"use --nproc {max(1, len(acc.cuda_names))}, or --device cpu to train with {nproc} CPU processes",
        )
    if name == "mps" and nproc > 1:
        raise MnistctlError("data-parallel training on MPS is not supported", "use --device cpu or a CUDA machine")
    return "cuda" if name.startswith("cuda") else "cpu"


def init_distributed(device: torch.device, dist: DistInfo) -> None:
    """Join torchrun's process group: NCCL between GPUs, gloo between CPU processes."""
    import torch.distributed as tdist

    if not dist.enabled or tdist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    timeout = rendezvous_timeout()
    try:
        tdist.init_process_group(
            backend=backend, rank=dist.rank, world_size=dist.world_size, timeout=datetime.timedelta(seconds=timeout)
        )
    except (RuntimeError, ValueError) as exc:  # torch's DistNetworkError / DistStoreError are RuntimeErrors
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise MnistctlError(
            f"could not join the {dist.world_size} processes of WORLD_SIZE={dist.world_size} at {where} as "
            f"RANK={dist.rank} within {timeout:g} s ({first_line(exc, 120)})",
            "start every process with torchrun, or unset RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (left over "
            "from another run?) to train in one process",
        ) from exc


def rendezvous_timeout() -> float:
    """How long to wait for the other processes: ``$MNISTCTL_RENDEZVOUS_TIMEOUT`` seconds, else five minutes
    (time for the other machines of a multi-node run to start; a stale environment should not wait for ever)."""
    text = os.environ.get("MNISTCTL_RENDEZVOUS_TIMEOUT", "300")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"MNISTCTL_RENDEZVOUS_TIMEOUT={text!r} is not a positive number of seconds", "e.g. 300")
    return value


def shutdown_distributed() -> None:
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def setup_device(spec: str | None, threads: int | None) -> torch.device:
    """The device for this process (``--device``, checked) with torch's thread count set (``--threads``)."""
    set_threads(threads)
    return select_device(spec, dist_info())


def launch_torchrun(nproc: int, spec: str | None, argv: Sequence[str]) -> int:
    """Run ``mnistctl <argv>`` (without its ``--nproc``) under ``torchrun --standalone --nproc_per_node N``."""
    import sys

    check_nproc(nproc, spec, Accelerators.detect())
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    cmd = [sys.executable, "-c", TORCHRUN, "--standalone", f"--nproc_per_node={nproc}"]
    return run_forwarding_signals([*cmd, "-m", "mnistctl", *args])


# torchrun (torch.distributed.run's main), except that a signal, once its workers are stopped, ends it with the
# signal's exit status instead of the traceback of its SignalException: each worker has said what it kept.
TORCHRUN = """import sys
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import main
sys.argv[0] = "torchrun"
try:
    main()
except SignalException as exc:
    sys.exit(128 + int(exc.sigval))
"""


FORWARDED_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")


def run_forwarding_signals(cmd: Sequence[str]) -> int:
    """Run ``cmd`` (torchrun) to its end and return its exit status; SIGTERM, SIGHUP and SIGINT sent to this
    process are passed on to it, so that it stops its workers (it sends them the same signal and waits for
    them) before this process goes on to stop too.

    torchrun runs in a session of its own, so that a signal reaches it once, from here: a terminal's Ctrl-C or
    hangup would otherwise reach it twice (from the terminal and from here), and torchrun's handler, raising
    again while it waits for its workers, would stop waiting. After it has ended, the first signal received is
    raised again in this process, whose handlers (`mnistctl.cli.failures`) end the command with
    the signal's exit status (128 + its number). A signal ignored when we started (``nohup``) stays ignored.
    """
    import signal
    import subprocess

    received: list[int] = []
    proc = subprocess.Popen(list(cmd), start_new_session=True)

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        proc.send_signal(signum)

    wanted = [getattr(signal, name) for name in FORWARDED_SIGNALS if hasattr(signal, name)]
    previous = {s: signal.signal(s, forward) for s in wanted if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        code = proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        signal.raise_signal(received[0])
    return code


def set_threads(threads: int | None) -> int:
    """Use ``threads`` intra-op threads (default: torch's choice, one per physical core); return the count."""
    import torch

    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, not {threads}", "pass a positive number")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def leave_cores(workers: int) -> int:
    """Give torch the cores ``workers`` busy threads of our own leave it (at least one), and return its thread
    count. torch's threads spin while they wait: as many of them as there are cores, next to busy decoding
    threads, make both several times slower. torch has one thread count per process, so only the command
    line, which owns the process, calls this."""
    import torch

    if workers > 0:
        torch.set_num_threads(max(1, torch.get_num_threads() - workers))
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (CPU and every GPU)."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def device_kind(device: torch.device) -> str:
    """ "gpu" for CUDA and MPS, else "cpu": the two classes of device the training recipes are tuned for."""
    return "gpu" if device.type in ("cuda", "mps") else "cpu"


def amp_precision(device: torch.device) -> str:
    """What ``--amp`` means on ``device``: bf16, except on CUDA GPUs without native bf16 (before Ampere), where
    it is fp16 with loss scaling. (On a CPU without native bf16, bf16 is emulated: slow, but what --amp asks.)"""
    return "fp16" if device.type == "cuda" and not cuda_native_bf16(device) else "bf16"


def cuda_native_bf16(device: torch.device) -> bool:
    """Whether this CUDA GPU computes bf16 in hardware (compute capability 8.0, Ampere, or newer). torch's own
    ``is_bf16_supported()`` also says yes where bf16 is only emulated, and asks about the current device."""
    import torch

    return torch.cuda.get_device_capability(device) >= (8, 0)


def precision_option(amp: bool | None, device: torch.device) -> str | None:
    """``--amp`` → mixed precision for the device, ``--no-amp`` → fp32, neither → None (the default)."""
    if amp is None:
        return None
    return amp_precision(device) if amp else "fp32"


def choose_precision(amp: bool | None, device: torch.device) -> str:
    """The precision to run in: as ``--amp``/``--no-amp`` say, else the device's default."""
    return precision_option(amp, device) or default_precision(device)


def default_precision(device: torch.device, cpu_flags: set[str] | None = None) -> str:
    """The precision training uses unless ``--amp``/``--no-amp`` says otherwise, by what the device computes
    natively (docs/benchmarks.md): bf16 autocast on CUDA GPUs with native bf16 and on CPUs with native bf16
    instructions (AVX512-BF16 or AMX), fp32 elsewhere (bf16 emulated on an AVX2 CPU trains 7–10× slower;
    fp16 is never a default)."""
    if device.type == "cuda":
        return "bf16" if cuda_native_bf16(device) else "fp32"
    if device.type == "cpu":
        return "bf16" if NATIVE_BF16 & (read_cpu_flags() if cpu_flags is None else cpu_flags) else "fp32"
    return "fp32"


NATIVE_BF16 = {"avx512_bf16", "amx_bf16"}


def read_cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is absent, e.g. macOS)."""
    return set(_cpuinfo_field(("flags", "Features")).split())


def cpu_model() -> str:
    """The CPU's model name as Linux gives it, else what Python's platform module knows."""
    import platform

    return _cpuinfo_field(("model name",)) or platform.processor() or platform.machine()


def _cpuinfo_field(names: tuple[str, ...]) -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(names):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


@dataclass(frozen=True)
class DistInfo:
    """torchrun's view of this process: global rank, number of processes, rank on this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info(environ: dict[str, str] | None = None) -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as torchrun sets them (absent: one process)."""
    env = os.environ if environ is None else environ
    fix = "start the command with torchrun, or unset RANK, WORLD_SIZE and LOCAL_RANK to train in one process"
    try:
        info = DistInfo(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))
    except ValueError as exc:
        raise MnistctlError(f"torchrun's environment is malformed ({exc})", fix) from exc
    if info.world_size < 1 or not 0 <= info.rank < info.world_size or info.local_rank < 0:
        raise MnistctlError(
            f"torchrun's environment is inconsistent: RANK={env.get('RANK', '(unset)')}, "
            f"WORLD_SIZE={env.get('WORLD_SIZE', '(unset)')}, LOCAL_RANK={env.get('LOCAL_RANK', '(unset)')}",
            fix,
        )
    if info.enabled and not (env.get("MASTER_ADDR") and env.get("MASTER_PORT")):
        raise MnistctlError(f"WORLD_SIZE={info.world_size} is set but MASTER_ADDR or MASTER_PORT is not", fix)
    return info


def describe_devices(acc: Accelerators) -> list[dict[str, str]]:
    """One row per device for ``mnistctl info``."""
    rows = [{"device": "cpu", "name": "CPU"}]
    rows += [{"device": f"cuda:{i}", "name": n} for i, n in enumerate(acc.cuda_names)]
    if acc.mps:
        rows.append({"device": "mps", "name": "Apple Metal (MPS)"})
    return rows


def versions(packages: Sequence[str] = ("torch", "torchvision")) -> dict[str, str | None]:
    """Installed versions, read from package metadata (no import)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
