"""`mnistctl predict` against hostile file names and odd images, through the real CLI.

File names may hold anything but "/" and NUL: tabs, newlines, terminal escapes, Rich markup, bytes that are not
UTF-8, and more than 255 bytes. Whatever a name holds, the results stay one record per line, the JSON stays
valid UTF-8, the terminal obeys nothing in the name, and a bad path is one line on stderr while the others are
read. The names are written escaped, as `report.quote_name` says: `\\` `\\t` `\\n`, and `\\xHH` for each byte of
any other control character, of a byte that is not UTF-8, or of what the output's encoding cannot write.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import MNISTCTL_SCRIPT
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from mnistctl.cli import app

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names and permissions")

runner = CliRunner()
SKIPPED = "— this file was skipped"


def _digit(path: Path | bytes, size: tuple[int, int] = (60, 80)) -> Path | bytes:
    """A dark "1" on white paper, saved as PNG at ``path`` (bytes: any name the filesystem takes)."""
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).line([(size[0] // 2, 10), (size[0] // 2, size[1] - 10)], fill=0, width=6)
    with open(path, "wb") as f:
        image.save(f, format="PNG")
    return path


def _run(args: list, *, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess[bytes]:
    """The installed mnistctl in a real process; stdout and stderr as bytes (what a pipe really receives)."""
    return subprocess.run(
        [MNISTCTL_SCRIPT, *args], capture_output=True, timeout=240, env={**os.environ, **(env or {})}, **kwargs
    )


def _unescape(field: str) -> bytes:
    """A TSV path column back to the name's bytes: the inverse of quote_name."""
    out = bytearray()
    for m in re.finditer(r"\\x([0-9a-f]{2})|\\t|\\n|\\\\|(.)", field, re.S):
        if m.group(1):
            out.append(int(m.group(1), 16))
        elif m.group(2) is not None:
            out += m.group(2).encode()
        else:
            out += {"\\t": b"\t", "\\n": b"\n", "\\\\": b"\\"}[m.group()]
    return bytes(out)


@pytest.fixture
def odd(tmp_path: Path) -> dict[str, bytes]:
    """Images with hostile names in ``tmp_path / "odd"``: what each name's TSV column must be -> its bytes."""
    folder = tmp_path / "odd"
    folder.mkdir()
    names = {
        "tab\\there.png": b"tab\there.png",
        "new\\nline.png": b"new\nline.png",
        "back\\\\slash.png": b"back\\slash.png",
        "esc\\x1b[31mred.png": b"esc\x1b[31mred.png",
        "not-utf8-\\xff\\xfe.png": b"not-utf8-\xff\xfe.png",
        "c1-\\xc2\\x9b31m.png": "c1-\u009b31m.png".encode(),
        "bidi-\\xe2\\x80\\xaegnp.exe": "bidi-\u202egnp.exe".encode(),
        "ünïcode and  two spaces.png": "ünïcode and  two spaces.png".encode(),
    }
    for name in names.values():
        _digit(os.fsencode(folder) + b"/" + name)
    return {os.fsdecode(folder) + "/" + column: os.fsencode(folder) + b"/" + name for column, name in names.items()}


# --------------------------------------------------------------------------------------------- 1. shown, not obeyed


def test_escapes_in_names_reach_neither_stdout_nor_stderr_raw(tmp_path, tiny_model):
    good = _digit(tmp_path / "esc\x1b]0;pwned\x07.png")
    bad = tmp_path / "bad\x1b[2J.png"
    bad.write_bytes(b"<html>not an image</html>")
    proc = _run(["predict", "-m", tiny_model, good, bad])
    assert proc.returncode == 1
    assert b"\x1b" not in proc.stdout and b"\x07" not in proc.stdout and b"\x1b" not in proc.stderr
    assert proc.stdout.decode().split("\t")[0] == f"{tmp_path}/esc\\x1b]0;pwned\\x07.png"
    assert proc.stderr.decode().splitlines() == [
        f"Error: {tmp_path}/bad\\x1b[2J.png: not an image file (it is an HTML page) {SKIPPED}"
    ]


@pytest.mark.parametrize("name", ["a[/red]b.png", "[red]x[bold].png", ":thumbs_up: [bold]y.png", "esc\x1b[31mred.png"])
def test_a_name_in_the_panel_is_shown_as_it_is(tmp_path, name):
    """One image at a terminal: a panel with the name under it. Markup in the name is text, not markup (it
    crashed the panel, or vanished); an escape is shown as the four characters ``\\x1b``."""
    from terminal import run_at_terminal

    (tmp_path / "a[").mkdir()
    _digit(tmp_path / name)
    run = run_at_terminal(["predict", name], stdout="terminal", env={"NO_COLOR": "1"}, cwd=tmp_path, columns=160)
    assert run.returncode == 0, run.screen
    assert "unexpected" not in run.screen and "Error" not in run.screen
    shown = name.replace("\x1b", "\\x1b")
    assert shown in run.screen
    assert "\x1b[31mred" not in run.screen


def test_a_bad_file_with_markup_in_its_name_is_named_exactly(tmp_path, tiny_model):
    bad = tmp_path / "[red]x[bold].png"
    bad.write_bytes(b"")
    result = runner.invoke(app, ["predict", "-m", str(tiny_model), str(bad)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"Error: {bad}: empty file (0 bytes) {SKIPPED}"]


def test_info_and_download_tables_show_markup_in_paths_as_text(fake_mnist, tmp_path):
    (tmp_path / "d[").mkdir()
    data = tmp_path / "d[/red]x [bold]"  # a directory "d[" holding "red]x [bold]"
    result = runner.invoke(app, ["info", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert str(data) in result.stdout and "unexpected" not in result.output
    (tmp_path / "m[").mkdir()
    mirror = tmp_path / "m[/]irror"
    shutil.copytree(fake_mnist.directory, mirror)
    result = runner.invoke(app, ["download", "--mirror", str(mirror), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert f"{data}/MNIST/raw" in result.stdout and "m[/]irror" in result.stdout


# --------------------------------------------------------------------------------------------- 2. TSV and JSON


def test_tsv_names_are_escaped_one_record_a_line(odd, tiny_model):
    """`find -print0 | mnistctl predict -0 - | cut -f2` counts every image once, whatever the names hold; the
    first column reads back to the name's bytes."""
    listing = b"".join(name + b"\0" for name in odd.values())
    proc = subprocess.run(
        f"'{MNISTCTL_SCRIPT}' predict -0 - -m '{tiny_model}' | cut -f2",
        shell=True,
        input=listing,
        capture_output=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(b"\n")[:-1] == [b"1"] * len(odd)  # the digit column, one line per image
    lines = _run(["predict", "-0", "-", "-m", tiny_model], input=listing).stdout.decode("utf-8").splitlines()
    assert [line.split("\t")[0] for line in lines] == list(odd)
    assert [_unescape(line.split("\t")[0]) for line in lines] == list(odd.values())
    assert all(len(line.split("\t")) == 3 for line in lines)


def test_json_lines_are_valid_utf8_whatever_the_names(odd, tiny_model):
    proc = _run(["predict", "--json", "-m", tiny_model, *odd.values()])
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode("utf-8")  # strict: raises on a byte that is not UTF-8
    assert not re.search("[\x00-\x1f\x7f-\x9f\u202e]", text.replace("\n", ""))  # JSON escapes them all
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == len(odd)
    for row, (column, name) in zip(rows, odd.items(), strict=True):
        if b"\xff" in name:  # not UTF-8: written as in the TSV, and said so
            assert row["path"] == column and row["path_escaped"] is True
        else:
            assert row["path"] == os.fsdecode(name) and "path_escaped" not in row


def _nan_model(tiny_model: Path, tmp_path: Path) -> Path:
    """The tiny checkpoint with its last layer's weights as large as float32 holds: finite (a checkpoint with
    NaN in it is refused), but every logit overflows to inf, and the softmax of infinities is NaN."""
    import torch

    from mnistctl.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_model)
    state = dict(ckpt.state_dict)
    state["classifier.weight"] = torch.full_like(state["classifier.weight"], torch.finfo(torch.float32).max)
    path = tmp_path / "nan.pt"
    save_checkpoint(
        path,
        make_checkpoint(
            arch=ckpt.arch,
            arch_config=ckpt.arch_config,
            state_dict=state,
            normalization=ckpt.normalization,
            epoch=1,
            config={},
            history=[],
            metrics={},
        ),
    )
    return path


def test_a_nan_model_gives_null_in_json_and_nan_in_tsv(tiny_model, tmp_path):
    model = _nan_model(tiny_model, tmp_path)
    digit = _digit(tmp_path / "one.png")
    for args in (["--json"], ["--json", "--multi", "--top-k", "2"]):
        result = runner.invoke(app, ["predict", "-m", str(model), *args, str(digit)])
        assert result.exit_code == 0, result.output
        assert "NaN" not in result.stdout and "Infinity" not in result.stdout
        row = json.loads(result.stdout)
        assert row["confidence"] is None
        probabilities = row["probabilities"] if "probabilities" in row else row["digits"][0]["probabilities"]
        assert probabilities == [None] * 10
    result = runner.invoke(app, ["predict", "-m", str(model), "--top-k", "1", str(digit)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split("\t")[2] == "nan"


@pytest.mark.parametrize("multi", [[], ["--multi"]])
def test_a_nan_model_still_draws_the_panel(tiny_model, tmp_path, multi):
    from terminal import run_at_terminal

    model = _nan_model(tiny_model, tmp_path)
    run = run_at_terminal(["predict", "-m", str(model), *multi, str(_digit(tmp_path / "one.png"))], stdout="terminal")
    assert run.returncode == 0, run.screen
    assert "unexpected" not in run.screen and "nan" in run.screen and "one.png" in run.screen


# --------------------------------------------------------------------------------------------- 3. one bad path


def test_a_name_over_255_bytes_is_one_bad_file(tmp_path, tiny_model):
    good = _digit(tmp_path / "good.png")
    long = str(tmp_path / ("x" * 300 + ".png"))
    result = runner.invoke(app, ["predict", "-m", str(tiny_model), str(good), long, str(good)])
    assert result.exit_code == 1
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(good), str(good)]
    assert result.stderr.splitlines() == [
        f"Error: {long}: file name too long (over the system's limit: 255 bytes a name) {SKIPPED}"
    ]


@contextlib.contextmanager
def _unprivileged() -> Iterator[tuple[list[str], Path]]:
    """(a command prefix that runs without the power to ignore permissions, a directory it may use).

    Root reads an unsearchable directory anyway, so as root the command runs as nobody (setpriv); the directory
    is one that nobody may enter (pytest's are private to their owner)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: an unsearchable directory cannot be made")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run(
            [*prefix, sys.executable, "-c", f"open({MNISTCTL_SCRIPT!r}).close()"], capture_output=True
        )
        if probe.returncode != 0:  # CI's venv lies under /root/.cache, which only root may enter
            pytest.skip("nobody cannot run this venv's mnistctl (it lies in a directory only root may enter)")
    root = Path(tempfile.mkdtemp(prefix="mnistctl-perm-"))
    root.chmod(0o755)
    try:
        yield prefix, root
    finally:
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)  # so that it can be removed
        shutil.rmtree(root, ignore_errors=True)


def test_a_file_in_an_unsearchable_directory_is_one_bad_file(tiny_model):
    with _unprivileged() as (prefix, root):
        model = Path(shutil.copy(tiny_model, root / "m.pt"))
        model.chmod(0o644)
        good = _digit(root / "good.png")
        locked = root / "locked"
        locked.mkdir()
        _digit(locked / "a.png")
        locked.chmod(0)
        proc = subprocess.run(
            [*prefix, MNISTCTL_SCRIPT, "predict", "-m", str(model), str(good), str(locked / "a.png"), str(good)],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=root,
        )
    assert proc.returncode == 1, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == [str(good), str(good)]
    assert proc.stderr.splitlines() == [f"Error: {locked}/a.png: permission denied {SKIPPED}"]


def test_recursive_says_which_subdirectories_it_could_not_read(tiny_model):
    with _unprivileged() as (prefix, root):
        model = Path(shutil.copy(tiny_model, root / "m.pt"))
        model.chmod(0o644)
        for sub in ("a", "b", "c"):
            (root / "tree" / sub).mkdir(parents=True)
            _digit(root / "tree" / sub / "one.png")
        (root / "tree" / "b").chmod(0)
        proc = subprocess.run(
            [*prefix, MNISTCTL_SCRIPT, "predict", "-r", "-m", str(model), str(root / "tree")],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=root,
        )
    assert proc.returncode == 1, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == [
        str(root / "tree" / "a" / "one.png"),
        str(root / "tree" / "c" / "one.png"),
    ]
    assert proc.stderr.splitlines() == [
        f"Error: {root}/tree/b: cannot read the directory (permission denied) — its images were skipped"
    ]


@pytest.mark.parametrize(
    ("encoding", "name", "column"),
    [
        ("utf-8:strict", b"not-utf8-\xff.png", "not-utf8-\\xff.png"),
        ("ascii:strict", "é.png".encode(), "\\xc3\\xa9.png"),
    ],
)
def test_a_name_the_output_encoding_cannot_write_is_escaped(tmp_path, tiny_model, encoding, name, column):
    good = _digit(tmp_path / "good.png")
    odd = _digit(os.fsencode(tmp_path) + b"/" + name)
    missing = os.fsencode(tmp_path) + b"/gone-" + name
    for args in ([], ["--json"]):
        env = {"PYTHONIOENCODING": encoding}
        proc = _run(["predict", "-m", tiny_model, *args, good, odd, missing, good], env=env)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stdout.decode("ascii" if encoding.startswith("ascii") else "utf-8").splitlines()
        assert len(lines) == 3 and "unexpected" not in proc.stderr.decode(errors="replace")
        if not args:
            assert [line.split("\t")[0] for line in lines] == [str(good), f"{tmp_path}/{column}", str(good)]
        else:
            assert [json.loads(line)["digit"] for line in lines] == [1, 1, 1]
        errors = proc.stderr.decode("ascii" if encoding.startswith("ascii") else "utf-8").splitlines()
        assert len(errors) == 1 and errors[0].startswith(f"Error: {tmp_path}/gone-{column}: no such file")


# --------------------------------------------------------------------------------------------- 4. misleading lines


@pytest.mark.parametrize("options", [[], ["-0"]])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "PPM"])
def test_an_image_on_stdin_is_called_an_image(tmp_path, tiny_model, options, fmt):
    """`mnistctl predict - < photo.png`: the content where its path was meant. Not "pass --null"."""
    photo = tmp_path / "photo"
    Image.open(_digit(tmp_path / "one.png")).convert("RGB").save(photo, format=fmt)
    proc = _run(["predict", "-m", tiny_model, *options, "-"], input=photo.read_bytes())
    assert proc.returncode == 2
    assert proc.stdout == b""
    errors = proc.stderr.decode().splitlines()
    assert errors == [
        f"Error: stdin holds a {fmt} image, not a list of paths — pass the file's path, not its content: "
        "`mnistctl predict FILE` (`-` reads image paths from stdin)"
    ]


def test_a_list_whose_first_name_looks_like_an_image_header_is_a_list(tmp_path, tiny_model):
    """A name can be anything, even a valid PBM header: a list whose first entry exists is a list."""
    name = "P1 1 1"
    assert Image.open(io.BytesIO(name.encode() + b"\n")).format == "PPM"  # Pillow takes the list for an image
    _digit(tmp_path / name)
    result = runner.invoke(app, ["predict", "-m", str(tiny_model), "-"], input=f"{tmp_path / name}\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.split("\t")[0] == str(tmp_path / name)


def _deep(mode: str, paper: float, ink: float, corner: float | None = None) -> Image.Image:
    image = Image.new(mode, (60, 80), paper)
    ImageDraw.Draw(image).rectangle((27, 10, 33, 70), fill=ink)
    if corner is not None:
        image.putpixel((0, 0), corner)
    return image


@pytest.mark.parametrize(
    ("deep", "suffix", "reference"),
    [
        (_deep("I;16", 3500, 300), "png", _deep("L", 218, 19)),  # 12-bit values: 3500 is 3500/4095 of white
        (_deep("I;16", 230, 20), "png", _deep("L", 230, 20)),  # 8-bit values in a 16-bit file
        (_deep("F", -1.0, 0.0), "tif", _deep("L", 0, 255)),  # negative floats: stretched
        (_deep("F", 1.0, 0.0, float("inf")), "tif", _deep("L", 255, 0)),  # +inf: as white as the brightest value
        (_deep("F", 1.0, 0.0, float("nan")), "tif", _deep("L", 255, 0, 0)),  # NaN: as dark as the darkest value
    ],
    ids=["16-bit holding 12-bit", "16-bit holding 8-bit", "float negative", "float inf", "float nan"],
)
def test_deep_images_are_read_by_the_range_of_their_values(tmp_path, tiny_model, deep, suffix, reference):
    """Read as the same drawing in 8 bits: the same digit, with the same confidence (not "blank")."""
    deep.save(tmp_path / f"deep.{suffix}")
    reference.save(tmp_path / "ref.png")
    result = runner.invoke(
        app, ["predict", "-m", str(tiny_model), str(tmp_path / f"deep.{suffix}"), str(tmp_path / "ref.png")]
    )
    assert result.exit_code == 0, result.output
    got, expected = (line.split("\t")[1:] for line in result.stdout.splitlines())
    assert got == expected


def test_top_k_with_multi_is_applied_in_json_and_refused_without(tmp_path, tiny_model):
    number = Image.new("L", (200, 80), 255)
    for x in (30, 100, 170):
        ImageDraw.Draw(number).line([(x, 10), (x, 70)], fill=0, width=6)
    number.save(tmp_path / "111.png")
    args = ["predict", "-m", str(tiny_model), "--multi", "--top-k", "2", str(tmp_path / "111.png")]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "Error: --top-k with --multi is shown only in --json — add --json, or leave out --top-k"
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    digits = json.loads(result.stdout)["digits"]
    assert len(digits) == 3
    for d in digits:
        ranked = sorted(d["probabilities"], reverse=True)  # (by value: runners-up may tie once rounded)
        shown = ranked[1:3] if d["digit"] is not None else ranked[:2]  # a declined digit's start with the top one
        assert [r["probability"] for r in d["top_k"]] == shown
        assert all(d["probabilities"][r["digit"]] == r["probability"] for r in d["top_k"])
