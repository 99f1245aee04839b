"""`mnistctl download` (and the MNIST reading it feeds) against hostile input: planted symlinks and FIFOs, mirror
URLs with passwords, a real full file system, servers that drip, never end or redirect where they should not,
local mirrors holding /dev/zero or a FIFO, empty IDX files and URLs that do not parse.

Every case runs the real CLI (Typer's CliRunner, or a subprocess where a hang, a full disk or a mount matters)
and checks the convention: exactly one `Error: <what> — <what to do>` line, the right exit code, no traceback and
no "unexpected … report it", no partial file left, nothing written outside the named data directory.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import Handler, MirrorServer, cli_expecting, idx_bytes, make_fake_mnist, redirect, send, write_tiny_mnist
from typer.testing import CliRunner

import mnistctl.data.http_fetch as http_fetch
from mnistctl.cli import app
from mnistctl.data.mnist import raw_dir
from mnistctl.data.transfer import max_gz_size

runner = CliRunner()
PROCESS_TIMEOUT_S = 120  # generous: a subprocess that has not finished by then hangs


def error_line(stderr: str) -> str:
    """The one `Error:` line of a failed command, after checking the conventions every failure keeps."""
    assert "Traceback" not in stderr, stderr
    assert "unexpected" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    assert " — " in errors[0], errors[0]  # what is wrong — what to do
    return errors[0]


def leftovers(directory: Path) -> list[str]:
    """Partial or temporary files anywhere under ``directory``."""
    if not directory.exists():
        return []
    return sorted(str(p) for p in directory.rglob("*") if p.name.endswith((".part", ".tmp")))


def assert_installed(data_dir: Path, fake, names: list[str]) -> None:
    for name in names:
        assert (raw_dir(data_dir) / name).read_bytes() == fake.raw[name]


def download(data_dir: Path, mirror: str, *extra: str):  # noqa: ANN201 - a click Result
    return runner.invoke(app, ["download", "--data-dir", str(data_dir), "--mirror", mirror, *extra])


# --------------------------------------------------------------------------------------------- subprocesses


def run_download(fake, *args: str, timeout: float = PROCESS_TIMEOUT_S) -> subprocess.CompletedProcess:
    """The CLI in a new process expecting ``fake``'s files. Files it writes are capped at 64 MiB (SIGXFSZ
    ignored, so a write past it fails), so that a download that would never end cannot fill this machine."""

    def cap_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return subprocess.run(
        [*cli_expecting(fake), "download", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cap_file_size,
    )


# --------------------------------------------------------------------------------------------- 1. planted paths


@pytest.mark.parametrize("planted", [".gz.part", ".gz", ""], ids=["part", "gz", "raw-file"])
def test_a_planted_symlink_is_refused_and_its_target_untouched(tmp_path, fake_mnist, mirror_server, planted):
    mirror_server.serve("/m/", fake_mnist.gz, ranges=False)  # a resumed .part would be rewritten
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file\n")
    rd = raw_dir(tmp_path / "d")
    rd.mkdir(parents=True)
    link = rd / f"t10k-labels-idx1-ubyte{planted}"
    link.symlink_to(victim)

    result = download(tmp_path / "d", mirror_server.url("/m/"))

    assert result.exit_code == 1, result.output
    line = error_line(result.stderr)
    assert f"{link} is a symbolic link" in line and "remove it" in line
    assert victim.read_text() == "the user's own file\n"
    assert link.is_symlink() and link.resolve() == victim  # left as it was, for the user to look at
    if planted != ".gz":
        assert not (rd / "t10k-labels-idx1-ubyte.gz").exists()  # the link was not installed as the .gz
    assert leftovers(tmp_path / "d") == ([str(link)] if planted == ".gz.part" else [])


def test_a_planted_fifo_part_is_refused_without_hanging(tmp_path, mirror_server):
    fake = make_fake_mnist(tmp_path / "mirror")
    mirror_server.serve("/m/", fake.gz)
    rd = raw_dir(tmp_path / "d")
    rd.mkdir(parents=True)
    fifo = rd / "train-images-idx3-ubyte.gz.part"
    os.mkfifo(fifo)

    proc = run_download(fake, "--data-dir", str(tmp_path / "d"), "--mirror", mirror_server.url("/m/"))

    assert proc.returncode == 1, proc.stderr
    line = error_line(proc.stderr)
    assert f"{fifo} is not a regular file" in line and "remove it" in line
    assert fifo.is_fifo()


# --------------------------------------------------------------------------------------------- 2. passwords


def test_a_mirror_password_is_never_shown(tmp_path, fake_mnist, mirror_server):
    wrong = mirror_server.url("/m/").replace("http://", "http://alice:hunter2@")
    result = download(tmp_path / "d", wrong, "--json")
    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert "hunter2" not in result.output
    assert "http://alice:***@127.0.0.1:" in line
    assert all("alice:***@" in t for f in json.loads(result.stdout)["files"] for t in f["tried"])


def test_a_password_in_the_mirror_url_logs_in_and_stays_hidden(tmp_path, fake_mnist, mirror_server):
    token = "Basic " + base64.b64encode(b"alice:s3cr:et@x").decode()

    def protected(body: bytes) -> Handler:
        def handle(h: http.server.BaseHTTPRequestHandler) -> None:
            logged_in = h.headers.get("Authorization") == token
            send(body if logged_in else b"", 200 if logged_in else 401)(h)

        return handle

    for name, body in fake_mnist.gz.items():
        mirror_server.routes[f"/m/{name}.gz"] = protected(body)
    mirror = mirror_server.url("/m/").replace("http://", "http://alice:s3cr%3Aet%40x@")

    result = download(tmp_path / "d", mirror, "--json")

    assert result.exit_code == 0, result.output
    assert "s3cr" not in result.output
    files = json.loads(result.stdout)["files"]
    assert [f["status"] for f in files] == ["downloaded"] * 4
    assert all(f["source"].startswith(mirror_server.url("/m/").replace("http://", "http://alice:***@")) for f in files)
    assert_installed(tmp_path / "d", fake_mnist, list(fake_mnist.raw))


def test_the_password_is_not_sent_on_where_a_redirect_leads(tmp_path, fake_mnist, mirror_server):
    with MirrorServer() as other:  # another port: another origin
        other.serve("/elsewhere/", fake_mnist.gz)
        for name in fake_mnist.gz:
            mirror_server.routes[f"/m/{name}.gz"] = redirect(f"{other.url('/elsewhere/')}{name}.gz")
        mirror = mirror_server.url("/m/").replace("http://", "http://alice:hunter2@")
        result = download(tmp_path / "d", mirror)
    assert result.exit_code == 0, result.output
    assert all("Authorization" in headers for _, headers in mirror_server.requests)
    assert other.requests and not any("Authorization" in headers for _, headers in other.requests)


# --------------------------------------------------------------------------------------------- 3. a full disk


def _tmpfs_refusal(directory: Path) -> str | None:
    """Why a private tmpfs cannot be mounted here (None when it can)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs in a private mount namespace needs root"
    if shutil.which("unshare") is None:
        return "the unshare command is not installed"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs '{directory}'"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.strip()}"


# Mount a small tmpfs at $1 (seen by this command only), run the CLI ($2 $3 $4: cli_expecting) there with the
# mirror $5, then list what is left on it.
ON_A_SMALL_DISK = """
mount -t tmpfs -o size=128k tmpfs "$1" || exit 99
"$2" "$3" "$4" download --data-dir "$1/d" --mirror "$5"
rc=$?
echo "--- left on the disk:"
find "$1" -type f
exit $rc
"""


@pytest.mark.parametrize("via", ["http", "directory"])
def test_a_full_disk_while_fetching_is_one_line_and_leaves_no_part(tmp_path, mirror_server, via):
    small = tmp_path / "small-disk"
    small.mkdir()
    why_not = _tmpfs_refusal(small)
    if why_not:
        pytest.skip(why_not)
    fake = make_fake_mnist(tmp_path / "mirror", n_train=400)  # its train images: ~310 kB, the disk: 128 kB
    assert len(fake.gz["train-images-idx3-ubyte"]) > 128 * 1024
    mirror_server.serve("/m/", fake.gz)
    mirror = mirror_server.url("/m/") if via == "http" else str(fake.directory)

    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", ON_A_SMALL_DISK, "sh"]
        + [str(small), *cli_expecting(fake), mirror],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
    )

    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = error_line(proc.stderr)
    gz = small / "d" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    assert line == f"Error: the disk is full while writing {gz} — free some space and run the command again"
    left = proc.stdout.split("--- left on the disk:")[1].split()
    assert not [name for name in left if name.endswith((".part", ".tmp"))], left


# --------------------------------------------------------------------------------------------- 4. hangs, exhaustion


def drip(body: bytes, every_s: float, for_s: float) -> Handler:
    """Announce the whole body, then send one byte every ``every_s`` seconds (for at most ``for_s``)."""

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        end = time.monotonic() + for_s
        for byte in body:
            if time.monotonic() > end:
                break
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(every_s)
        h.close_connection = True

    return handle


def test_a_drip_feeding_mirror_is_given_up_at_the_deadline(tmp_path, fake_mnist, mirror_server, monkeypatch):
    monkeypatch.setattr(http_fetch, "DEADLINE_S", 1.0)  # the drip lasts 20 s: far past it
    mirror_server.serve("/m/", fake_mnist.gz)
    mirror_server.routes["/m/train-images-idx3-ubyte.gz"] = drip(fake_mnist.gz["train-images-idx3-ubyte"], 0.25, 20)

    result = download(tmp_path / "d", mirror_server.url("/m/"))

    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert "train-images-idx3-ubyte.gz" in line and "too slow: not complete after 1 s" in line
    # The source is given up for every file, not dripped from four times over.
    assert [path for path, _ in mirror_server.requests] == ["/m/train-images-idx3-ubyte.gz"]


@pytest.mark.parametrize("announced", [None, 10**12], ids=["no-length", "huge-length"])
def test_an_endless_body_is_cut_off_at_what_the_file_can_be(tmp_path, fake_mnist, mirror_server, announced):
    cap = 64 << 20  # the server stops there; a client that reads it all has not stopped at the file's size
    sent = [0]

    def endless(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if announced is not None:
            h.send_header("Content-Length", str(announced))
        h.end_headers()
        block = b"\x1f\x8b" + bytes(1 << 16)
        while sent[0] < cap:
            h.wfile.write(block)
            sent[0] += len(block)
        h.close_connection = True

    mirror_server.serve("/m/", fake_mnist.gz)
    mirror_server.routes["/m/t10k-labels-idx1-ubyte.gz"] = endless
    limit = max_gz_size(fake_mnist.specs[3])

    result = download(tmp_path / "d", mirror_server.url("/m/"))

    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert "t10k-labels-idx1-ubyte.gz" in line
    if announced is None:
        assert f"larger than t10k-labels-idx1-ubyte.gz can be: over {limit:,} bytes" in line
    else:
        assert f"the server sends {announced:,} bytes, more than t10k-labels-idx1-ubyte.gz can be" in line
    assert sent[0] < cap // 2  # it stopped reading (socket buffers hold a few MB at most)
    assert leftovers(tmp_path / "d") == []
    assert_installed(tmp_path / "d", fake_mnist, ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"])


@pytest.mark.parametrize("form", ["directory", "file-url"])
@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_local_mirror_reads_only_regular_files(tmp_path, kind, form):
    fake = make_fake_mnist(tmp_path / "mirror")
    bad = fake.directory / "t10k-labels-idx1-ubyte.gz"
    bad.unlink()
    if kind == "dev-zero":
        bad.symlink_to("/dev/zero")  # only read, never written
    else:
        os.mkfifo(bad)
    mirror = str(fake.directory) if form == "directory" else fake.directory.as_uri()
    before = sorted(p.name for p in fake.directory.iterdir())

    proc = run_download(fake, "--data-dir", str(tmp_path / "d"), "--mirror", mirror)

    assert proc.returncode == 1, proc.stderr
    line = error_line(proc.stderr)
    assert "t10k-labels-idx1-ubyte.gz" in line and "not a regular file" in line
    assert_installed(tmp_path / "d", fake, ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"])
    assert leftovers(tmp_path / "d") == []
    assert sorted(p.name for p in fake.directory.iterdir()) == before
    assert bad.is_fifo() if kind == "fifo" else bad.is_symlink()


# --------------------------------------------------------------------------------------------- 5, 6. clear lines


def _data_with(tmp_path: Path, name: str, content: bytes) -> Path:
    data = write_tiny_mnist(tmp_path / "data", n_train=64, n_test=32)
    (raw_dir(data) / name).write_bytes(content)
    return data


EMPTY_FILES = [
    ("t10k-images-idx3-ubyte", b"", "is not an IDX file (wrong magic number: the file is empty, 0 bytes)"),
    ("t10k-images-idx3-ubyte", idx_bytes((0, 28, 28), b""), "holds no data (its dimensions are 0x28x28)"),
    ("t10k-labels-idx1-ubyte", idx_bytes((0,), b""), "holds no data (its dimensions are 0)"),
]


@pytest.mark.parametrize("command", ["eval", "train"])
@pytest.mark.parametrize(("name", "content", "says"), EMPTY_FILES, ids=["0-bytes", "header-only", "no-labels"])
def test_an_empty_idx_file_is_one_clear_line(tmp_path, command, name, content, says):
    data = _data_with(tmp_path, name, content)  # read as the user's own files: MNISTCTL_VERIFY_DATA=0 (conftest)
    args = ["--data-dir", str(data)]
    if command == "train":
        args += ["-o", str(tmp_path / "out.pt"), "--epochs", "1"]

    result = runner.invoke(app, [command, *args])

    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert f"{raw_dir(data) / name} {says}" in line
    assert "unset MNISTCTL_VERIFY_DATA" in line  # not a bare `download --force`, which would overwrite them
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("problem", ["truncated", "swapped"])
def test_with_verification_off_the_hint_does_not_overwrite_your_files(tmp_path, problem):
    data = write_tiny_mnist(tmp_path / "data", n_train=64, n_test=32)
    rd = raw_dir(data)
    images, labels = rd / "t10k-images-idx3-ubyte", rd / "t10k-labels-idx1-ubyte"
    if problem == "truncated":
        images.write_bytes(images.read_bytes()[:1000])
    else:
        image_bytes, label_bytes = images.read_bytes(), labels.read_bytes()
        images.write_bytes(label_bytes)
        labels.write_bytes(image_bytes)

    result = runner.invoke(app, ["eval", "--data-dir", str(data)])

    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert str(images) in line
    hint = line.split(" — ", 1)[1]
    assert (
        hint.startswith("fix or replace") and "unset MNISTCTL_VERIFY_DATA and run `mnistctl download --force`" in hint
    )


@pytest.mark.parametrize("mirror", ["http://[::1", "http://alice:hunter2@[::1/mnist/", "http://host:port/"])
def test_a_mirror_url_that_does_not_parse_is_a_usage_error(tmp_path, mirror):
    result = download(tmp_path / "d", mirror)
    assert result.exit_code == 2
    line = error_line(result.stderr)
    assert line.startswith("Error: the mirror ") and "is not a valid URL" in line and "--mirror" in line
    assert "hunter2" not in result.output
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("/m/train-images-idx3-ubyte.gz", "redirect loop"),
        ("ftp://127.0.0.1:1/mnist/train-images-idx3-ubyte.gz", "redirected to an unsupported URL 'ftp://127.0.0.1:1/"),
        ("file:///etc/passwd", "redirected to an unsupported URL 'file:///etc/passwd'"),
    ],
    ids=["loop", "ftp", "file"],
)
def test_redirects_that_go_nowhere_say_so(tmp_path, fake_mnist, mirror_server, location, says):
    mirror_server.serve("/m/", fake_mnist.gz)
    mirror_server.routes["/m/train-images-idx3-ubyte.gz"] = redirect(location)

    result = download(tmp_path / "d", mirror_server.url("/m/"))

    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert "train-images-idx3-ubyte.gz" in line and says in line
    assert "HTTP 302" not in line and "connection refused" not in line
    # Only that file failed: the mirror was not written off as unreachable.
    assert_installed(tmp_path / "d", fake_mnist, ["train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"])


def test_a_redirect_to_another_http_url_is_still_followed(tmp_path, fake_mnist, mirror_server):
    mirror_server.serve("/real/", fake_mnist.gz)
    for name in fake_mnist.gz:
        mirror_server.routes[f"/m/{name}.gz"] = redirect(f"/real/{name}.gz")
    result = download(tmp_path / "d", mirror_server.url("/m/"))
    assert result.exit_code == 0, result.output
    assert_installed(tmp_path / "d", fake_mnist, list(fake_mnist.raw))
