"""Round three's open ends (issue #20), closed: outputs written on the descriptor that created them, bounded
input on stdin and in gzipped IDX files, credentials in mirror URLs, `train --nproc` stopped by a signal, model
paths the system cannot look up, and the real reason an existing file blocks a new run.

Every case runs the real CLI (CliRunner in process, or the installed script as a subprocess where system calls,
signals, memory and torchrun matter) on real FIFOs, real gzip bombs, a real /dev/zero and real torchrun workers.
"""

from __future__ import annotations

import gzip
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import MNISTCTL_SCRIPT, cli_expecting, write_tiny_mnist
from typer.testing import CliRunner

from mnistctl.cli import app

runner = CliRunner()


def errors_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


# --------------------------------------------------------------------------------------------- outputs


TEMPORARY = re.compile(r'openat\(AT_FDCWD, "([^"]*/\.[^/"]+\.[0-9a-f]{8}\.tmp)", ([A-Z_|]+)')


def _temporary_opens(command: list[str], tmp_path: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """Run ``command`` under strace; for each temporary file it opened (``.NAME.RANDOM.tmp``), the flags of
    every open of it."""
    if shutil.which("strace") is None:
        pytest.skip("strace(1) is not installed")
    log = tmp_path / "strace.log"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(log), *command],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    opens: dict[str, list[str]] = defaultdict(list)
    for path, flags in TEMPORARY.findall(log.read_text()):
        opens[path].append(flags)
    return opens


def _opened_once_exclusively(opens: dict[str, list[str]], name: str) -> None:
    paths = [p for p in opens if os.path.basename(p).startswith(f".{name}.")]  # one per time it was written
    assert paths, f"no temporary file of {name} was seen"
    for path in paths:
        (flags,) = opens[path]  # created once, never reopened by name
        assert "O_EXCL" in flags and "O_NOFOLLOW" in flags, flags


def test_checkpoints_results_csv_plots_and_errors_are_written_on_the_descriptor_that_created_them(tmp_path):
    """The system calls themselves: each temporary file is opened once, by the O_EXCL | O_NOFOLLOW open that
    created it, so nothing planted at its name in between could receive the data."""
    try:
        import matplotlib  # noqa: F401 - --plot needs it (the test extra has it)
    except ImportError:
        plots: list[str] = []
    else:
        plots = ["p.png"]
    data = write_tiny_mnist(tmp_path / "data", n_train=64, n_test=32)
    env = {**os.environ, "MNISTCTL_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    train = [MNISTCTL_SCRIPT, "train", "--epochs", "1", "-b", "64", "-q", "-o", str(tmp_path / "m.pt")]
    _opened_once_exclusively(_temporary_opens(train, tmp_path, env), "m.pt")
    compare = [
        MNISTCTL_SCRIPT, "compare-optimizers", "--epochs", "1", "--train-limit", "64", "-q",
        "--results", str(tmp_path / "r.json"), "--csv", str(tmp_path / "h.csv"),
        *(arg for name in plots for arg in ("--plot", str(tmp_path / name))),
    ]  # fmt: skip
    opens = _temporary_opens(compare, tmp_path, env)
    for name in ("r.json", "h.csv", *plots):
        _opened_once_exclusively(opens, name)
    errors = tmp_path / "errors"  # a network trained two steps on 64 images (and its non-digits) misreads some of 32
    evaluate = [MNISTCTL_SCRIPT, "eval", "-m", str(tmp_path / "m.pt"), "-q", "--save-errors", str(errors)]
    opens = _temporary_opens(evaluate, tmp_path, env)
    written = sorted(p.name for p in errors.iterdir())
    assert written and all(name.endswith(".png") for name in written)
    for name in written:
        _opened_once_exclusively(opens, name)


def test_downloaded_files_are_written_on_the_descriptor_that_created_them(tmp_path, fake_mnist):
    command = [*cli_expecting(fake_mnist), "download", "--data-dir", str(tmp_path / "d"), "--mirror"]
    opens = _temporary_opens([*command, str(fake_mnist.directory), "-q"], tmp_path, dict(os.environ))
    for spec in fake_mnist.specs:
        _opened_once_exclusively(opens, spec.name)


# --------------------------------------------------------------------------------------------- bounded input


def _peak_rss_mb(command: list[str], **kwargs: object) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``command`` in a fresh Python process that reports the peak RSS of its one child (MB)."""
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "sys.stdout.buffer.write(p.stdout); sys.stderr.buffer.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(p.returncode)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, **kwargs)
    *rest, peak = proc.stderr.rstrip("\n").split("\n")
    proc.stderr = "\n".join(rest)
    return proc, int(peak) / 1024


def _address_space(limit: int):  # noqa: ANN202 - a preexec_fn
    """A child whose memory grows without bound fails at ``limit`` bytes instead of taking the machine's."""
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("null", [False, True])
def test_predict_dash_stops_reading_an_endless_stdin(tmp_path, tiny_model, null):
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run(
            [MNISTCTL_SCRIPT, "predict", "-m", str(tiny_model), *(["-0"] if null else []), "-"],
            stdin=zero, capture_output=True, text=True, timeout=120, preexec_fn=_address_space(6 << 30),
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert errors_in(proc.stderr) == [
        "Error: the list of paths on stdin is longer than 64 MiB, the most `predict -` reads — pass fewer paths at "
        "a time: split the list (e.g. `split -l 500000`), or pass their directory instead"
    ]


def test_a_gzip_bomb_in_the_data_directory_is_refused_within_bounded_memory(tmp_path):
    """1 GiB of zeros gzipped to about 1 MB, under the train images' name, read with MNISTCTL_VERIFY_DATA=0."""
    data = write_tiny_mnist(tmp_path / "data", n_train=64, n_test=32)
    bomb = data / "MNIST" / "raw" / "train-images-idx3-ubyte"
    block = bytes(1 << 20)
    with gzip.open(bomb, "wb", compresslevel=1) as f:
        for _ in range(1024):
            f.write(block)
    env = {**os.environ, "MNISTCTL_DATA_DIR": str(data), "MNISTCTL_VERIFY_DATA": "0"}
    proc, peak_mb = _peak_rss_mb([MNISTCTL_SCRIPT, "train", "--epochs", "1", "-o", str(tmp_path / "m.pt")], env=env)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = errors_in(proc.stderr)
    assert line.startswith(f"Error: {bomb} inflates to more than 47,040,016 bytes, the size of MNIST's ")
    assert "store it decompressed" in line and "unexpected" not in line
    assert peak_mb < 1024, peak_mb  # inflating it whole would take the whole GiB, twice


# --------------------------------------------------------------------------------------------- credentials


def test_a_user_name_alone_in_a_mirror_url_is_not_shown(closed_port_url):
    """`https://TOKEN@host/`: a name without a password is the secret; with a password, the name is shown."""
    for given, shown in (("TOKEN@", "***@"), ("alice:s3cret@", "alice:***@")):
        url = closed_port_url.replace("http://", f"http://{given}")
        result = runner.invoke(app, ["download", "--mirror", url, "--json"])
        assert result.exit_code == 1, result.output
        (line,) = errors_in(result.stderr)
        assert closed_port_url.replace("http://", f"http://{shown}") in line
        assert "TOKEN" not in result.output and "s3cret" not in result.output


# --------------------------------------------------------------------------------------------- torchrun


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout.split()
        found += [int(c) for c in children]
        todo += [int(c) for c in children]
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_to_train_nproc_stops_torchrun_and_its_workers(tmp_path):
    data = write_tiny_mnist(tmp_path / "data", n_train=256, n_test=32)
    out = tmp_path / "run.pt"
    env = {**os.environ, "MNISTCTL_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    cmd = [MNISTCTL_SCRIPT, "train", "--nproc", "2", "--device", "cpu", "-o", str(out), "-b", "16", "-q"]
    proc = subprocess.Popen([*cmd, "--epochs", "1000"], env=env, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120  # until rank 0 has saved the first epoch
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.exists(), "the run saved no epoch"
        workers = _descendants(proc.pid)  # torchrun and its two workers
        assert len(workers) == 3, workers
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 143, stderr[-3000:]
    assert not [pid for pid in workers if _alive(pid)], "torchrun or a worker outlived the command"
    lines = errors_in(stderr)
    assert lines and all(x.startswith("Error: SIGTERM: interrupted") for x in lines), lines
    assert f"continue with `mnistctl train --resume -o {out}`" in lines[0]
    assert "Traceback" not in stderr and "nothing was saved" not in stderr  # no rank says what is not so


# --------------------------------------------------------------------------------------------- model paths


def test_a_model_path_the_system_cannot_look_up_is_one_line(tmp_path, monkeypatch):
    too_long = tmp_path / ("a" * 300) / "m.pt"
    monkeypatch.setenv("MNISTCTL_MODEL", str(too_long))
    image = tmp_path / "digit.png"
    image.write_bytes(b"")  # never read: the model is looked for first
    for command in (["eval"], ["predict", str(image)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1, result.output
        (line,) = errors_in(result.stderr)
        assert line.startswith(f"Error: cannot look up {too_long} ($MNISTCTL_MODEL): File name too long — ")
        assert "unset MNISTCTL_MODEL" in line
    monkeypatch.delenv("MNISTCTL_MODEL")
    result = runner.invoke(app, ["eval", "-m", str(too_long)])
    assert result.exit_code == 1 and errors_in(result.stderr)[0].startswith(f"Error: cannot read {too_long}: ")


def test_an_existing_file_that_does_not_load_is_named_with_its_reason(tiny_data, tiny_model, tmp_path):
    import torch

    newer = torch.load(tiny_model, weights_only=True)
    newer["version"] = 99
    torch.save(newer, tmp_path / "newer.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    expected = {"newer.pt": "was written by a newer mnistctl (checkpoint format 99)", "empty.pt": "is empty"}
    for name, reason in expected.items():
        result = runner.invoke(app, ["train", "--epochs", "1", "-o", str(tmp_path / name)])
        assert result.exit_code == 1, result.output
        assert errors_in(result.stderr) == [
            f"Error: {tmp_path / name} exists and does not load as a checkpoint ({reason}) — pass --force to "
            "overwrite it, or write elsewhere with -o"
        ]


# --------------------------------------------------------------------------------------------- predict's scan


def test_a_directory_scan_reads_suffixless_images_and_skips_a_fifo(tmp_path, tiny_model):
    """Positive control for the scan now reading what it opened (fstat on the descriptor): a suffix-less PNG is
    found, a suffix-less FIFO is skipped without blocking."""
    from PIL import Image

    images = tmp_path / "scans"
    images.mkdir()
    digit = Image.new("L", (28, 28), 255)
    digit.paste(0, (12, 5, 16, 23))  # a "1": dark ink on white
    digit.save(images / "scan0001", format="PNG")
    os.mkfifo(images / "scan0002")
    proc = subprocess.run(
        [MNISTCTL_SCRIPT, "predict", "-m", str(tiny_model), str(images)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == [str(images / "scan0001")]
