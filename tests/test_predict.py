"""Streaming predictions over many files (`predict_paths`) and finding the files (`expand_inputs`).

The network is a tiny one with random weights: the digits are arbitrary, the plumbing is what is tested.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_imaging import black_on_white, mnist_like, save

from mnistctl.errors import UsageError
from mnistctl.imaging import load_digit
from mnistctl.predict import InputProblem, Prediction, expand_inputs, predict_paths, read_path_list, share_cores

NORM = {"mean": 0.0, "std": 1.0}
CPU = torch.device("cpu")


def _mixed_files(tmp_path: Path, n: int = 40) -> list[str]:
    paths = []
    for i in range(n):
        box = (10 + i % 7, 10 + i % 5, 40 + i % 11, 50 + i % 3)
        paths.append(save(black_on_white((64, 64), box=box), tmp_path / f"{i:03d}.png"))
    (tmp_path / "bad.png").write_bytes(b"<html></html>")
    paths.insert(n // 2, str(tmp_path / "bad.png"))
    paths.append(str(tmp_path / "missing.png"))
    return paths


# --------------------------------------------------------------------------------------------- predicting


@pytest.mark.parametrize("workers", [0, 2])
def test_predict_paths_keeps_order_and_reports_bad_files(
    tmp_path: Path, tiny_net: torch.nn.Module, workers: int
) -> None:
    paths = _mixed_files(tmp_path)
    preds = list(predict_paths(paths, tiny_net, NORM, CPU, batch_size=8, workers=workers, keep_pixels=True))
    assert [p.index for p in preds] == list(range(len(paths)))
    assert [p.path for p in preds] == paths
    bad = [p for p in preds if p.error]
    assert [p.path for p in bad] == [str(tmp_path / "bad.png"), str(tmp_path / "missing.png")]
    assert bad[0].error.startswith("not an image file") and bad[1].error == "no such file"
    assert all(p.digit is None and p.probabilities is None for p in bad)
    for p in preds:
        if p.error:
            continue
        assert isinstance(p, Prediction) and 0 <= p.digit <= 9
        assert len(p.probabilities) == 10 and abs(sum(p.probabilities) - 1) < 1e-5
        assert p.confidence == pytest.approx(max(p.probabilities))
        assert p.probabilities.index(max(p.probabilities)) == p.digit
        assert p.pixels.shape == (28, 28) and p.pixels.dtype == np.uint8
        assert np.array_equal(p.pixels, load_digit(p.path))


def test_predict_paths_matches_a_plain_forward_pass(tmp_path: Path, tiny_net: torch.nn.Module) -> None:
    paths = [save(black_on_white((50, 50), box=(5 + i, 8, 30 + i, 45)), tmp_path / f"{i}.png") for i in range(5)]
    norm = {"mean": 0.1307, "std": 0.3081}
    preds = list(predict_paths(paths, tiny_net, norm, CPU, workers=1))
    x = torch.from_numpy(np.stack([load_digit(p) for p in paths])).float().unsqueeze(1)
    with torch.no_grad():
        expected = tiny_net.eval()((x / 255 - 0.1307) / 0.3081).softmax(1)
    got = torch.tensor([p.probabilities for p in preds])
    assert torch.allclose(got, expected, atol=1e-5)
    assert all(p.pixels is None for p in preds)  # only with keep_pixels


def test_predict_paths_streams_and_can_stop_early(
    tmp_path: Path, tiny_net: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnistctl.predict as predict_mod

    loaded: list[str] = []
    lock = threading.Lock()
    digit = mnist_like()

    def slow_load(path: str, **options: object) -> np.ndarray:
        time.sleep(0.005)  # a chunk of 32 takes 0.16 s
        with lock:
            loaded.append(path)
        return digit

    monkeypatch.setattr(predict_mod, "load_digit", slow_load)
    paths = [f"img{i}.png" for i in range(10_000)]
    stream = predict_paths(paths, tiny_net, NORM, CPU, batch_size=512, workers=2)
    first = next(stream)
    assert first.index == 0 and first.error is None
    # The first result came long before the last file was read: at most AHEAD files, and the chunk the caller
    # took, had been handed to the threads.
    assert len(loaded) <= predict_mod.AHEAD + predict_mod.CHUNK
    stream.close()  # stopping early neither hangs nor goes on with the chunks in hand
    at_close = len(loaded)
    time.sleep(0.4)  # time enough for both threads to finish their chunks, had they gone on
    assert len(loaded) - at_close <= 2  # each thread finished the file in hand, then stopped
    assert list(predict_paths([], tiny_net, NORM, CPU)) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_predict_paths_does_not_hold_results_for_a_slow_chunk(
    tiny_net: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Files that decode slowly (big photos): what is ready goes through the network after MAX_WAIT, in order,
    rather than waiting for a full batch."""
    import mnistctl.predict as predict_mod

    batches: list[int] = []

    class Recording(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batches.append(len(x))
            return tiny_net(x)

    def slow_load(path: str, **options: object) -> np.ndarray:
        time.sleep(0.02)  # a chunk of 32 takes 0.64 s, far beyond MAX_WAIT
        return mnist_like()

    monkeypatch.setattr(predict_mod, "load_digit", slow_load)
    monkeypatch.setattr(predict_mod, "MAX_WAIT", 0.01)
    paths = [f"img{i}.png" for i in range(3 * predict_mod.CHUNK)]
    preds = list(predict_paths(paths, Recording(), NORM, CPU, batch_size=512, workers=workers))
    assert [p.index for p in preds] == list(range(len(paths)))
    assert sum(batches) == len(paths)
    assert len(batches) >= 3 - (workers - 1)  # not one batch of 96 at the end: each chunk (or pair) went on its own


def test_predict_paths_leaves_the_warning_filters_as_they_were(tmp_path: Path, tiny_net: torch.nn.Module) -> None:
    import warnings

    before = list(warnings.filters)
    list(predict_paths(_mixed_files(tmp_path, 100), tiny_net, NORM, CPU, batch_size=16, workers=4))
    assert list(warnings.filters) == before


def test_predict_paths_without_preprocessing(tmp_path: Path, tiny_net: torch.nn.Module) -> None:
    path = save(black_on_white((90, 60)), tmp_path / "d.png")
    (pred,) = predict_paths([path], tiny_net, NORM, CPU, preprocess_image=False, keep_pixels=True)
    assert np.array_equal(pred.pixels, load_digit(path, preprocess_image=False))


def test_predict_paths_rejects_an_unknown_invert(tiny_net: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="invert"):
        list(predict_paths(["a.png"], tiny_net, NORM, CPU, invert="maybe"))


def test_decoding_threads_and_torch_threads_share_the_cores() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert share_cores(CPU, None, None) == 2 and torch.get_num_threads() == 2
        torch.set_num_threads(4)
        assert share_cores(CPU, 3, 4) == 3 and torch.get_num_threads() == 4  # --threads wins
        assert share_cores(torch.device("meta"), 1, None) == 1 and torch.get_num_threads() == 4  # not on the CPU
        torch.set_num_threads(1)
        assert share_cores(CPU, None, None) == 1 and torch.get_num_threads() == 1
        assert share_cores(CPU, 0, None) == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


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
