"""The command-line spine: help, version, info, error conventions, and start-up without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mnistctl import __version__
from mnistctl.cli import app

runner = CliRunner()


def test_help_lists_commands_with_examples():
    result = runner.invoke(app, ["--help"], terminal_width=120)
    assert result.exit_code == 0
    listed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2]
    commands = ["download", "train", "eval", "predict", "compare-optimizers", "info"]
    assert [name for name in listed if name in commands] == commands  # all six, in the order of the workflow
    assert "Examples" in result.stdout and "mnistctl download --mirror" in result.stdout
    assert "<bool>" not in result.stdout
    for command in commands:
        page = runner.invoke(app, [command, "--help"], terminal_width=120)
        assert page.exit_code == 0 and "Examples" in page.stdout and f"mnistctl {command}" in page.stdout
        assert "<bool>" not in page.stdout  # plain flags take no value


def test_predict_and_serve_each_have_their_own_workers(tmp_path):
    # Both options were once named Workers in cli/options.py: serve's replaced predict's, so predict's --help
    # spoke of server processes and refused --workers 0 (decoding in the reading thread).
    from PIL import Image, ImageDraw

    def described(command: str) -> str:
        page = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"}, terminal_width=250).stdout
        return next(" ".join(line.split()) for line in page.splitlines() if "--workers" in line)

    assert "Decoding threads" in described("predict") and "-w" not in described("predict").split()
    assert "Server processes" in described("serve") and "-w" in described("serve").split()
    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).line([(14, 4), (14, 24)], fill=255, width=3)
    image.save(tmp_path / "one.png")
    result = runner.invoke(app, ["predict", "--workers", "0", str(tmp_path / "one.png")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{tmp_path / 'one.png'}\t")


@pytest.mark.parametrize(
    ("args", "said", "fix"),
    [
        (
            ["--arch", "seed", "--rotate", "10"],
            "--rotate would do nothing in the seed recipe, which augments nothing",
            "add --augment, or leave --rotate out",
        ),
        (
            ["--no-augment", "--shift", "1", "--elastic", "2"],
            "--shift, --elastic would do nothing with --no-augment",
            "drop --no-augment, or --shift, --elastic",
        ),
    ],
)
def test_train_refuses_augmentation_options_that_would_do_nothing(args, said, fix, tmp_path):
    result = runner.invoke(app, ["train", *args, "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 2 and said in result.output and fix in " ".join(result.output.split())
    assert not (tmp_path / "m.pt").exists()


def test_resume_checks_augmentation_options_against_the_run(tmp_path):
    """A resumed seed run given its own --rotate is not refused as "would do nothing": --resume compares each
    option with the run's (here: there is no run, which is what it says)."""
    result = runner.invoke(app, ["train", "--resume", "--arch", "seed", "--rotate", "15", "-o", str(tmp_path / "m.pt")])
    assert result.exit_code != 0 and "would do nothing" not in result.output


def test_augmentation_options_are_taken_where_images_are_augmented():
    from mnistctl.config import TrainConfig

    TrainConfig(arch="seed", augment=True, rotate=10.0).check_augmentation()  # asked for: augmented
    TrainConfig(rotate=5.0).check_augmentation()  # the default recipes augment
    TrainConfig(arch="seed", augment=False).check_augmentation()  # nothing given, nothing refused


def test_options_are_each_defined_once():
    import ast
    import inspect

    from mnistctl.cli import options

    tree = ast.parse(inspect.getsource(options))
    names = [
        t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)
    ]
    names += [
        node.target.id for node in tree.body if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    ]
    assert sorted({n for n in names if names.count(n) > 1}) == []


@pytest.mark.parametrize("command", ["train", "compare-optimizers", "predict"])
def test_command_help_paragraphs_are_reflowed_not_broken_at_source_lines(command):
    # Typer's rich help keeps a docstring's line breaks; on a wide terminal they showed as ragged lines.
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"}, terminal_width=250)
    assert result.exit_code == 0
    body = " ".join(result.stdout.split())
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip() and "│" not in line]
    sentence = {
        "train": "the batch size is the global one",
        "compare-optimizers": "batch 32, no augmentation",
        "predict": "the rest are still predicted",
    }[command]
    assert sentence in body and any(sentence in line for line in lines)


def test_no_arguments_shows_help_and_usage_exit_code():
    result = runner.invoke(app, [])
    assert result.exit_code == 2
    assert "Usage" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"mnistctl {__version__}"


def test_unknown_option_is_a_usage_error():
    result = runner.invoke(app, ["download", "--no-such-option"])
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_info_json(isolated_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./digit_model.pt
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["mnistctl"] == __version__
    assert info["torch"] and info["auto_device"] in ("cpu", "cuda:0", "mps")
    assert info["devices"][0]["device"] == "cpu"
    assert info["data_dir"] == os.environ["MNISTCTL_DATA_DIR"] and info["data_ok"] is False
    # $MNISTCTL_MODEL names a file that is not there: eval and predict would use the bundled model.
    assert info["model"]["source"] == "the bundled model" and info["model"]["exists"]
    assert info["precision"] in ("fp32", "bf16")
    assert info["threads"] >= 1


def _table_rows(text: str) -> list[tuple[str, str]]:
    """(first column, second column) of every row of the two-column tables in ``text``."""
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) == 4 and cells[0] == cells[3] == "":
            rows.append((cells[1], cells[2]))
    return rows


def test_info_human_output_shows_what_json_says():
    facts = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    result = runner.invoke(app, ["info"], env={"COLUMNS": "300"})  # wide enough that no value wraps
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.stdout)
    for key in ("mnistctl", "python", "torch", "threads", "precision"):
        assert (key, str(facts[key])) in rows, key
    assert ("data dir", f"{facts['data_dir']} (incomplete)") in rows, rows  # none of the four files is there
    assert ("model", f"{facts['model']['path']} (the bundled model)") in rows
    assert [row for row in rows if row[0] in {d["device"] for d in facts["devices"]}] == [
        (d["device"], d["name"]) for d in facts["devices"]
    ]
    assert [row for row in rows if row[0].endswith("-ubyte")] == [(f["name"], "missing") for f in facts["data_files"]]


def test_bad_device_environment_is_reported_by_info(monkeypatch):
    monkeypatch.setenv("MNISTCTL_DEVICE", "tpu")
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0
    assert "invalid MNISTCTL_DEVICE" in json.loads(result.stdout)["auto_device"]


def test_unexpected_exception_is_one_line_unless_debug(monkeypatch, tmp_path):
    import mnistctl.info

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(mnistctl.info, "collect_info", boom)
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: unexpected RuntimeError: kaboom — run again as `mnistctl --debug …` for the traceback, and report it "
        "with the output of `mnistctl info`"
    ]
    result = runner.invoke(app, ["--debug", "info"])
    assert isinstance(result.exception, RuntimeError)


def test_keyboard_interrupt_exits_130(monkeypatch):
    import mnistctl.info

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mnistctl.info, "collect_info", interrupted)
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 130
    assert result.stderr.startswith("Error: interrupted")


TORCH_PROBE = """
import sys
sys.argv = ["mnistctl", *sys.argv[1:]]
from mnistctl.cli import app
try:
    app()
except SystemExit as exc:
    code = exc.code
print("torch-imported" if "torch" in sys.modules else "torch-free", code, file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["download", "--help"], ["--version"], ["info", "--help"]])
def test_help_and_version_do_not_import_torch(args):
    proc = subprocess.run([sys.executable, "-c", TORCH_PROBE, *args], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "torch-free 0", proc.stderr


def test_download_does_not_import_torch(fake_mnist, tmp_path):
    # The subprocess cannot see the monkeypatched checksums, so it fails verification: that is fine, the
    # point is that the whole download path, success or failure, runs without torch.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            TORCH_PROBE,
            "download",
            "--data-dir",
            str(tmp_path / "d"),
            "--mirror",
            str(fake_mnist.directory),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stderr.strip().splitlines()[-1] == "torch-free 1", proc.stderr
    assert "checksum mismatch" in proc.stderr


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "mnistctl", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mnistctl {__version__}"
