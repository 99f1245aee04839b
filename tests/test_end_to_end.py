"""End to end on the real MNIST files from the local mirror (../shared/mnist or $MNISTCTL_MIRROR)."""

from __future__ import annotations

import subprocess

import pytest
from helpers import MNISTCTL_SCRIPT, SHARED_MNIST

from mnistctl.data.mnist import MNIST_FILES, check_files, load_split

pytestmark = pytest.mark.skipif(
    not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason=f"the local MNIST mirror is absent ({SHARED_MNIST}); set MNISTCTL_MIRROR to a directory with the files",
)


def test_download_from_local_mirror_then_read_with_ours_and_torchvision(tmp_path, monkeypatch):
    monkeypatch.setenv("MNISTCTL_VERIFY_DATA", "1")  # the real files: checked against MNIST's checksums
    data_dir = tmp_path / "data"
    cmd = [MNISTCTL_SCRIPT, "download", "--mirror", str(SHARED_MNIST), "--data-dir", str(data_dir), "--json"]
    # Two at once into the same directory: neither may corrupt the other.
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert [f.state for f in check_files(data_dir)] == ["present"] * 4
    assert sorted(p.name for p in (data_dir / "MNIST" / "raw").iterdir() if not p.name.startswith(".")) == sorted(
        [f.name for f in MNIST_FILES] + [f.gz_name for f in MNIST_FILES]
    )

    images, labels = load_split(data_dir, "train")
    assert tuple(images.shape) == (60000, 28, 28) and len(labels) == 60000
    test_images, test_labels = load_split(data_dir, "test")
    assert len(test_images) == 10000

    import torch
    import torchvision

    tv = torchvision.datasets.MNIST(str(data_dir), train=True, download=False)
    assert torch.equal(tv.data, images) and torch.equal(tv.targets, labels)

    again = subprocess.run(
        [MNISTCTL_SCRIPT, "download", "--mirror", str(tmp_path / "nowhere"), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "already present" in again.stderr
