"""Streaming many images through a reader (`Reader.read_digits`) and finding the files (`expand_inputs`).

The network is a tiny one with random weights: the digits are arbitrary, the plumbing is what is tested.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import black_on_white, mnist_like, reader_of, save
from PIL import Image

from mnistctl.errors import UsageError
from mnistctl.imaging import digit_input
from mnistctl.inputs import InputProblem, expand_inputs, read_path_list
from mnistctl.results import DigitReading, ReadFailure


def _mixed_files(tmp_path: Path, n: int = 40) -> list[str]:
    paths = []
    for i in range(n):
        box = (10 + i % 7, 10 + i % 5, 40 + i % 11, 50 + i % 3)
        paths.append(save(black_on_white((64, 64), box=box), tmp_path / f"{i:03d}.png"))
    (tmp_path / "bad.png").write_bytes(b"<html></html>")
    paths.insert(n // 2, str(tmp_path / "bad.png"))
    paths.append(str(tmp_path / "missing.png"))
    return paths


class SlowImage(io.RawIOBase):
    """An image that takes ``seconds`` to read (a big photo, a slow disk), and says when it was read."""

    def __init__(self, data: bytes, seconds: float, log: list[int], index: int) -> None:
        self.data, self.seconds, self.log, self.index = io.BytesIO(data), seconds, log, index

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001
        if self.data.tell() == 0:
            time.sleep(self.seconds)
            self.log.append(self.index)
        return self.data.readinto(b)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("workers", [0, 2])
def test_read_digits_keeps_order_and_reports_bad_files(tmp_path: Path, tiny_net: torch.nn.Module, workers: int) -> None:
    paths = _mixed_files(tmp_path)
    results = list(reader_of(tiny_net).read_digits(paths, batch_size=8, workers=workers))
    assert len(results) == len(paths)
    bad = [(path, r) for path, r in zip(paths, results, strict=True) if isinstance(r, ReadFailure)]
    assert [path for path, _ in bad] == [str(tmp_path / "bad.png"), str(tmp_path / "missing.png")]
    assert bad[0][1].error.startswith("not an image file") and bad[1][1].error == "no such file"
    for path, r in zip(paths, results, strict=True):
        if isinstance(r, ReadFailure):
            continue
        assert isinstance(r, DigitReading) and 0 <= r.digit <= 9
        assert len(r.probabilities) == 10 and abs(sum(r.probabilities) - 1) < 1e-5
        assert r.confidence == pytest.approx(max(r.probabilities))
        assert r.probabilities.index(max(r.probabilities)) == r.digit
        assert r.pixels.shape == (28, 28) and r.pixels.dtype == np.uint8
        assert np.array_equal(r.pixels, digit_input(path))


def test_read_digits_matches_a_plain_forward_pass(tmp_path: Path, tiny_net: torch.nn.Module) -> None:
    paths = [save(black_on_white((50, 50), box=(5 + i, 8, 30 + i, 45)), tmp_path / f"{i}.png") for i in range(5)]
    norm = {"mean": 0.1307, "std": 0.3081}
    results = list(reader_of(tiny_net, norm).read_digits(paths, workers=1))
    x = torch.from_numpy(np.stack([digit_input(p) for p in paths])).float().unsqueeze(1)
    with torch.no_grad():
        expected = tiny_net.eval()((x / 255 - 0.1307) / 0.3081).softmax(1)
    got = torch.tensor([r.probabilities for r in results])
    assert torch.allclose(got, expected, atol=1e-5)


def test_read_digits_streams_and_can_stop_early(tiny_net: torch.nn.Module) -> None:
    data = _png(mnist_like())
    taken: list[int] = []
    read: list[int] = []

    def images():
        for i in range(10_000):
            taken.append(i)
            yield SlowImage(data, 0.005, read, i)  # a chunk of 32 takes 0.16 s

    stream = reader_of(tiny_net).read_digits(images(), batch_size=512, workers=2)
    first = next(stream)
    assert isinstance(first, DigitReading)
    # The first result came long before the last image was read: only a bounded number had been taken.
    assert len(taken) <= 2000
    stream.close()  # stopping early neither hangs nor goes on with the chunks in hand
    at_close = len(read)
    time.sleep(0.4)  # time enough for both threads to finish their chunks, had they gone on
    assert len(read) - at_close <= 2  # each thread finished the image in hand, then stopped
    assert list(reader_of(tiny_net).read_digits([])) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_read_digits_does_not_hold_results_for_a_slow_chunk(tiny_net: torch.nn.Module, workers: int) -> None:
    """Images that decode slowly (big photos): what is ready goes through the network while the threads decode
    the rest, in order, rather than waiting for a full batch."""
    batches: list[int] = []

    class Recording(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batches.append(len(x))
            return tiny_net(x)

    data = _png(mnist_like())
    read: list[int] = []
    images = [SlowImage(data, 0.02, read, i) for i in range(96)]  # three chunks of 32, each 0.64 s to read
    results = list(reader_of(Recording()).read_digits(images, batch_size=512, workers=workers))
    assert len(results) == 96 and all(isinstance(r, DigitReading) for r in results)
    assert sum(batches) == 96
    assert len(batches) >= 2  # not one batch of 96 at the end


def test_read_digits_leaves_the_warning_filters_as_they_were(tmp_path: Path, tiny_net: torch.nn.Module) -> None:
    import warnings

    before = list(warnings.filters)
    list(reader_of(tiny_net).read_digits(_mixed_files(tmp_path, 100), batch_size=16, workers=4))
    assert list(warnings.filters) == before


def test_read_digits_without_preprocessing(tmp_path: Path, tiny_net: torch.nn.Module) -> None:
    path = save(black_on_white((90, 60)), tmp_path / "d.png")
    (result,) = reader_of(tiny_net).read_digits([path], preprocess=False)
    assert np.array_equal(result.pixels, digit_input(path, preprocess_image=False))


def test_read_digits_rejects_an_unknown_invert(tiny_net: torch.nn.Module) -> None:
    with pytest.raises(UsageError, match="invert"):
        reader_of(tiny_net).read_digits(["a.png"], invert="maybe")


# --------------------------------------------------------------------------------------------- inputs


def test_expand_inputs(tmp_path: Path) -> None:
    d = tmp_path / "scans"
    (d / "sub").mkdir(parents=True)
    for name in ("b.PNG", "a.jpg", "c.txt", ".hidden.png", "sub/z.gif", "sub/y.tiff"):
        (d / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "only-dirs" / "inner").mkdir(parents=True)
    (tmp_path / "only-dirs" / "inner" / "x.png").write_bytes(b"x")
    (tmp_path / "odd.name").write_bytes(b"x")

    paths, problems = expand_inputs([str(d)], recursive=False)
    assert paths == [str(d / "a.jpg"), str(d / "b.PNG")] and problems == []
    paths, _ = expand_inputs([str(d)], recursive=True)
    assert paths == [str(d / "a.jpg"), str(d / "b.PNG"), str(d / "sub" / "y.tiff"), str(d / "sub" / "z.gif")]

    inputs = [str(tmp_path / "odd.name"), str(tmp_path / "nope.png"), str(tmp_path / "empty"), str(d / "c.txt")]
    paths, problems = expand_inputs(inputs, recursive=False)
    assert paths == [str(tmp_path / "odd.name"), str(d / "c.txt")]  # files are taken whatever their suffix
    assert problems == [
        InputProblem(str(tmp_path / "nope.png"), "no such file or directory", "check the path"),
        InputProblem(str(tmp_path / "empty"), "no images in the directory", "check the path"),
    ]

    paths, problems = expand_inputs([str(tmp_path / "only-dirs")], recursive=False)
    assert paths == [] and "--recursive" in problems[0].hint
    assert expand_inputs([str(tmp_path / "only-dirs")], recursive=True)[0] == [
        str(tmp_path / "only-dirs" / "inner" / "x.png")
    ]


def test_a_directory_scan_takes_image_files_by_suffix_in_any_case(tmp_path: Path) -> None:
    """What a scan of a folder of phone photos and scans picks up: every usual image suffix, upper or lower
    case, and files without a suffix whose content is an image (``scan0001``); not notes, not other suffixes,
    not a suffixless file that is not an image, not hidden files (macOS ``._x.png`` resource forks)."""
    images = ["a.PNG", "b.jpeg", "c.JPG", "d.Tiff", "e.webp", "f.bmp", "g.gif", "h.pgm", "i.ppm", "j.pnm", "k.tif"]
    images.append("scan0001")
    others = ["notes.txt", "photo.png.bak", ".hidden.png", "._a.PNG", "archive.zip"]
    for name in images + others:
        Image.new("L", (8, 8), 255).save(tmp_path / name, format="PNG")
    (tmp_path / "README").write_text("a suffixless file that is not an image\n")
    paths, problems = expand_inputs([str(tmp_path)], recursive=False)
    assert paths == [str(tmp_path / name) for name in images] and problems == []


# --------------------------------------------------------------------------------------------- paths on stdin


def test_read_path_list_one_a_line() -> None:
    stream = io.BytesIO(b"a.png\nscans/b c.png\r\n\n\r\n  spaced.png  \nlast.png")
    assert read_path_list(stream, null=False) == ["a.png", "scans/b c.png", "  spaced.png  ", "last.png"]
    assert read_path_list(io.BytesIO(b""), null=False) == []


def test_read_path_list_nul_separated_keeps_newlines_in_names() -> None:
    stream = io.BytesIO(b"a.png\0odd\nname.png\0with\r\n.png\0\0")  # as `find -print0` writes them
    assert read_path_list(stream, null=True) == ["a.png", "odd\nname.png", "with\r\n.png"]


def test_read_path_list_refuses_a_nul_without_null() -> None:
    with pytest.raises(UsageError) as info:
        read_path_list(io.BytesIO(b"a.png\0b.png\0"), null=False)
    assert info.value.exit_code == 2
    assert "NUL" in info.value.message and "--null" in info.value.hint and "-0" in info.value.hint
    assert "\n" not in str(info.value)


def test_read_path_list_reads_any_name_the_filesystem_holds(tmp_path: Path) -> None:
    name = os.fsencode("ünïcode.png") + b"\xff-not-utf8.png"  # bytes no encoding would decode
    paths = read_path_list(io.BytesIO(name + b"\n"), null=False)
    assert paths == [os.fsdecode(name)] and os.fsencode(paths[0]) == name
