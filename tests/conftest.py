"""Shared fixtures: an isolated home for every test, tiny fake MNIST files, a local HTTP mirror. The plain
helpers behind them, which tests import, are in helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FakeMnist, MirrorServer, make_fake_mnist, write_tiny_mnist

import mnistctl.data.http_fetch as http_fetch
import mnistctl.data.mnist as data_mod
import mnistctl.data.sources as sources
import mnistctl.report.console as console


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's cache, model or mirror settings; never reach the public mirrors. The working
    directory is a fresh one, so that ./digit_model.pt (train's default output) is the test's own."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MNISTCTL_DATA_DIR", str(home / "data"))
    (home / "work").mkdir()
    monkeypatch.chdir(home / "work")
    # COLUMNS/LINES: pytest-xdist's workers set COLUMNS=80; a test that wants a width sets it itself.
    for name in ("MNISTCTL_MODEL", "MNISTCTL_MIRROR", "MNISTCTL_DEVICE", "MNISTCTL_DEBUG", "COLUMNS", "LINES"):
        monkeypatch.delenv(name, raising=False)
    # The tiny synthetic IDX files the tests train on are not MNIST's, so their checksums are not MNIST's: read
    # them as a user reads their own digits in MNIST's format. Tests of the verification itself turn it on.
    monkeypatch.setenv("MNISTCTL_VERIFY_DATA", "0")
    monkeypatch.setattr(sources, "PUBLIC_MIRRORS", ())
    monkeypatch.setattr(http_fetch, "BACKOFF_S", 0.01)
    # Each command run in this process sizes its consoles from its own environment (COLUMNS ...), as a new
    # process would, whatever ran before it.
    monkeypatch.setattr(console, "_consoles", {})
    return home


# --------------------------------------------------------------------------------------------- fake MNIST


@pytest.fixture
def fake_mirror(tmp_path: Path) -> FakeMnist:
    """Fake files in a mirror directory, and their specs for the library's ``files=`` parameter."""
    return make_fake_mnist(tmp_path / "mirror")


@pytest.fixture
def fake_mnist(fake_mirror: FakeMnist, monkeypatch: pytest.MonkeyPatch) -> FakeMnist:
    """Fake files in a mirror directory, expected by the CLI in this process. The command line deliberately has
    no option that changes which checksums it trusts, so a CLI test can only make it expect them this way."""
    monkeypatch.setattr(data_mod, "MNIST_FILES", fake_mirror.specs)
    return fake_mirror


# --------------------------------------------------------------------------------------------- HTTP mirror


@pytest.fixture
def mirror_server() -> Iterator[MirrorServer]:
    with MirrorServer() as server:
        yield server


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


# --------------------------------------------------------------------------------------------- tiny data


@pytest.fixture
def tiny_data(isolated_env: Path) -> Path:
    """Tiny learnable MNIST-format data in the isolated MNISTCTL_DATA_DIR."""
    return write_tiny_mnist(Path(os.environ["MNISTCTL_DATA_DIR"]))


SURE = 1000.0  # the random networks' last layer is scaled by this: their likeliest digit is far ahead


@pytest.fixture
def tiny_net():  # noqa: ANN201 - an nn.Module; torch is imported only by the tests that use it
    """A tiny network (widths 4/8) with seeded random weights, in memory: the digits are arbitrary, but given
    with confidence (its last layer scaled up), so that the reader names them rather than being unsure."""
    import torch

    from mnistctl.models import CompactNet

    torch.manual_seed(0)
    net = CompactNet(widths=(4, 8))
    with torch.no_grad():
        net.classifier.weight.mul_(SURE)
    return net


@pytest.fixture
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the default network with random weights (its last layer scaled up, so that it names a
    digit with confidence): the digits are arbitrary, the plumbing is what is tested."""
    import torch

    from mnistctl.checkpoint import make_checkpoint, save_checkpoint
    from mnistctl.models import ARCHITECTURES

    torch.manual_seed(0)
    arch = ARCHITECTURES["compact"]
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    net = arch.build()
    with torch.no_grad():
        net.classifier.weight.mul_(SURE)
    checkpoint = make_checkpoint(
        arch="compact",
        arch_config=dict(arch.defaults),
        state_dict=net.state_dict(),
        normalization=arch.normalization,
        epoch=1,
        config={},
        history=[],
        metrics={},
    )
    save_checkpoint(path, checkpoint)
    return path
