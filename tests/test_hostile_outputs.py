"""Round three of the adversarial review, for what mnistctl writes and how a run ends: only the file asked for
(no link or device followed or replaced), nothing lost to an output named twice, runs that diverge or are told
to stop, a stale torchrun environment, a real full disk.

Every case runs the real CLI (CliRunner in process, or a subprocess where signals, mounts and a second process
matter) on real links, FIFOs, device nodes (made in a temporary directory, never the real /dev) and a real
tmpfs mounted in a private mount namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from helpers import MNISTCTL_SCRIPT, write_tiny_mnist
from typer.testing import CliRunner

from mnistctl.checkpoint import load_checkpoint
from mnistctl.cli import app

runner = CliRunner()
TRAIN = ["train", "--epochs", "1", "-b", "64"]
COMPARE = ["compare-optimizers", "--epochs", "1", "--train-limit", "64"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def errors_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


# --------------------------------------------------------------------------------------------- links, devices


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_untouched(tiny_data, tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / ".m.pt.lock").symlink_to(victim)
    result = runner.invoke(app, [*TRAIN, "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 1
    assert errors_of(result) == [
        f"Error: the lock file {tmp_path / '.m.pt.lock'} is a symbolic link — remove it: mnistctl does not write "
        "through links"
    ]
    assert victim.read_text() == "precious\n" and (tmp_path / ".m.pt.lock").is_symlink()
    assert not (tmp_path / "m.pt").exists()


def test_the_download_lock_is_not_followed_either(tmp_path):
    victim = _victim(tmp_path)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / ".mnistctl-download.lock").symlink_to(victim)
    result = runner.invoke(app, ["download", "--data-dir", str(tmp_path / "data"), "--mirror", str(tmp_path)])
    assert result.exit_code == 1 and "is a symbolic link" in result.stderr
    assert victim.read_text() == "precious\n"


@pytest.mark.skipif(not ROOT, reason="making a device node needs root")
def test_a_device_as_output_is_refused_not_replaced(tiny_data, tmp_path):
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers, in a temporary directory
    result = runner.invoke(app, [*TRAIN, "-o", str(null), "--force"])
    assert result.exit_code == 1
    assert f"{null} is a character device" in result.stderr and "regular file" in result.stderr
    assert stat.S_ISCHR(null.lstat().st_mode)  # still the device, not a file holding a checkpoint


def test_outputs_that_are_links_or_fifos_are_refused(tiny_data, tmp_path):
    target = _victim(tmp_path)
    (tmp_path / "link.csv").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.png")
    for option, path, kind in (("--csv", "link.csv", "a symbolic link"), ("--plot", "fifo.png", "a FIFO")):
        args = [*COMPARE, "--results", str(tmp_path / "r.json"), option, str(tmp_path / path)]
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert f"{tmp_path / path} is {kind}" in result.stderr
    assert target.read_text() == "precious\n" and not (tmp_path / "r.json").exists()
    assert "--csv - writes to stdout" in runner.invoke(app, [*COMPARE, "--csv", str(tmp_path / "link.csv")]).stderr


def test_csv_dash_writes_the_history_to_stdout(tiny_data, tmp_path):
    result = runner.invoke(app, [*COMPARE, "--results", str(tmp_path / "r.json"), "--csv", "-"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("optimizer,lr,epoch,") and [line.split(",")[0] for line in lines[1:]] == [
        "adam",
        "sgd-nesterov",
    ]
    both = runner.invoke(app, [*COMPARE, "--results", str(tmp_path / "s.json"), "--csv", "-", "--json"])
    assert both.exit_code == 2 and "both write to stdout" in both.stderr


def test_an_output_ending_in_a_slash_names_a_directory(tiny_data, tmp_path):
    result = runner.invoke(app, [*TRAIN, "-o", f"{tmp_path}/newdir/"])
    assert result.exit_code == 2 and "names a directory" in result.stderr
    assert not (tmp_path / "newdir").exists()


# --------------------------------------------------------------------------------------------- compare outputs


def test_compare_results_never_replace_a_checkpoint_or_each_other(tiny_data, tmp_path):
    keep = tmp_path / "keep.pt"
    assert runner.invoke(app, [*TRAIN, "-o", str(keep)]).exit_code == 0
    before = keep.read_bytes()
    result = runner.invoke(app, [*COMPARE, "--results", str(keep)])
    assert result.exit_code == 1 and "is not a compare-optimizers results file" in result.stderr
    assert keep.read_bytes() == before
    same = runner.invoke(app, [*COMPARE, "--results", str(tmp_path / "x"), "--csv", str(tmp_path / "x")])
    assert same.exit_code == 2 and "--results and --csv name the same file" in same.stderr
    results = tmp_path / "r.json"
    assert runner.invoke(app, [*COMPARE, "--results", str(results)]).exit_code == 0
    again = runner.invoke(app, [*COMPARE, "--results", str(results)])
    assert again.exit_code == 1 and "already holds a comparison" in again.stderr and "--resume" in again.stderr
    resumed = runner.invoke(app, [*COMPARE, "--results", str(results), "--resume"])
    assert resumed.exit_code == 0 and "Skipped adam, sgd-nesterov" in resumed.stderr
    assert runner.invoke(app, [*COMPARE, "--results", str(results), "--force"]).exit_code == 0


def test_a_damaged_results_file_is_one_line_on_resume(tiny_data, tmp_path):
    results = tmp_path / "r.json"
    assert runner.invoke(app, [*COMPARE, "--results", str(results)]).exit_code == 0
    saved = json.loads(results.read_text())
    saved["runs"][0]["history"] = [{"epoch": "one"}]
    results.write_text(json.dumps(saved))
    result = runner.invoke(app, [*COMPARE, "--results", str(results), "--resume"])
    assert result.exit_code == 1 and len(errors_of(result)) == 1
    assert "damaged compare-optimizers results file" in result.stderr and "unexpected" not in result.stderr


# --------------------------------------------------------------------------------------------- runs that end badly


def test_a_diverging_run_stops_with_a_line_and_saves_nothing(tiny_data, tmp_path):
    out = tmp_path / "m.pt"
    result = runner.invoke(
        app, ["train", "--epochs", "3", "-b", "64", "--optimizer", "sgd", "--lr", "1e8", "--no-augment", "-o", str(out)]
    )
    assert result.exit_code == 1, result.output
    (line,) = errors_of(result)
    assert "training diverged in epoch" in line and "lower --lr (this run's is 1e+08)" in line
    assert not out.exists()


def test_an_inconsistent_torchrun_environment_is_one_line(tiny_data, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    result = runner.invoke(app, TRAIN)
    assert result.exit_code == 1
    assert errors_of(result) == [
        "Error: torchrun's environment is inconsistent: RANK=1, WORLD_SIZE=(unset), LOCAL_RANK=(unset) — start the "
        "command with torchrun, or unset RANK, WORLD_SIZE and LOCAL_RANK to train in one process"
    ]


def test_a_stale_torchrun_environment_times_out_naming_the_variables(tmp_path):
    data = write_tiny_mnist(tmp_path / "data", n_train=64, n_test=32)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ, "MNISTCTL_DATA_DIR": str(data), "WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port), "MNISTCTL_RENDEZVOUS_TIMEOUT": "3",
    }  # fmt: skip
    proc = subprocess.run(
        [MNISTCTL_SCRIPT, *TRAIN, "-o", str(tmp_path / "m.pt")], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("Error:")]
    assert f"WORLD_SIZE=2 at 127.0.0.1:{port} as RANK=0 within 3 s" in line and "unset RANK, WORLD_SIZE" in line
    assert "Traceback" not in proc.stderr and not (tmp_path / ".m.pt.lock").exists()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_training_like_ctrl_c(tmp_path, signum, code):
    data = write_tiny_mnist(tmp_path / "data", n_train=256, n_test=32)
    out = tmp_path / "run.pt"
    env = {**os.environ, "MNISTCTL_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    cmd = [MNISTCTL_SCRIPT, "train", "-o", str(out), "--batch-size", "8", "-q", "--epochs", "1000"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # until the run has saved its first epoch
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.exists(), "the run saved no epoch"
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("Error:")]
    assert line.startswith(f"Error: {signal.Signals(signum).name}: interrupted during epoch ")
    assert f"continue with `mnistctl train --resume -o {out}`" in line
    assert load_checkpoint(out).epoch >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run.pt"]  # no lock or temporary file left


# --------------------------------------------------------------------------------------------- a real full disk


def _in_a_full_tmpfs(tmp_path: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``command`` (a shell line using $DISK) with $DISK a 64 KiB tmpfs, filled to the last byte, mounted in
    a private mount namespace: a real full file system, invisible outside the test."""
    if not (ROOT and shutil.which("unshare")):
        pytest.skip("a private tmpfs needs root and unshare(1)")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f'mount -t tmpfs -o size=64k tmpfs "$DISK" || exit 99; '
        f'head -c 1048576 /dev/zero > "$DISK/filler" 2>/dev/null; {command}; rc=$?; ls -A "$DISK" >&2; exit $rc'
    )
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        env={**env, "DISK": str(disk)}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[:200]}")
    return proc


def test_a_full_disk_leaves_no_lock_file_and_says_so(tmp_path):
    data = write_tiny_mnist(tmp_path / "data", n_train=64, n_test=32)
    env = {**os.environ, "MNISTCTL_DATA_DIR": str(data)}
    proc = _in_a_full_tmpfs(tmp_path, f'"{MNISTCTL_SCRIPT}" train --epochs 1 -b 64 -o "$DISK/m.pt"', env)
    assert proc.returncode == 1, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("Error:")]
    assert len(errors) == 1 and "the disk is full" in errors[0] and "unexpected" not in errors[0]
    assert proc.stderr.splitlines()[-1] == "filler"  # what the disk holds afterwards: no lock, no temporary file


# --------------------------------------------------------------------------------------------- misleading lines


def test_a_seed_out_of_range_is_said_in_whole_numbers(tiny_data):
    result = runner.invoke(app, [*TRAIN, "--seed", "4294967296"])
    assert result.exit_code == 2
    assert "--seed must be between 0 and 4294967295, not 4294967296" in result.stderr


def test_closed_stdout_is_one_line(tmp_path):
    proc = subprocess.run(f"'{MNISTCTL_SCRIPT}' info >&-", shell=True, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error: stdout is closed — ")


def test_a_hangup_ignored_at_start_stays_ignored(tmp_path, tiny_model):
    """`nohup mnistctl …`: SIGHUP was ignored when mnistctl started, so a hangup does not stop it."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (60, 80), 255)
    ImageDraw.Draw(image).line([(30, 10), (30, 70)], fill=0, width=6)
    image.save(tmp_path / "one.png")
    proc = subprocess.Popen(
        [MNISTCTL_SCRIPT, "predict", "-m", str(tiny_model), "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )  # fmt: skip
    try:
        time.sleep(3)  # it is reading stdin, with its handlers set (a wait, not a timing assertion)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(f"{tmp_path / 'one.png'}\n".encode(), timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.decode().startswith(str(tmp_path / "one.png") + "\t")


def test_an_output_path_the_system_cannot_look_up_is_one_line(tiny_data, tmp_path):
    """Probing the path itself fails (a name over 255 bytes; an unsearchable directory likewise): one line."""
    for option in (["-o"], ["--save-errors"]):
        args = [*TRAIN] if option == ["-o"] else ["eval"]
        result = runner.invoke(app, [*args, *option, str(tmp_path / ("a" * 300) / "x")])
        assert result.exit_code == 1, result.output
        (line,) = errors_of(result)
        assert line.startswith("Error: cannot write ") and "unexpected" not in line
