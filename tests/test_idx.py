"""The IDX reader: valid files load; truncated, foreign or mismatched files give a clear error."""

from __future__ import annotations

import gzip

import pytest
import torch
from helpers import idx_bytes, make_fake_mnist

from mnistctl.data.mnist import load_split, raw_dir, read_idx
from mnistctl.errors import MnistctlError


def test_reads_plain_and_gzipped_files(tmp_path):
    payload = bytes(range(24))
    (tmp_path / "a").write_bytes(idx_bytes((2, 3, 4), payload))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes((2, 3, 4), payload)))
    for name in ("a", "a.gz"):
        t = read_idx(tmp_path / name)
        assert t.dtype == torch.uint8 and tuple(t.shape) == (2, 3, 4)
        assert t.flatten().tolist() == list(range(24))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "wrong magic"),
        (b"PK\x03\x04 a zip file, not IDX", "wrong magic"),
        (b"\x00\x00\x0d\x01" + b"\x00" * 8, "wrong magic"),  # float IDX: not MNIST's type
        (b"\x00\x00\x08\x03\x00\x00", "header is incomplete"),
        (idx_bytes((10, 28, 28), b"\x00" * 100), "truncated"),
        (idx_bytes((2,), b"\x01\x02\x03"), "longer than its header says"),
    ],
)
def test_bad_files_are_named_in_the_error(tmp_path, content, message):
    path = tmp_path / "bad-file"
    path.write_bytes(content)
    with pytest.raises(MnistctlError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "mnistctl download --force" in str(info.value)


def test_damaged_gzip_and_missing_file(tmp_path):
    (tmp_path / "x.gz").write_bytes(gzip.compress(idx_bytes((4,), b"\x01\x02\x03\x04"))[:-6])
    with pytest.raises(MnistctlError, match="damaged gzip"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(MnistctlError, match="does not exist"):
        read_idx(tmp_path / "missing")


def _install(tmp_path, fake):
    rd = raw_dir(tmp_path / "d")
    rd.mkdir(parents=True)
    for name, content in fake.raw.items():
        (rd / name).write_bytes(content)
    return rd


def test_load_split_returns_images_and_labels(tmp_path):
    fake = make_fake_mnist(tmp_path / "m", n_train=12, n_test=5)
    _install(tmp_path, fake)
    images, labels = load_split(tmp_path / "d", "train")
    assert tuple(images.shape) == (12, 28, 28) and labels.dtype == torch.int64 and len(labels) == 12
    images, labels = load_split(tmp_path / "d", "test")
    assert len(images) == 5 == len(labels)


def test_swapped_images_and_labels_are_detected(tmp_path):
    fake = make_fake_mnist(tmp_path / "m", n_train=12, n_test=5)
    rd = _install(tmp_path, fake)
    (rd / "train-images-idx3-ubyte").write_bytes(fake.raw["train-labels-idx1-ubyte"])
    (rd / "train-labels-idx1-ubyte").write_bytes(fake.raw["train-images-idx3-ubyte"])
    with pytest.raises(MnistctlError, match="does not hold 28x28 images"):
        load_split(tmp_path / "d", "train")


def test_count_mismatch_is_detected(tmp_path):
    fake = make_fake_mnist(tmp_path / "m", n_train=12, n_test=5)
    rd = _install(tmp_path, fake)
    (rd / "t10k-labels-idx1-ubyte").write_bytes(fake.raw["train-labels-idx1-ubyte"])
    with pytest.raises(MnistctlError, match="has 5 images but .* has 12 labels"):
        load_split(tmp_path / "d", "test")
