"""At a real terminal (stderr a pty), results still go wherever stdout points: a file, a pipe.

Progress bars and panels are drawn only at a terminal, so only these tests see what a person sees. Each runs
the installed `mnistctl` in a new process with stderr on a pseudo-terminal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import cli_expecting
from PIL import Image, ImageDraw
from terminal import run_at_terminal

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


def _one(path: Path, size: tuple[int, int] = (60, 80)) -> Path:
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).line([(size[0] // 2, 10), (size[0] // 2, size[1] - 10)], fill=0, width=6)
    image.save(path)
    return path


def _number(path: Path) -> Path:
    image = Image.new("L", (200, 80), 255)
    draw = ImageDraw.Draw(image)
    for x in (30, 100, 170):
        draw.line([(x, 10), (x, 70)], fill=0, width=6)
    image.save(path)
    return path


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(3):
        _one(folder / f"one{i}.png")
    return folder


@pytest.mark.parametrize("where", ["file", "pipe"])
def test_predict_lines_reach_stdout_with_a_terminal_on_stderr(scans, tmp_path, where):
    target = tmp_path / "answers.tsv" if where == "file" else "pipe"
    run = run_at_terminal(["predict", str(scans)], stdout=target)
    assert run.returncode == 0, run.screen
    lines = run.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(scans / f"one{i}.png") for i in range(3)]
    assert all(line.split("\t")[1] == "1" for line in lines)
    assert "one0.png\t" not in run.screen  # the results are not drawn on the terminal instead


def test_predict_json_lines_reach_a_pipe(scans):
    run = run_at_terminal(["predict", str(scans), "--json"])
    assert run.returncode == 0, run.screen
    assert [json.loads(line)["path"] for line in run.stdout.splitlines()] == [
        str(scans / f"one{i}.png") for i in range(3)
    ]


def test_predict_multi_reaches_a_file(tmp_path):
    folder = tmp_path / "numbers"
    folder.mkdir()
    _number(folder / "a.png")
    _number(folder / "b.png")
    run = run_at_terminal(["predict", "--multi", str(folder)], stdout=tmp_path / "out.tsv")
    assert run.returncode == 0, run.screen
    assert [line.split("\t")[:2] for line in run.stdout.splitlines()] == [
        [str(folder / "a.png"), "111"],
        [str(folder / "b.png"), "111"],
    ]


def test_train_at_a_terminal_says_what_it_trains(tiny_data, tmp_path):
    run = run_at_terminal(["train", "--epochs", "1", "-b", "64", "-o", str(tmp_path / "m.pt")], stdout="terminal")
    assert run.returncode == 0, run.screen
    header = "training: compact, sgd-nesterov lr 0.15, batch 64, 256 images and 51 non-digits, 1 epoch(s), on cpu in"
    assert header in run.screen
    assert "Saved " in run.screen


def test_train_json_events_reach_a_file(tiny_data, tmp_path):
    out = tmp_path / "t.json"
    run = run_at_terminal(["train", "--epochs", "2", "-b", "64", "-o", str(tmp_path / "m.pt"), "--json"], stdout=out)
    assert run.returncode == 0, run.screen
    events = [json.loads(line)["event"] for line in run.stdout.splitlines()]
    assert events == ["epoch", "epoch", "summary"]
    assert '"event"' not in run.screen


def test_eval_json_reaches_a_pipe(tiny_data, tiny_model):
    run = run_at_terminal(["eval", "-m", str(tiny_model), "--json"])
    assert run.returncode == 0, run.screen
    assert json.loads(run.stdout)["count"] == 128
    assert "evaluating on test" in run.screen  # a progress bar, on the terminal only


def test_download_json_reaches_a_file(fake_mnist, tmp_path):
    run = run_at_terminal(
        ["download", "--mirror", str(fake_mnist.directory), "--data-dir", str(tmp_path / "d"), "--json"],
        stdout=tmp_path / "d.json",
        argv0=cli_expecting(fake_mnist),
    )
    assert run.returncode == 0, run.screen
    assert [f["status"] for f in json.loads(run.stdout)["files"]] == ["downloaded"] * 4
    assert "train-images-idx3-ubyte.gz" in run.screen and "\x1b" not in run.stdout  # bars there, plain JSON here
    assert "[downloaded]" in run.screen  # each bar's last word: literal text, not taken for Rich markup


def test_compare_optimizers_json_reaches_a_pipe(tiny_data, tmp_path):
    args = ["compare-optimizers", "--train-limit", "64", "--results", str(tmp_path / "r.json")]
    run = run_at_terminal([*args, "--epochs", "2", "--json"])
    assert run.returncode == 0, run.screen
    assert [r["optimizer"] for r in json.loads(run.stdout)["runs"]] == ["adam", "sgd-nesterov"]
    assert "adam (1/2): about" in run.screen  # the estimate after the first epoch, on the terminal


def test_no_color_preview_still_shows_the_digit(tmp_path):
    """NO_COLOR: the panel's picture is drawn in shading characters, not in blocks that need colour."""
    digit = _one(tmp_path / "digit.png")
    run = run_at_terminal(["predict", str(digit)], stdout="terminal", env={"NO_COLOR": "1"})
    assert run.returncode == 0, run.screen
    assert "▀" not in run.screen
    assert "@@" in run.screen  # the stroke, in the darkest shade
    assert "\x1b[38;2" not in run.screen and "\x1b[48;2" not in run.screen  # no colours at all


def test_colour_preview_at_a_terminal(tmp_path):
    digit = _one(tmp_path / "digit.png")
    run = run_at_terminal(["predict", str(digit)], stdout="terminal")
    assert run.returncode == 0, run.screen
    assert "▀" in run.screen and "digit.png" in run.screen


def test_predict_dash_at_a_terminal_says_it_reads_paths(scans):
    """`predict -` with stdin a terminal says what it waits for; Ctrl-D (end of input) ends the list."""
    typed = f"{scans / 'one0.png'}\n".encode() + b"\x04"
    run = run_at_terminal(["predict", "-"], stdin="terminal", typed=typed)
    assert run.returncode == 0, run.screen
    assert run.stdout.startswith(str(scans / "one0.png") + "\t1\t")
    assert "Reading image paths from stdin" in run.screen
    piped = run_at_terminal(["predict", "-"], stdin=f"{scans / 'one0.png'}\n".encode())
    assert piped.returncode == 0 and piped.stdout.startswith(str(scans / "one0.png"))
    assert "Reading image paths" not in piped.screen  # stdin a pipe: nothing to say
