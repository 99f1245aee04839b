"""Shared fixtures: an isolated home for every test, tiny fake MNIST files, a local HTTP mirror."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import random
import shutil
import struct
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import mnistctl.data.download as download_mod
import mnistctl.data.mnist as data_mod

REPO = Path(__file__).resolve().parents[1]
# The real local mirror: $MNISTCTL_MIRROR as CI sets it (read before the isolation fixture clears it),
# else ../shared/mnist beside the checkout.
_env_mirror = os.environ.get("MNISTCTL_MIRROR")
SHARED_MNIST = Path(_env_mirror).resolve() if _env_mirror else REPO.parent / "shared" / "mnist"
# The installed `mnistctl` script, for tests of the real process (signals, pipes, exit codes).
MNISTCTL_SCRIPT = shutil.which("mnistctl") or os.path.join(os.path.dirname(sys.executable), "mnistctl")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's cache, model or mirror settings; never reach the public mirrors. The working
    directory is a fresh one, so that ./digit_model.pt (train's default output) is the test's own."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MNISTCTL_DATA_DIR", str(home / "data"))
    (home / "work").mkdir()
    monkeypatch.chdir(home / "work")
    for name in ("MNISTCTL_MODEL", "MNISTCTL_MIRROR", "MNISTCTL_DEVICE", "MNISTCTL_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    # The tiny synthetic IDX files the tests train on are not MNIST's, so their checksums are not MNIST's: read
    # them as a user reads their own digits in MNIST's format. Tests of the verification itself turn it on.
    monkeypatch.setenv("MNISTCTL_VERIFY_DATA", "0")
    monkeypatch.setattr(download_mod, "PUBLIC_MIRRORS", ())
    monkeypatch.setattr(download_mod, "BACKOFF_S", 0.01)
    return home


# --------------------------------------------------------------------------------------------- IDX files


def idx_bytes(array_dims: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, 8, len(array_dims)]) + struct.pack(f">{len(array_dims)}I", *array_dims) + payload


@dataclass
class FakeMnist:
    """Tiny MNIST-shaped files, with the sha256 list the downloader should verify them against."""

    raw: dict[str, bytes]
    gz: dict[str, bytes]
    specs: tuple[data_mod.MnistFile, ...]
    directory: Path = field(default=Path("."))


def make_fake_mnist(directory: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> FakeMnist:
    rng = random.Random(seed)
    raw: dict[str, bytes] = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = bytes(rng.randrange(10) for _ in range(n))
        images = bytes(rng.randrange(256) for _ in range(n * 28 * 28))
        raw[f"{prefix}-images-idx3-ubyte"] = idx_bytes((n, 28, 28), images)
        raw[f"{prefix}-labels-idx1-ubyte"] = idx_bytes((n,), labels)
    gz = {name: gzip.compress(content, mtime=0) for name, content in raw.items()}
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in gz.items():
        (directory / f"{name}.gz").write_bytes(content)
    specs = tuple(
        data_mod.MnistFile(name, hashlib.sha256(raw[name]).hexdigest(), len(raw[name]))
        for name in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    )
    return FakeMnist(raw, gz, specs, directory)


def launch_with_fake_mnist(fake: FakeMnist) -> str:
    """``python -c`` code that runs the CLI in a new process expecting ``fake``'s files, with no public mirror."""
    specs = json.dumps([[s.name, s.sha256, s.size] for s in fake.specs])
    return (
        "import json, sys\n"
        "import mnistctl.data.mnist as d, mnistctl.data.download as dl\n"
        f"d.MNIST_FILES = tuple(d.MnistFile(*x) for x in json.loads({specs!r}))\n"
        "dl.PUBLIC_MIRRORS = ()\n"
        "from mnistctl.cli import app\n"
        'sys.argv = ["mnistctl", *sys.argv[1:]]\n'
        "app()\n"
    )


@pytest.fixture
def fake_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMnist:
    """Fake files in a mirror directory; the downloader is told to expect exactly them."""
    fake = make_fake_mnist(tmp_path / "mirror")
    monkeypatch.setattr(data_mod, "MNIST_FILES", fake.specs)
    return fake


# --------------------------------------------------------------------------------------------- HTTP mirror


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    drop_after: int | None = None  # first request: send this many bytes, then close the connection
    ranges: bool = True  # honour Range requests with 206
    stall_after: int | None = None  # send this many bytes, then wait until `resume` is set
    resume: threading.Event = field(default_factory=threading.Event)


class MirrorServer:
    """A tiny HTTP server on 127.0.0.1 whose routes and behaviour a test sets up."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                rng = self.headers.get("Range")
                server.log.append((self.path, rng))
                route = server.routes.get(self.path)
                if route is None or route.status != 200:
                    self.send_error(404 if route is None else route.status)
                    return
                body, status, start = route.body, 200, 0
                if rng and route.ranges and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if route.stall_after is not None and not route.resume.is_set():
                    self.wfile.write(body[start : start + route.stall_after])
                    self.wfile.flush()
                    route.resume.wait(60)
                    self.close_connection = True
                    return
                if route.drop_after is not None:
                    self.wfile.write(body[start : start + route.drop_after])
                    self.wfile.flush()
                    route.drop_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, prefix: str = "/mnist/") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{prefix}"

    def serve(self, prefix: str, files: dict[str, bytes]) -> None:
        for name, body in files.items():
            self.routes[f"{prefix}{name}.gz"] = Route(body)


@pytest.fixture
def mirror_server():
    server = MirrorServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


# --------------------------------------------------------------------------------------------- tiny data


def learnable_digits(n: int, seed: int) -> tuple[bytes, bytes]:
    """``n`` 28×28 images whose label is easy to learn: digit k is a bright bar at row 3 + 2k, plus noise."""
    rng = random.Random(seed)
    labels = [rng.randrange(10) for _ in range(n)]
    pixels = bytearray(rng.randrange(40) for _ in range(n * 784))
    for i, k in enumerate(labels):
        row = 3 + 2 * k
        for r in (row, row + 1):
            for c in range(4 + rng.randrange(3), 22 + rng.randrange(3)):
                pixels[i * 784 + r * 28 + c] = 200 + rng.randrange(56)
    return bytes(pixels), bytes(labels)


def write_tiny_mnist(data_dir: Path, n_train: int = 256, n_test: int = 128) -> Path:
    """Raw IDX files of learnable synthetic digits in ``<data_dir>/MNIST/raw``."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = learnable_digits(n, seed)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes((n, 28, 28), images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes((n,), labels))
    return data_dir


@pytest.fixture
def tiny_data(isolated_env: Path) -> Path:
    """Tiny learnable MNIST-format data in the isolated MNISTCTL_DATA_DIR."""
    return write_tiny_mnist(Path(os.environ["MNISTCTL_DATA_DIR"]))


@pytest.fixture
def tiny_net():  # noqa: ANN201 - an nn.Module; torch is imported only by the tests that use it
    """A tiny network (widths 4/8) with seeded random weights, in memory: the digits are arbitrary."""
    import torch

    from mnistctl.models import CompactNet

    torch.manual_seed(0)
    return CompactNet(widths=(4, 8))


@pytest.fixture
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of the default network with random weights: the digits are arbitrary, the plumbing is
    what is tested."""
    import torch

    from mnistctl.checkpoint import make_checkpoint, save_checkpoint
    from mnistctl.models import ARCHITECTURES

    torch.manual_seed(0)
    arch = ARCHITECTURES["compact"]
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    checkpoint = make_checkpoint(
        arch="compact",
        arch_config=dict(arch.defaults),
        state_dict=arch.build().state_dict(),
        normalization=arch.normalization,
        epoch=1,
        config={},
        history=[],
        metrics={},
    )
    save_checkpoint(path, checkpoint)
    return path
