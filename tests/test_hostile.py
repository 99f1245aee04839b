"""Hostile inputs through the real CLI: every one fails cleanly.

For each case: the right non-zero exit code (1 for failed work, 2 for usage), exactly one `Error:` line on
stderr that names the input, no traceback, nothing on stdout, and no file created or changed in the
working tree. The corpus is generated here, not checked in.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import idx_bytes, make_fake_mnist, write_tiny_mnist
from typer.testing import CliRunner

import mnistctl.data.mnist as data_mod
from mnistctl.cli import app
from mnistctl.models import CompactNet

runner = CliRunner()


@dataclass
class Case:
    name: str
    setup: Callable[..., list[str]]  # (dir, monkeypatch) → CLI args, after building the corpus entry under dir
    code: int
    names: str  # a string the error line must contain: the input it names
    outputs: str | None = None  # where the command may legitimately write (complete, verified files only)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


# --------------------------------------------------------------------------------------------- data files


def _data(root: Path, mutate: Callable[[Path], None]) -> Path:
    data = write_tiny_mnist(root / "data", n_train=64, n_test=32)
    mutate(data / "MNIST" / "raw")
    return data


def data_case(mutate: Callable[[Path], None], command: str = "eval") -> Callable[..., list[str]]:
    def setup(root: Path, mp: pytest.MonkeyPatch) -> list[str]:
        data = _data(root, mutate)
        if command == "eval":
            torch.save(
                {
                    "format": "mnistctl-checkpoint",
                    "version": 1,
                    "arch": "compact",
                    "arch_config": {},
                    "state_dict": CompactNet().state_dict(),
                    "normalization": {"mean": 0.13, "std": 0.31},
                },
                root / "model.pt",
            )
            return ["eval", "-m", str(root / "model.pt"), "--data-dir", str(data)]
        return ["train", "--data-dir", str(data), "-o", str(root / "out.pt"), "--epochs", "1"]

    return setup


def _truncate(raw: Path) -> None:
    f = raw / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:1000])


def _wrong_magic(raw: Path) -> None:
    f = raw / "t10k-images-idx3-ubyte"
    f.write_bytes(b"\x08\x03\x00\x00" + f.read_bytes()[4:])


def _wrong_count(raw: Path) -> None:
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes((31,), bytes(31)))


def _swap(raw: Path) -> None:
    a, b = raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"
    images, labels = a.read_bytes(), b.read_bytes()
    a.write_bytes(labels)
    b.write_bytes(images)


def _missing(raw: Path) -> None:
    (raw / "t10k-labels-idx1-ubyte").unlink()


def mirror_case(kind: str) -> Callable[..., list[str]]:
    def setup(root: Path, mp: pytest.MonkeyPatch) -> list[str]:
        fake = make_fake_mnist(root / "mirror")
        mp.setattr(data_mod, "MNIST_FILES", fake.specs)
        target = root / "mirror" / "t10k-labels-idx1-ubyte.gz"
        if kind == "not-gzip":
            target.write_bytes(b"<html>Not Found</html>")
        else:
            target.write_bytes(gzip.compress(fake.raw["t10k-labels-idx1-ubyte"][:-1] + b"\x07"))
        return ["download", "--mirror", str(root / "mirror"), "--data-dir", str(root / "data")]

    return setup


# --------------------------------------------------------------------------------------------- checkpoints


def ckpt_case(write: Callable[[Path], None]) -> Callable[..., list[str]]:
    def setup(root: Path, mp: pytest.MonkeyPatch) -> list[str]:
        data = write_tiny_mnist(root / "data", n_train=64, n_test=32)
        path = root / "bad model.pt"
        write(path)
        return ["eval", "-m", str(path), "--data-dir", str(data)]

    return setup


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _truncated_ckpt(path: Path) -> None:
    torch.save({"format": "mnistctl-checkpoint", "state_dict": CompactNet().state_dict()}, path)
    path.write_bytes(path.read_bytes()[:3000])


def _wrong_shape(path: Path) -> None:
    state = CompactNet().state_dict()
    state["classifier.weight"] = torch.zeros(10, 7)
    torch.save(
        {
            "format": "mnistctl-checkpoint",
            "version": 1,
            "arch": "compact",
            "arch_config": {},
            "state_dict": state,
            "normalization": {"mean": 0.0, "std": 1.0},
        },
        path,
    )


# --------------------------------------------------------------------------------------------- options


def opts(*args: str) -> Callable[..., list[str]]:
    def setup(root: Path, mp: pytest.MonkeyPatch) -> list[str]:
        write_tiny_mnist(root / "data", n_train=64, n_test=32)
        return [a.replace("{root}", str(root)) for a in args]

    return setup


CASES = [
    Case(
        "data: a file missing (no mirror reachable)",
        data_case(_missing),
        1,
        "t10k-labels-idx1-ubyte",
        outputs="data/MNIST/raw",
    ),
    Case("data: truncated", data_case(_truncate), 1, "t10k-images-idx3-ubyte"),
    Case("data: wrong magic", data_case(_wrong_magic), 1, "t10k-images-idx3-ubyte"),
    Case("data: wrong count", data_case(_wrong_count), 1, "t10k-labels-idx1-ubyte"),
    Case("data: images and labels swapped", data_case(_swap), 1, "t10k-images-idx3-ubyte"),
    Case("data: truncated, for train", data_case(_truncate, "train"), 1, "t10k-images-idx3-ubyte"),
    Case("download: .gz that is not gzip", mirror_case("not-gzip"), 1, "t10k-labels-idx1-ubyte", outputs="data"),
    Case("download: checksum mismatch", mirror_case("checksum"), 1, "t10k-labels-idx1-ubyte", outputs="data"),
    Case("checkpoint: empty", ckpt_case(lambda p: p.write_bytes(b"")), 1, "bad model.pt"),
    Case("checkpoint: truncated", ckpt_case(_truncated_ckpt), 1, "bad model.pt"),
    Case("checkpoint: a JSON file", ckpt_case(lambda p: p.write_text('{"epoch": 3}')), 1, "bad model.pt"),
    Case(
        "checkpoint: state_dict of another network",
        ckpt_case(lambda p: torch.save(torch.nn.Linear(784, 10).state_dict(), p)),
        1,
        "bad model.pt",
    ),
    Case("checkpoint: wrong shape", ckpt_case(_wrong_shape), 1, "do not fit"),
    Case(
        "checkpoint: pickle that would run code",
        ckpt_case(lambda p: p.write_bytes(pickle.dumps({"state_dict": _Evil()}))),
        1,
        "bad model.pt",
    ),
    Case("checkpoint: missing", ckpt_case(lambda p: None), 1, "bad model.pt"),
    Case("checkpoint: a directory", ckpt_case(lambda p: p.mkdir()), 1, "bad model.pt"),
    Case("option: unknown", opts("train", "--no-such-option"), 2, "--no-such-option"),
    Case("option: --epochs 0", opts("train", "--epochs", "0"), 2, "--epochs"),
    Case("option: --batch-size -1", opts("train", "--batch-size", "-1"), 2, "--batch-size"),
    Case("option: --lr nan", opts("train", "--lr", "nan"), 2, "--lr"),
    Case("option: --lr -1", opts("train", "--lr", "-1"), 2, "--lr"),
    Case("option: --device tpu", opts("train", "--device", "tpu"), 2, "tpu"),
    Case("option: eval --split validation", opts("eval", "--split", "validation"), 2, "validation"),
    Case("option: --threads 0", opts("train", "--threads", "0"), 2, "--threads"),
    Case("option: unknown command", opts("fit"), 2, "fit"),
    Case(
        "output: parent directory does not exist",
        opts("train", "-o", "{root}/no/such/dir/m.pt", "--epochs", "1"),
        1,
        "no/such/dir",
    ),
    Case("output: -o is a directory", opts("train", "-o", "{root}", "--epochs", "1"), 1, "is a directory"),
    Case(
        "data dir: parent does not exist",
        opts("train", "--data-dir", "{root}/no such parent/data", "-o", "{root}/m.pt"),
        1,
        "no such parent",
    ),
    Case(
        "data dir: parent is a file",
        opts("download", "--data-dir", "{root}/data/MNIST/raw/train-images-idx3-ubyte/sub"),
        1,
        "train-images-idx3-ubyte/sub",
    ),
    Case(
        "compare: unknown optimizer",
        opts("compare-optimizers", "--optimizers", "adam,lion"),
        2,
        "lion",
    ),
    Case("compare: malformed --lr", opts("compare-optimizers", "--lr", "adam=fast"), 2, "adam=fast"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_fails_cleanly(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work dir ünïcode"
    work.mkdir()
    monkeypatch.chdir(work)
    args = case.setup(work, monkeypatch)
    before = snapshot(work)
    result = runner.invoke(app, args)
    assert result.exit_code == case.code, result.output
    err_lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in err_lines if "Error" in line]
    assert len(errors) == 1, result.stderr
    assert case.names in errors[0], errors[0]
    assert "Traceback" not in result.output
    assert result.stdout.strip() == ""
    after = snapshot(work)
    changed = sorted(p for p in after if before.get(p) != after[p])
    allowed = [p for p in changed if case.outputs and p.startswith(case.outputs)]
    assert changed == allowed, f"files were created or changed: {changed}"
    for p in allowed:  # only complete outputs: nothing partial, nothing of the input that failed
        assert not p.endswith((".part", ".tmp")) and case.names not in p, p
    assert not (work / "pwned").exists()


def test_read_only_output_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only directory (a read-only mount: even root cannot write there), without needing root or mount:
    creating a file in it fails the way the kernel says so."""
    ro = tmp_path / "ro"
    ro.mkdir()
    data = write_tiny_mnist(tmp_path / "data", n_train=64, n_test=32)
    real_open = os.open

    def read_only_mount(path, flags, *args, **kwargs):  # noqa: ANN001, ANN202 - os.open's own signature
        if Path(path).parent == ro and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_mount)
    result = runner.invoke(app, ["train", "-o", str(ro / "m.pt"), "--data-dir", str(data), "--epochs", "1"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot write") and str(ro / "m.pt") in result.stderr
    assert "Traceback" not in result.output and list(ro.iterdir()) == []


# --------------------------------------------------------------------------------------------- images


def _png(path: Path, mode: str = "L", size=(40, 40), **save) -> None:
    from PIL import Image, ImageDraw

    im = Image.new("L", size, 255)
    ImageDraw.Draw(im).line([(size[0] * 0.3, size[1] * 0.2), (size[0] * 0.6, size[1] * 0.8)], fill=0, width=4)
    im.convert(mode).save(path, **save)


def _bad_image(kind: str, path: Path) -> Path:
    from PIL import Image

    if kind == "0 bytes":
        path.write_bytes(b"")
    elif kind == "HTML":
        path.write_text("<!doctype html><html><body>404</body></html>")
    elif kind == "truncated PNG":
        _png(path, size=(200, 200))
        path.write_bytes(path.read_bytes()[:150])
    elif kind == "truncated JPEG":
        path = path.with_suffix(".jpg")
        _png(path, "RGB", size=(300, 300), quality=90)
        path.write_bytes(path.read_bytes()[:400])
    elif kind == "1x1":
        Image.new("L", (1, 1), 0).save(path)
    elif kind == "20000x20000":
        Image.new("1", (20000, 20000), 1).save(path)
    elif kind == "directory with no images":
        path = path.with_suffix("")
        path.mkdir()
        (path / "notes.txt").write_text("no images here")
    return path


BAD_IMAGES = ["0 bytes", "HTML", "truncated PNG", "truncated JPEG", "1x1", "20000x20000", "directory with no images"]


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_bad_image_among_good_ones(kind: str, tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    work = tmp_path / "scans ünï"
    work.mkdir()
    monkeypatch.chdir(work)
    good = work / "good digit.png"
    _png(good)
    bad = _bad_image(kind, work / "bad file.png")
    before = snapshot(work)
    result = runner.invoke(app, ["predict", "-m", str(tiny_model), str(good), str(bad)])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: ") and str(bad) in errors[0], errors
    assert "Traceback" not in result.output
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(good)]
    assert snapshot(work) == before


@pytest.mark.parametrize("kind", ["16-bit", "CMYK", "palette with transparency", "animated GIF", "RGBA"])
def test_unusual_but_valid_images_are_predicted(kind: str, tmp_path: Path) -> None:
    """Each is read as the same stroke as a plain grayscale PNG of it: the bundled model gives both the same
    reading (a "1") and the same probabilities, up to what JPEG's compression changes."""
    from PIL import Image

    plain = tmp_path / "plain.png"
    _png(plain)
    path = tmp_path / "odd ü.png"
    if kind == "16-bit":
        _png(path)
        Image.open(path).convert("I").point(lambda v: v * 257).convert("I;16").save(path)  # a real 16-bit range
        assert Image.open(path).mode.startswith("I")
    elif kind == "CMYK":
        path = path.with_suffix(".jpg")
        _png(path, "CMYK")
    elif kind == "palette with transparency":
        _png(path, "P", transparency=255)
    elif kind == "animated GIF":
        path = path.with_suffix(".gif")
        frames = []
        for shift in (0, 5):
            f = tmp_path / f"f{shift}.png"
            _png(f, size=(40 + shift, 40))
            frames.append(Image.open(f).convert("P"))
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif kind == "RGBA":
        _png(path, "RGBA")
    result = runner.invoke(app, ["predict", "--json", str(plain), str(path)])
    assert result.exit_code == 0, result.output
    expected, odd = (json.loads(line) for line in result.stdout.splitlines())
    assert odd["path"] == str(path)
    assert expected["digit"] == odd["digit"] == 1
    assert odd["probabilities"] == pytest.approx(expected["probabilities"], abs=0.01)
