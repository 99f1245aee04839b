"""Plain helpers the test modules share: tiny MNIST-format files, a local HTTP mirror, synthetic digit images.

Fixtures stay in conftest.py, where pytest finds them by name; what a test imports comes from here
(`from helpers import ...`: pytest puts this directory on sys.path, as tests/ has no __init__.py).
"""

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

import mnistctl.data.mnist as data_mod

REPO = Path(__file__).resolve().parents[1]
# The real local mirror: $MNISTCTL_MIRROR as CI sets it (read when the tests are collected, before the isolation
# fixture clears it), else ../shared/mnist beside the checkout.
_env_mirror = os.environ.get("MNISTCTL_MIRROR")
SHARED_MNIST = Path(_env_mirror).resolve() if _env_mirror else REPO.parent / "shared" / "mnist"
# The installed `mnistctl` script, for tests of the real process (signals, pipes, exit codes).
MNISTCTL_SCRIPT = shutil.which("mnistctl") or os.path.join(os.path.dirname(sys.executable), "mnistctl")
# `mnistctl` in a new process that expects a test's own files (see cli_expecting).
_LAUNCHER = Path(__file__).with_name("mnistctl_expecting.py")


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


def cli_expecting(fake: FakeMnist) -> list[str]:
    """The command that runs `mnistctl` in a new process expecting ``fake``'s files, with no public mirror: put
    mnistctl's own arguments after it. The files' names, checksums and sizes are passed as an argument to
    tests/mnistctl_expecting.py, a script checked in like any other, not generated."""
    specs = json.dumps([[s.name, s.sha256, s.size] for s in fake.specs])
    return [sys.executable, str(_LAUNCHER), specs]


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


# --------------------------------------------------------------------------------------------- HTTP mirror

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class Route:
    """A file a mirror serves, and how: the behaviours of real mirrors (errors, dropped connections, stalls)."""

    body: bytes = b""
    status: int = 200
    drop_after: int | None = None  # first request: send this many bytes, then close the connection
    ranges: bool = True  # honour Range requests with 206
    stall_after: int | None = None  # send this many bytes, then wait until `resume` is set
    resume: threading.Event = field(default_factory=threading.Event)

    def __call__(self, h: http.server.BaseHTTPRequestHandler) -> None:
        if self.status != 200:
            h.send_error(self.status)
            return
        rng = h.headers.get("Range")
        body, status, start = self.body, 200, 0
        if rng and self.ranges and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            status = 206
        h.send_response(status)
        h.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        h.end_headers()
        if self.stall_after is not None and not self.resume.is_set():
            h.wfile.write(body[start : start + self.stall_after])
            h.wfile.flush()
            self.resume.wait(60)
            h.close_connection = True
            return
        if self.drop_after is not None:
            h.wfile.write(body[start : start + self.drop_after])
            h.wfile.flush()
            self.drop_after = None
            h.close_connection = True
            return
        h.wfile.write(body[start:])


def send(body: bytes, status: int = 200) -> Handler:
    """Answer with ``status`` and ``body`` whatever was asked (a Range request too)."""

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return handle


def redirect(location: str) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return handle


class MirrorServer:
    """A tiny HTTP server on 127.0.0.1. Each path answers as its route says: a :class:`Route` (a file served as
    mirrors serve them, with the faults it names), or any handler a test writes for a hostile behaviour (drip
    feeding, endless bodies, redirects, logins). Paths with no route are 404s. Use it as a context manager."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) of every request, in order
        server = self

        class Request(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                server.requests.append((self.path, dict(self.headers)))
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: as it may
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Request)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> MirrorServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def log(self) -> list[tuple[str, str | None]]:
        """(path, Range header) of every request, in order."""
        return [(path, headers.get("Range")) for path, headers in self.requests]

    def url(self, prefix: str = "/mnist/") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{prefix}"

    def serve(self, prefix: str, files: dict[str, bytes], *, ranges: bool = True) -> None:
        """Serve ``files`` (name without .gz → gzip bytes) under ``prefix``; ``ranges=False``: a mirror that
        ignores Range requests and sends the whole file every time."""
        for name, body in files.items():
            self.routes[f"{prefix}{name}.gz"] = Route(body, ranges=ranges)


# --------------------------------------------------------------------------------------------- digit images


def digit_mask(size: tuple[int, int] = (120, 120), box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """A "0" with a tail (so it has no symmetry to hide mistakes): 255 ink on 0, mode "L", not anti-aliased."""
    w, h = size
    x0, y0, x1, y1 = box or (w // 3, h // 4, 2 * w // 3, 3 * h // 4)
    stroke = max(2, (x1 - x0) // 6)
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    draw.ellipse((x0, y0, x1, y1 - (y1 - y0) // 3), outline=255, width=stroke)
    draw.line((x1 - stroke // 2, y0 + (y1 - y0) // 3, x0 + (x1 - x0) // 3, y1), fill=255, width=stroke)
    return img


def black_on_white(size: tuple[int, int] = (120, 120), **kw) -> Image.Image:
    return Image.eval(digit_mask(size, **kw), lambda v: 255 - v)


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    """(row, column) of the centre of mass."""
    x = a.astype(np.float64)
    total = x.sum()
    return float(x.sum(1) @ np.arange(a.shape[0]) / total), float(x.sum(0) @ np.arange(a.shape[1]) / total)


def save(img: Image.Image, path: Path, **kw) -> str:
    img.save(path, **kw)
    return str(path)


def mnist_like() -> np.ndarray:
    """A 28×28 white-on-black digit as MNIST has them: anti-aliased, dark border."""
    return np.array(digit_mask((28, 28), box=(8, 4, 20, 24)).filter(ImageFilter.GaussianBlur(0.7)))


# --------------------------------------------------------------------------------------------- readers


def reader_of(network, normalization: dict[str, float] | None = None):  # noqa: ANN001, ANN201 - torch types
    """A public :class:`mnistctl.Reader` around any network (a tiny random one in the tests), on the CPU."""
    import torch

    from mnistctl.reader import Reader
    from mnistctl.results import ModelMeta

    meta = ModelMeta(
        path="(test network)", arch="test", arch_config={}, normalization=normalization or {"mean": 0.0, "std": 1.0},
        test_accuracy=None, epochs=0, training={}, versions={}, device="cpu", precision="fp32",
    )  # fmt: skip
    return Reader(network, torch.device("cpu"), meta)


def model_file(path: Path, *, classes: int = 10, bias: dict[int, float] | None = None, **metrics: float) -> Path:
    """A compact checkpoint whose answer is set by its last layer alone: weights 0, ``bias`` per class (so every
    image gets the same probabilities)."""
    import torch

    from mnistctl.checkpoint import make_checkpoint, save_checkpoint
    from mnistctl.models import ARCHITECTURES

    arch = ARCHITECTURES["compact"]
    net = arch.build(classes=classes)
    with torch.no_grad():
        net.classifier.weight.zero_()
        net.classifier.bias.zero_()
        for cls, value in (bias or {}).items():
            net.classifier.bias[cls] = value
    config = {**arch.defaults, "classes": classes} if classes != 10 else dict(arch.defaults)
    checkpoint = make_checkpoint(
        arch="compact", arch_config=config, state_dict=net.state_dict(), normalization=arch.normalization,
        epoch=1, config={}, history=[], metrics=dict(metrics),
    )  # fmt: skip
    save_checkpoint(path, checkpoint)
    return path
