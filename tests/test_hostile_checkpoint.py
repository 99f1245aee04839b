"""Hostile checkpoint files through the real CLI: memory bombs, NaN models, malformed entries, files that are not
regular files, and a disk that fills while a checkpoint is written.

For each: exit 1, exactly one line on stderr, ``Error: <what is wrong> — <what to do>``, naming the file; never a
traceback or the catch-all "unexpected …" line. Where memory or time is the point, the CLI runs in a child process
that reports its peak resident memory, under a generous timeout (no timing assertion).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import MNISTCTL_SCRIPT, write_tiny_mnist
from PIL import Image
from typer.testing import CliRunner

from mnistctl.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from mnistctl.cli import app
from mnistctl.config import TrainConfig
from mnistctl.data.mnist import load_mnist
from mnistctl.models import ARCHITECTURES
from mnistctl.train import fit

runner = CliRunner()
GiB = 1 << 30
MAX_RSS = 3 * GiB // 2  # loading the bundled model peaks near 0.6 GiB; each bomb below would cost 2 GiB or more


# --------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def digit(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    im = Image.new("L", (40, 40), 255)
    im.paste(0, (18, 6, 23, 34))
    im.save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real training checkpoint (optimizer, scheduler, RNG, EMA weights, history), as torch.load reads it."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNISTCTL_VERIFY_DATA", "0")
        data = load_mnist(write_tiny_mnist(root / "data", n_train=128, n_test=32))
        fit(TrainConfig(epochs=1, batch_size=64, seed=1), data, torch.device("cpu"), out=root / "run.pt")
    return torch.load(root / "run.pt", weights_only=True)


def fresh(trained: dict[str, Any]) -> dict[str, Any]:
    """A copy to edit (tensors are shared: edits replace entries, they never write into a tensor)."""

    def copy(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: copy(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [copy(v) for v in obj]
        return obj

    return copy(trained)


def compact_checkpoint(**changes: Any) -> dict[str, Any]:
    """A current-format checkpoint of the default network (random weights), with ``changes`` to make_checkpoint."""
    torch.manual_seed(0)
    arch = ARCHITECTURES["compact"]
    values = {
        "arch": "compact",
        "arch_config": dict(arch.defaults),
        "state_dict": arch.build().state_dict(),
        "normalization": arch.normalization,
        "epoch": 1,
        "config": {},
        "history": [],
        "metrics": {},
    }
    return make_checkpoint(**{**values, **changes})


def assert_one_error(result: Any, names: Path | str, *fragments: str) -> str:
    """Exit 1 and one line on stderr, ``Error: … — …``, naming ``names`` and holding each of ``fragments``."""
    stderr = result.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    code = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    assert code == 1, stderr
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("Error: ") and " — " in line, line
    assert "unexpected" not in line and "Traceback" not in stderr, line
    assert str(names) in line, line
    for fragment in fragments:
        assert fragment in line, line
    return line


def predict(model: Path, image: Path) -> Any:
    return runner.invoke(app, ["predict", "-m", str(model), str(image)])


MEASURED = """
import resource, sys
from mnistctl.cli import app
try:
    app(sys.argv[2:], prog_name="mnistctl")
finally:
    with open(sys.argv[1], "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def run_measured(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """The CLI in a child process: its result and its peak resident memory in bytes."""
    report = tmp_path / "maxrss"
    proc = subprocess.run(
        [sys.executable, "-c", MEASURED, str(report), *args],
        capture_output=True,
        text=True,
        timeout=600,  # a bound, not a measurement: the widths bomb took 22 s to fail before
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    kib = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux
    return proc, int(report.read_text()) * kib


# --------------------------------------------------------------------------------------------- 1. memory bombs


def _wide_arch_config(path: Path) -> None:
    """A 0.2 MB file whose arch_config asks for a 2,000,000-channel layer (4.6 GB and 22 s to build)."""
    checkpoint = compact_checkpoint()
    checkpoint.update(version=2, arch_config={"widths": [24, 48, 2_000_000], "dropout": 0.0})
    checkpoint.pop("meta_sha256", None)  # version 2 had no checksum over arch_config: the bounds must hold on their own
    torch.save(checkpoint, path)


def _expanded_tensor(path: Path) -> None:
    """A tensor of 2 GiB of floats that repeats one stored float (stride 0): copying or checksumming it costs 2 GiB."""
    checkpoint = compact_checkpoint()
    checkpoint["state_dict"]["classifier.weight"] = torch.zeros(1).expand(GiB // 2)
    torch.save(checkpoint, path)


def _deflated_record(path: Path, inflated: int = 5 * GiB // 4) -> None:
    """A real checkpoint whose first storage record is replaced by ``inflated`` zero bytes, deflated (torch's
    reader inflates a record to the size the archive declares before it compares it with the tensor)."""
    source = path.with_suffix(".src")
    save_checkpoint(source, compact_checkpoint())
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for info in zin.infolist():
            if not info.filename.endswith("/data/0"):
                zout.writestr(info.filename, zin.read(info.filename))
                continue
            chunk = bytes(16 << 20)
            with zout.open(info.filename, "w", force_zip64=True) as record:
                for _ in range(inflated // len(chunk)):
                    record.write(chunk)
    source.unlink()


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_wide_arch_config, "widths must be a list of 1 to 4 whole numbers from 1 to 512"),
        (_expanded_tensor, "classifier.weight'] is a tensor larger than the data it is made of"),
        (_deflated_record, "would inflate to 1,280 MB"),
    ],
    ids=["arch_config widths", "expanded tensor", "deflate bomb"],
)
def test_memory_bombs_are_refused_before_any_big_allocation(tmp_path, digit, make, fragment):
    bomb = tmp_path / "bomb.pt"
    make(bomb)
    assert bomb.stat().st_size < 8 << 20
    proc, peak = run_measured(tmp_path, "predict", "-m", str(bomb), str(digit))
    assert_one_error(proc, bomb, fragment)
    assert peak < MAX_RSS, f"peak resident memory {peak / GiB:.2f} GiB"


def test_a_record_that_inflates_absurdly_is_refused(tmp_path, digit):
    """Within the total limit, but 64 MB from a few hundred kB: no checkpoint's weights compress like that."""
    bomb = tmp_path / "bomb.pt"
    _deflated_record(bomb, inflated=64 << 20)
    assert_one_error(predict(bomb, digit), bomb, "would inflate", "-fold (a decompression bomb)")


def test_an_edited_arch_config_no_longer_matches_its_checksum(tmp_path, digit):
    checkpoint = compact_checkpoint()
    checkpoint["arch_config"] = {"widths": [24, 48, 32], "dropout": 0.0}  # within bounds: only the digest tells
    torch.save(checkpoint, tmp_path / "edited.pt")
    assert_one_error(predict(tmp_path / "edited.pt", digit), tmp_path / "edited.pt", "is corrupt", "checksum")


def test_weights_of_another_dtype_do_not_fit(tmp_path, digit):
    state = {k: v.double() if v.is_floating_point() else v for k, v in compact_checkpoint()["state_dict"].items()}
    save_checkpoint(tmp_path / "f64.pt", compact_checkpoint(state_dict=state))
    assert_one_error(predict(tmp_path / "f64.pt", digit), tmp_path / "f64.pt", "do not fit architecture 'compact'")


def test_new_checkpoints_cover_what_decides_the_network_with_a_checksum(tmp_path):
    save_checkpoint(tmp_path / "m.pt", compact_checkpoint())
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["version"] == 3 and len(raw["meta_sha256"]) == 64
    assert load_checkpoint(tmp_path / "m.pt").arch == "compact"


# --------------------------------------------------------------------------------------------- 2. NaN models


def _nan_weight() -> dict[str, Any]:
    state = compact_checkpoint()["state_dict"]
    state["features.1.weight"] = state["features.1.weight"].clone()
    state["features.1.weight"][0, 0, 0, 0] = math.nan
    return compact_checkpoint(state_dict=state)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_nan_weight, "not finite (NaN or infinity) in state_dict['features.1.weight']"),
        (lambda: compact_checkpoint(normalization=(math.nan, 0.3)), "normalization['mean'] is nan"),
        (lambda: compact_checkpoint(normalization=(0.1, math.inf)), "normalization['std'] is inf"),
        (lambda: compact_checkpoint(normalization=(0.1, 0.0)), "not a finite number above 0"),
        (lambda: compact_checkpoint(normalization=(0.1, -0.3)), "not a finite number above 0"),
    ],
    ids=["NaN weight", "NaN mean", "infinite std", "zero std", "negative std"],
)
def test_models_that_are_not_finite_are_refused(tmp_path, digit, make, fragment):
    save_checkpoint(tmp_path / "nan.pt", make())
    assert_one_error(predict(tmp_path / "nan.pt", digit), tmp_path / "nan.pt", fragment)


def test_a_nan_in_the_training_state_is_refused(tmp_path, digit, trained):
    checkpoint = fresh(trained)
    first = next(iter(checkpoint["optimizer"]["state"]))
    buffer = checkpoint["optimizer"]["state"][first]["momentum_buffer"].contiguous().clone()
    buffer.view(-1)[0] = math.inf
    checkpoint["optimizer"]["state"][first]["momentum_buffer"] = buffer
    torch.save(checkpoint, tmp_path / "inf.pt")
    line = assert_one_error(predict(tmp_path / "inf.pt", digit), tmp_path / "inf.pt", "not finite")
    assert "optimizer['state']" in line


# --------------------------------------------------------------------------------------------- 3. malformed


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda checkpoint: checkpoint.__setitem__(key, value)


def _set_in(key: str, inner: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda checkpoint: checkpoint[key].__setitem__(inner, value)


MALFORMED = [
    ("arch not text", _set("arch", 5), "arch is 5, not text"),
    ("arch unknown", _set("arch", "resnet"), "architecture this mnistctl does not know ('resnet')"),
    ("version text", _set("version", "3"), "version is '3', not a whole number"),
    ("version newer", _set("version", 99), "written by a newer mnistctl"),
    ("arch_config text", _set("arch_config", "big"), "arch_config is 'big', not a table"),
    ("arch_config unknown key", _set_in("arch_config", "depth", 3), "'depth' is not a setting of the compact"),
    ("arch_config dropout", _set_in("arch_config", "dropout", "0.1"), "dropout must be a number from 0 to 0.9"),
    ("normalization list", _set("normalization", [0.1, 0.3]), "normalization is [0.1, 0.3], not a table"),
    ("normalization text", _set_in("normalization", "mean", "0.1"), "normalization['mean'] is '0.1', not a number"),
    ("config text", _set("config", "fast"), "config is 'fast', not a table"),
    ("config lr NaN", _set_in("config", "lr", math.nan), "config['lr'] is nan"),
    ("config epochs text", _set_in("config", "epochs", "ten"), "config['epochs'] is 'ten', not a whole number"),
    ("config optimizer", _set_in("config", "optimizer", "lion"), "config['optimizer'] is 'lion', not a value"),
    ("config of another network", _set_in("config", "arch", "seed"), "config is for the 'seed' network"),
    ("optimizer text", _set("optimizer", "adam"), "optimizer is 'adam', not a table"),
    ("optimizer groups", _set_in("optimizer", "param_groups", "all"), "optimizer['param_groups'] is 'all'"),
    ("scheduler list", _set("scheduler", [1, 2]), "scheduler is [1, 2], not a table"),
    ("rng text", _set("rng", {"torch": "seed"}), "rng['torch'] is 'seed', not a tensor of uint8"),
    ("rng floats", _set("rng", {"torch": torch.zeros(3)}), "rng['torch'] is a float32 tensor of shape [3]"),
    ("epoch text", _set("epoch", "3"), "epoch is '3', not a whole number from 0"),
    ("epoch negative", _set("epoch", -1), "epoch is -1, not a whole number from 0"),
    ("epoch disagrees", _set("epoch", 7), "its history ends at epoch 1, but its epoch is 7"),
    ("history table", _set("history", {"epoch": 1}), "history is {'epoch': 1}, not a list"),
    ("history entry", _set("history", [{"epoch": 1, "loss": 2.0}]), "history[0] is"),
    ("metrics text", _set_in("metrics", "test_accuracy", "high"), "metrics['test_accuracy'] is 'high'"),
    ("ema_steps", _set("ema_steps", 2.5), "ema_steps is 2.5, not a whole number"),
    ("weights digest", _set("weights_sha256", 5), "weights_sha256 is 5, not a sha256 digest"),
    ("state_dict list", _set("state_dict", [1, 2]), "state_dict is [1, 2], not a table"),
    ("state_dict value", _set_in("state_dict", "classifier.bias", [0.0] * 10), "['classifier.bias'] is [0.0,"),
    ("nested too deep", _set("bundle", functools.reduce(lambda inner, _: [inner], range(40), [])), "nested deeper"),
]


@pytest.mark.parametrize(("name", "edit", "fragment"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_entries_are_one_line_errors_naming_the_file(tmp_path, digit, trained, name, edit, fragment):
    checkpoint = fresh(trained)
    edit(checkpoint)
    path = tmp_path / "edited.pt"
    torch.save(checkpoint, path)
    assert_one_error(predict(path, digit), path, fragment)


def test_a_checkpoint_with_a_nan_lr_is_blamed_when_resumed_not_the_option(tmp_path, tiny_data, trained):
    checkpoint = fresh(trained)
    checkpoint["config"]["lr"] = math.nan
    path = tmp_path / "run.pt"
    torch.save(checkpoint, path)
    line = assert_one_error(runner.invoke(app, ["train", "--resume", "--epochs", "2", "-o", str(path)]), path)
    assert not line.startswith("Error: --lr") and "config['lr'] is nan" in line


def _empty_optimizer(checkpoint: dict[str, Any]) -> None:
    checkpoint["optimizer"] = {"state": {}, "param_groups": []}


def _other_optimizer(checkpoint: dict[str, Any]) -> None:
    checkpoint["config"]["optimizer"] = "adam"  # its state is SGD's momentum


def _short_schedule(checkpoint: dict[str, Any]) -> None:
    checkpoint["scheduler"] = {**checkpoint["scheduler"], "base_lrs": [0.1]}


def _short_rng(checkpoint: dict[str, Any]) -> None:
    checkpoint["rng"] = {"torch": torch.zeros(10, dtype=torch.uint8)}


def _no_scheduler(checkpoint: dict[str, Any]) -> None:
    checkpoint["scheduler"] = None


@pytest.mark.parametrize(
    "edit",
    [_empty_optimizer, _other_optimizer, _short_schedule, _short_rng, _no_scheduler],
    ids=["optimizer without groups", "state of another optimizer", "one rate for two groups", "RNG state", "none"],
)
def test_a_training_state_that_does_not_fit_its_run_is_refused_on_resume(tmp_path, tiny_data, trained, edit):
    checkpoint = fresh(trained)
    edit(checkpoint)
    path = tmp_path / "run.pt"
    torch.save(checkpoint, path)
    before = path.read_bytes()
    result = runner.invoke(app, ["train", "--resume", "--epochs", "2", "-o", str(path)])
    assert_one_error(result, path, "cannot be resumed")
    assert path.read_bytes() == before


def test_the_trained_checkpoint_itself_resumes(tmp_path, tiny_data, trained):
    """The rehearsal refuses only what --resume could not continue: the untouched file trains on."""
    path = tmp_path / "run.pt"
    torch.save(fresh(trained), path)
    result = runner.invoke(app, ["train", "--resume", "--epochs", "2", "-q", "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(path).epoch == 2


# --------------------------------------------------------------------------------------------- 4. -m


def test_a_fifo_as_model_is_not_a_regular_file_and_never_blocks(tmp_path, digit):
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [MNISTCTL_SCRIPT, "predict", "-m", str(fifo), str(digit)], capture_output=True, text=True, timeout=120
    )
    assert_one_error(proc, fifo, "is not a regular file (a FIFO)")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="no /proc on this system")
def test_a_proc_file_as_model_is_not_a_regular_file(digit):
    result = predict(Path("/proc/self/status"), digit)
    assert_one_error(result, "/proc/self/status", "is not a regular file (a file the kernel makes up")


@pytest.mark.skipif(not Path("/dev/urandom").exists(), reason="no /dev/urandom")
def test_a_symlink_to_a_device_as_model_is_not_a_regular_file(tmp_path, digit):
    link = tmp_path / "model.pt"
    link.symlink_to("/dev/urandom")
    assert_one_error(predict(link, digit), link, "is not a regular file (a device)")


@pytest.mark.parametrize("name", ["compact", "wide"])
def test_a_plain_state_dict_of_mnistctls_own_networks_loads_as_that_network(tmp_path, tiny_data, name):
    path = tmp_path / f"{name}.pt"
    torch.save(ARCHITECTURES[name].build().state_dict(), path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.arch == name and checkpoint.normalization == (0.1307, 0.3081)
    result = runner.invoke(app, ["eval", "-m", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["arch"] == name


def test_a_plain_state_dict_of_compact_at_other_sizes_is_named(tmp_path, digit):
    path = tmp_path / "narrow.pt"
    torch.save(ARCHITECTURES["compact"].build(widths=[8, 16, 32]).state_dict(), path)
    assert_one_error(predict(path, digit), path, "state_dict of mnistctl's compact or wide network", "other layer")


def test_pytorchs_legacy_format_is_refused_with_how_to_convert(tmp_path, digit):
    """Its loader allocates every storage at the size the file declares before reading it: not read at all."""
    path = tmp_path / "legacy.pt"
    torch.save(ARCHITECTURES["seed"].build().state_dict(), path, _use_new_zipfile_serialization=False)
    assert_one_error(predict(path, digit), path, "format from before 1.6", "torch.save")


# --------------------------------------------------------------------------------------------- 5. full disk


def test_a_full_disk_while_train_saves_is_one_line_and_keeps_the_previous_file(tmp_path, tiny_model):
    """A real full file system: a 384 kB tmpfs in a private mount namespace, holding the previous checkpoint
    (about 190 kB); the new one, with its training state, needs about 560 kB."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to mount a small tmpfs in a private mount namespace")
    data = write_tiny_mnist(tmp_path / "data", n_train=64, n_test=32)
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    script = """
        mount -t tmpfs -o size=384k tmpfs "$DISK" || exit 77
        cp "$PREVIOUS" "$DISK/m.pt"
        "$MNISTCTL" train --epochs 1 -b 32 --force -q -o "$DISK/m.pt" 2> "$OUT/stderr"
        echo $? > "$OUT/rc"
        ls -A "$DISK" > "$OUT/listing"
        cmp -s "$PREVIOUS" "$DISK/m.pt" && echo same > "$OUT/same"
    """
    env = {
        **os.environ,
        "DISK": str(disk),
        "OUT": str(out),
        "PREVIOUS": str(tiny_model),
        "MNISTCTL": MNISTCTL_SCRIPT,
        "MNISTCTL_DATA_DIR": str(data),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if not (out / "rc").exists():
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace: {proc.stderr.strip()[:200]}")
    stderr = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == "1", stderr
    target = disk / "m.pt"
    assert stderr.splitlines() == [
        f"Error: the disk is full while writing {target} — free some space and run the command again"
    ]
    assert (out / "listing").read_text().split() == ["m.pt"]  # no temporary file, no lock file left
    assert (out / "same").exists()  # the previous checkpoint, byte for byte


def test_one_tensor_listed_many_times_is_refused_at_once(tmp_path):
    """A 4 MB tensor referred to 2,000 times fits a small pickle but would be checked 2,000 times: refused."""
    import torch

    path = tmp_path / "repeated.pt"
    tensor = torch.zeros(1 << 20)
    torch.save({"format": "mnistctl-checkpoint", "version": 2, "arch": "compact", "scheduler": [tensor] * 2000}, path)
    result = runner.invoke(app, ["eval", "-m", str(path)])
    assert result.exit_code == 1
    assert "refers to more tensor data than any checkpoint holds" in result.stderr
