"""The downloader against fake mirrors: HTTP, file:// and directories; failures, resumption, checksums."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mnistctl.data.http_fetch as http_fetch
import mnistctl.data.sources as sources
from mnistctl.cli import app
from mnistctl.data.download import DownloadError, Source, download_mnist
from mnistctl.data.mnist import raw_dir
from mnistctl.errors import MnistctlError

runner = CliRunner()


def assert_installed(data_dir: Path, fake) -> None:
    rd = raw_dir(data_dir)
    for name, content in fake.raw.items():
        assert (rd / name).read_bytes() == content
        assert gzip.decompress((rd / f"{name}.gz").read_bytes()) == content
    leftovers = [p.name for p in rd.iterdir() if p.name.endswith((".part", ".tmp"))]
    assert leftovers == []


def test_first_mirror_404_then_second_succeeds(tmp_path, fake_mirror, mirror_server):
    mirror_server.serve("/good/", fake_mirror.gz)  # nothing under /bad/: every request there is a 404
    sources = [Source.parse(mirror_server.url("/bad/")), Source.parse(mirror_server.url("/good/"))]
    results = download_mnist(tmp_path / "d", sources=sources, files=fake_mirror.specs)
    assert [r.status for r in results] == ["downloaded"] * 4
    assert all(r.source.startswith(mirror_server.url("/good/")) for r in results)
    assert_installed(tmp_path / "d", fake_mirror)
    assert any(path.startswith("/bad/") for path, _ in mirror_server.log)


def test_corrupt_file_is_rejected_and_nothing_is_left(tmp_path, fake_mirror, mirror_server):
    bad = dict(fake_mirror.gz)
    bad["train-labels-idx1-ubyte"] = gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 60)  # valid gzip, wrong data
    bad["t10k-labels-idx1-ubyte"] = b"this is not gzip at all"
    mirror_server.serve("/bad/", bad)
    with pytest.raises(DownloadError) as info:
        download_mnist(tmp_path / "d", sources=[Source.parse(mirror_server.url("/bad/"))], files=fake_mirror.specs)
    statuses = {r.file: r.status for r in info.value.results}
    assert statuses["train-labels-idx1-ubyte"] == "failed"
    assert statuses["t10k-labels-idx1-ubyte"] == "failed"
    assert statuses["train-images-idx3-ubyte"] == "downloaded"
    assert "checksum mismatch" in str(info.value) and "not a valid gzip" in str(info.value)
    rd = raw_dir(tmp_path / "d")
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        assert not any(p.name.startswith(name) for p in rd.iterdir()), sorted(p.name for p in rd.iterdir())
    assert not any(p.name.endswith((".part", ".tmp")) for p in rd.iterdir())


def test_corrupt_mirror_falls_back_to_good_one(tmp_path, fake_mirror, mirror_server):
    bad = {name: gzip.compress(b"garbage") for name in fake_mirror.gz}
    mirror_server.serve("/bad/", bad)
    mirror_server.serve("/good/", fake_mirror.gz)
    sources = [Source.parse(mirror_server.url("/bad/")), Source.parse(mirror_server.url("/good/"))]
    results = download_mnist(tmp_path / "d", sources=sources, files=fake_mirror.specs)
    assert [r.status for r in results] == ["downloaded"] * 4
    assert_installed(tmp_path / "d", fake_mirror)


def test_interrupted_transfer_resumes_with_range(tmp_path, fake_mirror, mirror_server):
    mirror_server.serve("/m/", fake_mirror.gz)
    route = mirror_server.routes["/m/train-images-idx3-ubyte.gz"]
    half = len(route.body) // 2
    route.drop_after = half
    download_mnist(tmp_path / "d", sources=[Source.parse(mirror_server.url("/m/"))], files=fake_mirror.specs)
    assert_installed(tmp_path / "d", fake_mirror)
    requests = [(p, r) for p, r in mirror_server.log if p == "/m/train-images-idx3-ubyte.gz"]
    assert requests == [
        ("/m/train-images-idx3-ubyte.gz", None),
        ("/m/train-images-idx3-ubyte.gz", f"bytes={half}-"),
    ]


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path, fake_mirror, mirror_server):
    mirror_server.serve("/m/", fake_mirror.gz)
    rd = raw_dir(tmp_path / "d")
    rd.mkdir(parents=True)
    body = fake_mirror.gz["t10k-images-idx3-ubyte"]
    (rd / "t10k-images-idx3-ubyte.gz.part").write_bytes(body[:100])
    download_mnist(tmp_path / "d", sources=[Source.parse(mirror_server.url("/m/"))], files=fake_mirror.specs)
    assert ("/m/t10k-images-idx3-ubyte.gz", "bytes=100-") in mirror_server.log
    assert_installed(tmp_path / "d", fake_mirror)


def test_server_without_range_support_restarts_cleanly(tmp_path, fake_mirror, mirror_server):
    mirror_server.serve("/m/", fake_mirror.gz)
    for route in mirror_server.routes.values():
        route.ranges = False
    mirror_server.routes["/m/train-images-idx3-ubyte.gz"].drop_after = 500
    download_mnist(tmp_path / "d", sources=[Source.parse(mirror_server.url("/m/"))], files=fake_mirror.specs)
    assert_installed(tmp_path / "d", fake_mirror)


def test_all_mirrors_down_fails_fast_with_a_helpful_message(tmp_path, fake_mnist, closed_port_url, mirror_server):
    start = time.monotonic()
    result = runner.invoke(app, ["download", "--data-dir", str(tmp_path / "d"), "--mirror", closed_port_url])
    elapsed = time.monotonic() - start
    assert result.exit_code == 1
    assert elapsed < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: could not download 4 MNIST file(s)")
    assert "connection refused" in lines[0] and "MNISTCTL_MIRROR" in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_public_mirrors_are_tried_after_the_users_one(monkeypatch, tmp_path, fake_mirror, mirror_server):
    mirror_server.serve("/public/", fake_mirror.gz)
    monkeypatch.setattr(sources, "PUBLIC_MIRRORS", (mirror_server.url("/public/"),))
    monkeypatch.setenv("MNISTCTL_MIRROR", mirror_server.url("/missing/"))
    results = download_mnist(tmp_path / "d", files=fake_mirror.specs)
    assert all(r.source.startswith(mirror_server.url("/public/")) for r in results)
    paths = [p for p, _ in mirror_server.log]
    assert paths.index("/missing/train-images-idx3-ubyte.gz") < paths.index("/public/train-images-idx3-ubyte.gz")


def test_directory_and_file_url_mirrors(tmp_path, fake_mirror):
    download_mnist(tmp_path / "a", mirror=str(fake_mirror.directory), files=fake_mirror.specs)
    assert_installed(tmp_path / "a", fake_mirror)
    download_mnist(tmp_path / "b", mirror=fake_mirror.directory.as_uri(), files=fake_mirror.specs)
    assert_installed(tmp_path / "b", fake_mirror)


def test_missing_directory_mirror_is_reported(tmp_path, fake_mirror):
    with pytest.raises(DownloadError, match="no such file"):
        download_mnist(tmp_path / "d", mirror=str(tmp_path / "nowhere"), files=fake_mirror.specs)


def test_present_files_are_skipped_and_force_refetches(tmp_path, fake_mirror):
    download_mnist(tmp_path / "d", mirror=str(fake_mirror.directory), files=fake_mirror.specs)
    again = download_mnist(tmp_path / "d", mirror=str(tmp_path / "nowhere"), files=fake_mirror.specs)
    assert [r.status for r in again] == ["present"] * 4
    forced = download_mnist(tmp_path / "d", mirror=str(fake_mirror.directory), force=True, files=fake_mirror.specs)
    assert [r.status for r in forced] == ["downloaded"] * 4


def test_damaged_raw_file_is_replaced_from_the_kept_gz(tmp_path, fake_mirror):
    download_mnist(tmp_path / "d", mirror=str(fake_mirror.directory), files=fake_mirror.specs)
    raw = raw_dir(tmp_path / "d") / "train-labels-idx1-ubyte"
    raw.write_bytes(b"damaged")
    results = download_mnist(tmp_path / "d", mirror=str(tmp_path / "nowhere"), files=fake_mirror.specs)
    assert results[1].status == "downloaded" and results[1].source.endswith(".gz")
    assert_installed(tmp_path / "d", fake_mirror)


def test_cli_download_json_and_table(tmp_path, fake_mnist):
    args = ["download", "--data-dir", str(tmp_path / "d"), "--mirror", str(fake_mnist.directory)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [f["status"] for f in summary["files"]] == ["downloaded"] * 4
    assert {f["sha256"] for f in summary["files"]} == {s.sha256 for s in fake_mnist.specs}
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert result.stdout.count("present") == 4
    assert "already present" in result.stderr


def test_unwritable_data_dir_is_a_one_line_error(tmp_path, fake_mnist):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = runner.invoke(app, ["download", "--data-dir", str(blocker / "d"), "--mirror", str(fake_mnist.directory)])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot create the data directory")
    assert len(result.stderr.strip().splitlines()) == 1


def test_concurrent_downloads_do_not_corrupt_each_other(tmp_path, fake_mirror):
    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            download_mnist(tmp_path / "d", mirror=str(fake_mirror.directory), files=fake_mirror.specs)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_installed(tmp_path / "d", fake_mirror)


def test_retries_transient_server_errors(tmp_path, fake_mirror, mirror_server):
    mirror_server.serve("/m/", fake_mirror.gz)
    flaky = mirror_server.routes["/m/t10k-labels-idx1-ubyte.gz"]
    real = flaky.body
    flaky.status = 503
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        flaky.status = 200  # the server recovers while we wait
        flaky.body = real

    download_mnist(
        tmp_path / "d", sources=[Source.parse(mirror_server.url("/m/"))], sleep=sleep, files=fake_mirror.specs
    )
    assert calls == [http_fetch.BACKOFF_S]
    assert_installed(tmp_path / "d", fake_mirror)


def test_unsupported_mirror_scheme_is_a_usage_problem():
    with pytest.raises(MnistctlError, match="unsupported mirror"):
        Source.parse("ftp://example.org/mnist/")


def test_a_partial_download_survives_a_failing_mirror_and_resumes_later(tmp_path, fake_mirror, mirror_server):
    name = "train-images-idx3-ubyte.gz"
    body = fake_mirror.gz["train-images-idx3-ubyte"]
    rd = raw_dir(tmp_path / "d")
    rd.mkdir(parents=True)
    (rd / f"{name}.part").write_bytes(body[: len(body) // 2])  # left by an earlier, interrupted run
    mirror_server.serve("/m/", fake_mirror.gz)
    mirror_server.routes[f"/m/{name}"].status = 503  # the mirror is overloaded today
    with pytest.raises(DownloadError, match="HTTP 503; gave up after 3 attempts"):
        download_mnist(tmp_path / "d", mirror=mirror_server.url("/m/"), files=fake_mirror.specs)
    assert (rd / f"{name}.part").read_bytes() == body[: len(body) // 2]  # kept, not thrown away
    mirror_server.routes[f"/m/{name}"].status = 200
    download_mnist(tmp_path / "d", mirror=mirror_server.url("/m/"), files=fake_mirror.specs)
    assert (f"/m/{name}", f"bytes={len(body) // 2}-") in mirror_server.log
    assert_installed(tmp_path / "d", fake_mirror)


def test_valid_files_without_their_gz_are_present(tmp_path, fake_mirror):
    download_mnist(tmp_path / "d", mirror=str(fake_mirror.directory), files=fake_mirror.specs)
    for gz in raw_dir(tmp_path / "d").glob("*.gz"):
        gz.unlink()  # e.g. removed to save space: the decompressed files are what is read
    results = download_mnist(tmp_path / "d", mirror=str(tmp_path / "offline"), files=fake_mirror.specs)
    assert [r.status for r in results] == ["present"] * 4 and all(r.bytes is None for r in results)
