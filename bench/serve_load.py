"""Load on `mnistctl serve`: N concurrent clients POSTing 28×28 PNGs (MNIST test digits) to /v1/digit.

    python bench/serve_load.py --mirror ../shared/mnist                       # 1, 8, 32, 128 clients, 20,000 each
    python bench/serve_load.py --clients 32 --requests 5000 --server-args "--workers 2"

Starts the server as a user does (`mnistctl serve --port 0`, its log on stderr going to a file), then, for
each client count, sends a warm-up and then --requests requests over keep-alive HTTP/1.1 connections from
one asyncio process. Prints requests/s, p50/p99 latency, errors, how many answers named the digit's label, and
the server's resident memory before and after. Then a soak of the error paths — broken images, bodies over the
limit, uploads cut off half-way — mixed with good requests, after which good requests must still be answered.
The clients share the 2 cores with the server: the figures are for both on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import load_test_digits, machine, mnistctl_command


def pngs(data_dir: Path, mirror: str | None, n: int) -> tuple[list[bytes], list[int]]:
    from PIL import Image

    images, labels = load_test_digits(data_dir, mirror, n)
    out = []
    for pixels in images.numpy():
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out, labels.tolist()


def start_server(args: list[str], log: Path) -> tuple[subprocess.Popen, str, int]:
    cmd = [*mnistctl_command(), "serve", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log.read_text()
        if (match := re.search(r"at http://([\d.]+):(\d+)/", text)) and "Application startup complete" in text:
            return proc, match.group(1), int(match.group(2))
        if proc.poll() is not None:
            sys.exit(f"the server stopped: {log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    sys.exit("the server did not start within 120 s")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (with --workers, the server is several processes)."""
    pids = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pids += process_tree(int(child))
    return pids


def rss_mb(pid: int) -> float:
    """Resident memory of the server (all its processes, summed), in MB."""
    total = 0
    for one in process_tree(pid):
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def served(host: str, port: int) -> tuple[int, int]:
    """(images, batches) the server has read so far, from /healthz."""
    import urllib.request

    with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10) as response:
        health = json.loads(response.read())
    return health["images"], health["batches"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the server has used (all its processes and threads)."""
    ticks = 0
    for one in process_tree(pid):
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def request(body: bytes, path: str = "/v1/digit") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    return status, await reader.readexactly(length)


async def load(host: str, port: int, bodies: list[bytes], labels: list[int], clients: int, total: int) -> dict:
    latencies: list[float] = []
    errors = right = 0
    counter = iter(range(total))

    async def client() -> None:
        nonlocal errors, right
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in counter:
                start = time.perf_counter()
                writer.write(request(bodies[i % len(bodies)]))
                status, body = await read_response(reader)
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors += 1
                elif json.loads(body)["digit"] == labels[i % len(labels)]:
                    right += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "clients": clients, "requests": total, "seconds": elapsed, "rps": total / elapsed,
        "p50_ms": 1e3 * statistics.median(latencies), "p99_ms": 1e3 * latencies[int(0.99 * (len(latencies) - 1))],
        "errors": errors, "right": right / total,
    }  # fmt: skip


async def soak(host: str, port: int, good: bytes, rounds: int) -> dict:
    """Broken images, bodies over the limit (by Content-Length and by chunks), uploads cut off, and good requests,
    interleaved on fresh connections; the statuses seen for each kind."""
    seen: dict[str, dict[int | str, int]] = {}

    async def one(kind: str) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            if kind == "broken":
                writer.write(request(good[: len(good) // 2]))
            elif kind == "not-an-image":
                writer.write(request(os.urandom(500)))
            elif kind == "oversize-declared":
                writer.write(request(b"")[:-4].replace(b"Content-Length: 0", b"Content-Length: 50000000") + b"\r\n\r\n")
            elif kind == "oversize-chunked":
                head = "POST /v1/digit HTTP/1.1\r\nHost: b\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n"
                writer.write(head.encode() + b"\r\n")
                for _ in range(12):  # 12 MB in 1 MB chunks: over the 10 MB limit
                    writer.write(b"100000\r\n" + bytes(1 << 20) + b"\r\n")
                    await writer.drain()
            elif kind == "aborted":
                writer.write(request(good)[: -len(good) // 2])  # the headers promise more than is sent
                await writer.drain()
                writer.transport.abort()
                seen.setdefault(kind, {}).setdefault("aborted", 0)
                seen[kind]["aborted"] += 1
                return
            else:
                writer.write(request(good))
            await writer.drain()
            status, _ = await read_response(reader)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            status = type(exc).__name__
        finally:
            writer.close()
        seen.setdefault(kind, {}).setdefault(status, 0)
        seen[kind][status] += 1

    kinds = ["good", "broken", "not-an-image", "oversize-declared", "oversize-chunked", "aborted"]
    for _ in range(rounds):
        await asyncio.gather(*(one(kind) for kind in kinds for _ in range(4)))
    return seen


def measure(proc: subprocess.Popen, host: str, port: int, bodies: list[bytes], labels: list[int], clients: int,
            args: argparse.Namespace) -> str:  # fmt: skip
    """One line of the table: a warm-up, then --requests requests from ``clients`` clients."""
    asyncio.run(load(host, port, bodies, labels, clients, args.warmup))
    rss, cpu, client_cpu, (images, batches) = (
        rss_mb(proc.pid),
        cpu_seconds(proc.pid),
        time.process_time(),
        served(host, port),
    )
    r = asyncio.run(load(host, port, bodies, labels, clients, args.requests))
    cpu = (cpu_seconds(proc.pid) - cpu) * 1e3 / args.requests
    client_cpu = (time.process_time() - client_cpu) * 1e3 / args.requests
    images_now, batches_now = served(host, port)
    batch = f"{(images_now - images) / max(1, batches_now - batches):5.1f}"
    if len(process_tree(proc.pid)) > 1:
        batch = "    —"  # /healthz counts for the one worker that answered it: no mean over all of them
    head = (
        f"{clients:7d}  {r['rps']:10,.0f}  {r['p50_ms']:6.1f}  {r['p99_ms']:6.1f}  {r['errors']:6d}  {r['right']:.2%}"
    )
    return f"{head}  {rss:6.1f} → {rss_mb(proc.pid):6.1f}  {cpu:24.2f} {client_cpu:6.2f}  {batch}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32,128", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per client count")
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--images", type=int, default=2_000, help="distinct MNIST test digits sent, in turn")
    parser.add_argument("--mirror", default=os.environ.get("MNISTCTL_MIRROR"))
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "mnistctl-bench-data")
    parser.add_argument("--server-args", default="", help="more options for `mnistctl serve`")
    parser.add_argument("--soak-rounds", type=int, default=25)
    args = parser.parse_args()

    bodies, labels = pngs(args.data_dir, args.mirror, args.images)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc, host, port = start_server(shlex.split(args.server_args), log)
        try:
            print(f"# mnistctl serve {args.server_args} on {machine()}; clients in one asyncio process", flush=True)
            print("clients  requests/s  p50 ms  p99 ms  errors  right    RSS MB before → after  "
                  "CPU ms/request: server client  batch")  # fmt: skip
            for clients in (int(c) for c in args.clients.split(",")):
                print(measure(proc, host, port, bodies, labels, clients, args), flush=True)
            before = rss_mb(proc.pid)
            seen = asyncio.run(soak(host, port, bodies[0], args.soak_rounds))
            after_soak = asyncio.run(load(host, port, bodies, labels, 8, 2_000))
            print(f"soak ({args.soak_rounds} rounds of 4 of each kind): {json.dumps(seen)}")
            print(f"after the soak: {after_soak['rps']:,.0f} requests/s, {after_soak['errors']} errors; "
                  f"RSS {before:.1f} → {rss_mb(proc.pid):.1f} MB")  # fmt: skip
            tracebacks = log.read_text().count("Traceback")
            print(f"server log: {len(log.read_text().splitlines()):,} lines, {tracebacks} tracebacks")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
