"""`mnistctl predict` through the CLI and in real shell pipelines."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import MNISTCTL_SCRIPT
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from mnistctl.cli import app
from mnistctl.imaging import digit_input
from mnistctl.report.predictions import SHADES

runner = CliRunner()


@pytest.fixture
def model(tiny_model: Path) -> Path:
    return tiny_model


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    out = []
    for i, (w, h) in enumerate([(28, 28), (120, 90), (64, 200)]):
        im = Image.new("RGB", (w, h), "white")
        ImageDraw.Draw(im).line([(w * 0.3, h * 0.2), (w * 0.6, h * 0.8)], fill="black", width=max(2, w // 10))
        path = tmp_path / f"digit {i} é.png"  # spaces and unicode in names
        im.save(path)
        out.append(path)
    return out


def test_one_line_per_image_in_input_order(model, images):
    result = runner.invoke(app, ["predict", "-m", str(model), *map(str, reversed(images))])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in reversed(images)]
    for line in lines:
        path, digit, confidence = line.split("\t")
        assert digit in "0123456789" and len(confidence) == 6 and 0 <= float(confidence) <= 1
    assert result.stderr == ""


def test_top_k_and_json_lines(model, images):
    result = runner.invoke(app, ["predict", "-m", str(model), "--top-k", "2", str(images[0])])
    assert result.exit_code == 0, result.output
    fields = result.stdout.strip().split("\t")
    assert len(fields) == 7 and fields[1] not in (fields[3], fields[5])
    result = runner.invoke(app, ["predict", "-m", str(model), "--json", "-k", "1", *map(str, images)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3 and all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in rows)
    assert all(r["digit"] == max(range(10), key=lambda d: r["probabilities"][d]) for r in rows)
    assert all(len(r["top_k"]) == 1 for r in rows)


def test_bad_file_among_good_ones(model, images, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"<html>not an image</html>")
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    args = [
        "predict",
        "-m",
        str(model),
        str(images[0]),
        str(bad),
        str(blank),
        str(images[1]),
        str(tmp_path / "gone.png"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(images[0]), str(images[1])]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("Error: ") for line in errors)
    assert any(str(bad) in e and "not an image" in e for e in errors)
    assert any(str(blank) in e and "blank" in e for e in errors)
    assert any("gone.png" in e for e in errors)
    assert "Traceback" not in result.output


@pytest.mark.parametrize("options", [[], ["--no-preprocess"]])
def test_an_all_black_image_is_blank_whatever_its_size(model, images, tmp_path, options):
    blacks = []
    for side in (28, 100):
        blacks.append(tmp_path / f"black{side}.png")
        Image.new("L", (side, side), 0).save(blacks[-1])
    result = runner.invoke(app, ["predict", "-m", str(model), *options, str(blacks[0]), str(images[1]), str(blacks[1])])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {path}: blank image: no ink found — this file was skipped" for path in blacks
    ]
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(images[1])]


def test_directories_and_recursion(model, images, tmp_path):
    sub = tmp_path / "nested" / "deeper"
    sub.mkdir(parents=True)
    shutil.copy(images[0], sub / "a.png")
    empty = runner.invoke(app, ["predict", "-m", str(model), str(tmp_path / "nested")])
    assert empty.exit_code == 1 and "--recursive" in empty.stderr
    found = runner.invoke(app, ["predict", "-m", str(model), "-r", str(tmp_path / "nested")])
    assert found.exit_code == 0 and found.stdout.startswith(str(sub / "a.png"))


def test_missing_model_and_no_inputs(images, tmp_path):
    result = runner.invoke(app, ["predict", "-m", str(tmp_path / "none.pt"), str(images[0])])
    assert result.exit_code == 1 and "mnistctl train" in result.stderr
    result = runner.invoke(app, ["predict"])
    assert result.exit_code == 2 and "no images given" in result.stderr
    result = runner.invoke(app, ["predict", "--invert", "maybe", str(images[0])])
    assert result.exit_code == 2


def test_no_preprocess_and_show(model, images):
    result = runner.invoke(app, ["predict", "-m", str(model), "--no-preprocess", "--show", str(images[1])])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1  # the preview goes to stderr when stdout is not a terminal
    # Without colour each pixel is two shading characters, darkest to brightest: read the picture back.
    *rows, last = result.stderr.splitlines()  # 28 rows, each ending in a newline, then print()'s own
    assert last == "" and len(rows) == 28 and all(len(row) <= 56 and set(row) <= set(SHADES) for row in rows)
    seen = np.array([[SHADES.index(row[x]) if x < len(row) else 0 for x in range(0, 56, 2)] for row in rows])
    # What the network saw: the 120x90 drawing squeezed to 28x28, inverted (light paper), not cropped.
    expected = digit_input(images[1], preprocess_image=False).astype(int) * len(SHADES) // 256
    assert np.array_equal(seen, expected)
    # The stroke runs from (30%, 20%) to (60%, 80%) of the picture: ink there, none in the corners.
    assert seen[14, 12] >= 5 and seen[6, 9] >= 5 and seen[22, 16] >= 5
    assert seen[:4, :4].max() == 0 and seen[-4:, -4:].max() == 0 and seen[:4, -4:].max() == 0


def test_shell_pipeline_from_stdin(model, images):
    listing = "".join(f"{p}\n" for p in images[:2])
    proc = subprocess.run(
        f"printf '%s' \"$LIST\" | '{MNISTCTL_SCRIPT}' predict - -m '{model}' | cut -f2",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LIST": listing},
    )
    assert proc.returncode == 0, proc.stderr
    digits = proc.stdout.split()
    assert len(digits) == 2 and all(d in "0123456789" for d in digits)
    assert proc.stderr == ""  # no progress bar or log when nothing is a terminal


def test_pipeline_with_a_bad_file_exits_1_after_the_good_lines(model, images, tmp_path):
    bad = tmp_path / "cut.png"
    bad.write_bytes(images[1].read_bytes()[:60])
    proc = subprocess.run(
        [MNISTCTL_SCRIPT, "predict", "-m", str(model), str(images[0]), str(bad), str(images[2])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert len(proc.stdout.splitlines()) == 2 and "\x1b[" not in proc.stdout  # plain lines, no ANSI codes
    assert proc.stderr.count("Error:") == 1 and str(bad) in proc.stderr


def test_a_heic_photo_is_not_called_text(model, tmp_path):
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100))
    result = runner.invoke(app, ["predict", "-m", str(model), str(photo)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {photo}: not an image file (or a format Pillow cannot read) — this file was skipped"
    ]


# --------------------------------------------------------------------------------------------- files that are not files


def test_a_fifo_among_images_is_reported_not_waited_for(model, images, tmp_path):
    """A FIFO named like an image, in a directory and on the command line: opening one for reading would wait
    for a writer forever. It is one bad file like any other, and the command ends."""
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(images[0], folder / "a.png")
    os.mkfifo(folder / "b.png")
    shutil.copy(images[1], folder / "c.png")
    for args in ([str(folder)], [str(folder / "b.png")]):
        proc = subprocess.run(
            [MNISTCTL_SCRIPT, "predict", "-m", str(model), *args], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 1
        errors = proc.stderr.splitlines()
        assert len(errors) == 1 and errors[0].startswith(f"Error: {folder / 'b.png'}: not a regular file — ")
        expected = [str(folder / "a.png"), str(folder / "c.png")] if args == [str(folder)] else []
        assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == expected


def test_a_device_is_not_an_image(model, images):
    result = runner.invoke(app, ["predict", "-m", str(model), "/dev/zero", str(images[0])])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["Error: /dev/zero: not a regular file — this file was skipped"]
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(images[0])]


def test_ctrl_c_ends_a_busy_predict_at_once(model, images, tmp_path):
    """SIGINT while threads decode big photos: exit 130 with one line, after the file in hand, not the chunk.

    32 small files come first (the first chunk: its lines say the command is busy), then big ones that take
    a fraction of a second each: finishing a chunk of those would take many seconds.
    """
    big = Image.new("L", (8000, 8000), 255)  # 64 Mpx: decoding and reducing it takes a while
    ImageDraw.Draw(big).ellipse((2600, 2000, 5400, 6000), outline=0, width=400)
    big.save(tmp_path / "big.png", compress_level=1)
    started = time.monotonic()
    digit_input(tmp_path / "big.png")
    per_file = time.monotonic() - started  # on this machine, however fast it is
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(200):  # one file of each kind, many names
        os.link(images[1] if i < 32 else tmp_path / "big.png", folder / f"{i:04d}.png")
    proc = subprocess.Popen(
        [MNISTCTL_SCRIPT, "predict", "-m", str(model), str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith(str(folder))  # busy now, on the big ones
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = proc.communicate(timeout=120)
        seconds = time.monotonic() - started
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.splitlines() == ["Error: interrupted — nothing half-written was left behind"]
    assert len(out.splitlines()) < 199  # it did not finish the directory
    # Each thread finishes the file in hand, then exits: a couple of files' time, where a chunk is 32 files.
    assert seconds < 2 + 8 * per_file, f"took {seconds:.1f} s to stop ({per_file:.2f} s a file)"
