"""The public Python API (docs/api.md): every input type, the same answer for the same picture in any form,
results and their JSON, streaming many images, errors, and the page's own snippets run as written."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import mnistctl
from mnistctl.results import DigitReading, NumberReading, ReadFailure

REPO = Path(__file__).resolve().parents[1]


def draw_seven(path: Path | None = None, size: tuple[int, int] = (100, 120)) -> Image.Image:
    im = Image.new("L", size, 255)
    ImageDraw.Draw(im).line([(20, 20), (80, 20), (45, 105)], fill=0, width=9)
    if path is not None:
        im.save(path)
    return im


def draw_42(path: Path) -> None:
    im = Image.new("L", (220, 120), 255)
    d = ImageDraw.Draw(im)
    d.line([(60, 15), (20, 75), (85, 75)], fill=0, width=9)
    d.line([(70, 40), (70, 105)], fill=0, width=9)
    d.arc([(120, 15), (190, 70)], 180, 390, fill=0, width=9)
    d.line([(183, 55), (125, 105), (195, 105)], fill=0, width=9)
    im.save(path)


@pytest.fixture(scope="module")
def reader() -> mnistctl.Reader:
    return mnistctl.load_reader(device="cpu")


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    draw_seven(tmp_path / "digit.png")
    draw_42(tmp_path / "number.png")
    return tmp_path


def test_import_is_cheap_and_names_are_public() -> None:
    code = (
        "import sys, mnistctl; assert 'torch' not in sys.modules and 'PIL' not in sys.modules; "
        "mnistctl.DigitReading; mnistctl.ImageError; assert 'torch' not in sys.modules; "
        "print(sorted(n for n in dir(mnistctl) if not n.startswith('_')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "load_reader" in out and "ReadFailure" in out


def test_every_input_type_gives_the_same_answer(reader: mnistctl.Reader, pictures: Path) -> None:
    path = pictures / "digit.png"
    image = Image.open(path)
    gray = np.asarray(image)
    rgb = np.asarray(image.convert("RGB"))
    rgba = np.asarray(image.convert("RGBA"))

    class Unseekable(io.RawIOBase):  # a pipe or a socket's file: read() only
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:  # noqa: ANN001
            return self.data.readinto(b)

    inputs = {
        "str path": str(path),
        "Path": path,
        "bytes": path.read_bytes(),
        "bytearray": bytearray(path.read_bytes()),
        "file object": open(path, "rb"),  # noqa: SIM115 - closed below
        "unseekable file": Unseekable(path.read_bytes()),
        "PIL gray": image,
        "PIL RGB": image.convert("RGB"),
        "array H×W uint8": gray,
        "array H×W×1": gray[:, :, None],
        "array H×W×3": rgb,
        "array H×W×4": rgba,
        "array float": gray / 255.0,
        "array float32": (gray / 255.0).astype(np.float32),
        "tensor H×W": torch.from_numpy(gray.copy()),
        "tensor C×H×W float": torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255,
    }
    results = {name: reader.read_digit(x) for name, x in inputs.items()}
    inputs["file object"].close()
    first = results["str path"]
    assert first.digit == 7 and first.confidence > 0.9
    for name, result in results.items():
        assert result.digit == first.digit, name
        assert result.probabilities == first.probabilities, name
        assert np.array_equal(result.pixels, first.pixels), name
    assert image.mode == "L" and image.size == (100, 120)  # the caller's image is not changed


def test_exif_orientation_is_applied_to_a_pil_image_as_to_a_file(reader: mnistctl.Reader, tmp_path: Path) -> None:
    seven = draw_seven()
    turned = seven.rotate(90, expand=True)  # stored on its side, with EXIF saying "rotate 270 to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    turned.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    from_file = reader.read_digit(tmp_path / "turned.jpg")
    from_pil = reader.read_digit(Image.open(tmp_path / "turned.jpg"))
    assert from_file.digit == from_pil.digit == 7
    assert np.array_equal(from_file.pixels, from_pil.pixels)


def test_results_and_their_json(reader: mnistctl.Reader, pictures: Path) -> None:
    r = reader.read_digit(pictures / "digit.png")
    assert isinstance(r, DigitReading)
    assert len(r.probabilities) == 10 and abs(sum(r.probabilities) + (r.not_a_digit or 0) - 1) < 1e-4
    assert r.confidence == max(r.probabilities) == r.probabilities[r.digit] and r.reason is None
    assert r.pixels.shape == (28, 28) and r.pixels.dtype == np.uint8
    assert r.box is None
    d = r.to_dict(top_k=2)
    has_class = ["not_a_digit"] if reader.meta.classes[-1] == "not a digit" else []  # the bundled model has it
    assert list(d) == ["digit", "confidence", "probabilities", *has_class, "top_k"]
    assert [t["digit"] for t in d["top_k"]] == r.runners_up(2) and r.digit not in r.runners_up(2)
    json.dumps(d)  # plain JSON types

    n = reader.read_number(pictures / "number.png")
    assert isinstance(n, NumberReading)
    assert n.text == "42" and n.confidence == min(d.confidence for d in n.digits)
    boxes = [d.box for d in n.digits]
    assert boxes[0][2] <= boxes[1][0]  # left to right, apart
    nd = n.to_dict()
    assert nd["number"] == "42" and [x["box"] for x in nd["digits"]] == [list(b) for b in boxes]


def test_cli_json_is_the_path_and_to_dict(reader: mnistctl.Reader, pictures: Path) -> None:
    """`predict --json` prints exactly {"path": ...} followed by the result's to_dict()."""
    for args, result in (
        (["--top-k", "2"], reader.read_digit(pictures / "digit.png").to_dict(top_k=2)),
        (["--multi"], reader.read_number(pictures / "number.png").to_dict()),
    ):
        name = "number.png" if "--multi" in args else "digit.png"
        out = subprocess.run(
            [sys.executable, "-m", "mnistctl", "predict", "--json", "--device", "cpu", *args, name],
            cwd=pictures, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert json.loads(out) == {"path": name, **result}


def test_read_digits_streams_in_order_with_failures_in_place(reader: mnistctl.Reader, pictures: Path) -> None:
    digit = pictures / "digit.png"
    (pictures / "text.png").write_text("hello")
    images = [digit, pictures / "missing.png", digit.read_bytes(), pictures / "text.png", 42, digit]
    for workers in (0, 2):
        results = list(reader.read_digits(iter(images), batch_size=2, workers=workers))
        assert len(results) == len(images)
        assert [type(r).__name__ for r in results] == [
            "DigitReading", "ReadFailure", "DigitReading", "ReadFailure", "ReadFailure", "DigitReading",
        ]  # fmt: skip
        assert results[1].error == "no such file"
        assert results[3].error == "not an image file (it is text)"
        assert "TypeError" in results[4].error
        assert results[0].digit == results[2].digit == results[5].digit == 7
        assert np.array_equal(results[0].pixels, results[2].pixels)


def test_read_digits_takes_an_endless_generator_lazily(reader: mnistctl.Reader, pictures: Path) -> None:
    taken = 0

    def endless():
        nonlocal taken
        while True:
            taken += 1
            yield pictures / "digit.png"

    stream = reader.read_digits(endless(), batch_size=8, workers=1)
    first = [next(stream) for _ in range(3)]
    stream.close()
    assert all(r.digit == 7 for r in first)
    assert taken < 5000  # bounded read-ahead: the generator is not drained


def test_read_numbers(reader: mnistctl.Reader, pictures: Path) -> None:
    results = list(reader.read_numbers([pictures / "number.png", pictures / "digit.png", b""], workers=0))
    assert results[0].text == "42" and results[1].text == "7"
    assert isinstance(results[2], ReadFailure) and results[2].error == "empty file (0 bytes)"


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (b"not an image", mnistctl.ImageError),
        (np.zeros((40, 40), np.uint8), mnistctl.ImageError),  # blank
        (np.full((40, 40), 2.0), mnistctl.ImageError),  # floats past white
        (np.zeros((4, 40, 40, 3), np.uint8), mnistctl.ImageError),  # a batch, not an image
        (12, TypeError),
        (io.StringIO("digit.png"), TypeError),
    ],
)
def test_errors_are_typed_and_nothing_prints(reader, image, error, capsys) -> None:  # noqa: ANN001
    with pytest.raises(error) as caught:
        reader.read_digit(image)
    assert "\n" not in str(caught.value)
    assert capsys.readouterr() == ("", "")


def test_options_are_keyword_arguments(reader: mnistctl.Reader, pictures: Path) -> None:
    path = pictures / "digit.png"
    with pytest.raises(mnistctl.ImageError, match="--invert no|the ink is dark"):
        reader.read_digit(path, invert="no")
    with pytest.raises(mnistctl.UsageError):
        reader.read_digit(path, invert="sideways")
    plain = reader.read_digit(path, preprocess=False)
    assert plain.pixels.shape == (28, 28) and not np.array_equal(plain.pixels, reader.read_digit(path).pixels)
    # Stroke normalisation changes a thin-stroked digit's input, and only when asked to.
    thin = Image.new("L", (200, 240), 255)
    ImageDraw.Draw(thin).line([(40, 40), (160, 40), (90, 210)], fill=0, width=2)
    assert not np.array_equal(reader.read_digit(thin).pixels, reader.read_digit(thin, normalise_strokes=False).pixels)


def test_meta(reader: mnistctl.Reader) -> None:
    meta = reader.meta
    assert meta.arch in ("seed", "compact", "wide")
    assert 0.9 < meta.test_accuracy <= 1
    assert set(meta.normalization) == {"mean", "std"}
    assert meta.device == "cpu" and meta.precision in ("fp32", "bf16")
    assert json.loads(json.dumps(meta.to_dict()))["arch"] == meta.arch


def test_load_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(mnistctl.MnistctlError, match="missing.pt"):
        mnistctl.load_reader(tmp_path / "missing.pt")
    with pytest.raises(mnistctl.UsageError, match="precision"):
        mnistctl.load_reader(precision="fp8")


def test_the_api_page_runs_as_written(pictures: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    """Every ```python block of docs/api.md, in order, in one namespace, in a directory with its images."""
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(pictures)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)  # noqa: S102 - our own documentation
    printed = capsys.readouterr().out
    assert printed.startswith("7 ")
    assert "missing.png failed: no such file" in printed
    assert "not an image file (it is text)" in printed
