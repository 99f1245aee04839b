"""``mnistctl serve``: the reader over HTTP (a JSON API) and a page to draw digits on, in one ASGI app.

An optional extra (``pip install 'mnistctl[serve]'``): FastAPI and uvicorn are imported only here.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mnistctl.errors import MnistctlError

if TYPE_CHECKING:
    from mnistctl.reader import Reader

NEEDS = ("fastapi", "uvicorn", "multipart")  # multipart: python-multipart, which reads forms


def missing_packages() -> list[str]:
    """The packages of the serve extra that are not installed (their import names)."""
    import importlib.util

    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def listen(host: str, port: int, *, count: int = 1) -> list[socket.socket]:
    """``count`` sockets listening on ``host``:``port`` (0: any free port), or a one-line error saying why they
    cannot. Several share the port through SO_REUSEPORT, with which Linux spreads the connections among them:
    one socket for each server process."""
    if count > 1 and not sys.platform.startswith("linux"):
        raise MnistctlError("--workers above 1 needs Linux (its SO_REUSEPORT)", "leave --workers at 1")
    socks: list[socket.socket] = []
    if count > 1:  # SO_REUSEPORT would share the port with another server of ours: a plain bind finds it taken
        _listen_one(host, port, reuse_port=False).close()
    try:
        for _ in range(count):
            socks.append(_listen_one(host, port, reuse_port=count > 1))
            port = socks[0].getsockname()[1]  # with port 0, the others take the port the first one got
    except MnistctlError:
        for sock in socks:
            sock.close()
        raise
    return socks


def _listen_one(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise MnistctlError(f"cannot listen on {host}: {exc.strerror or exc}", "pass another --host") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)  # from now on connections wait in the backlog, even while the model is still loading
    except (OSError, OverflowError) as exc:
        sock.close()
        if getattr(exc, "errno", None) == errno.EADDRINUSE:
            raise MnistctlError(
                f"port {port} on {host} is in use", "pass another --port, or stop what uses it"
            ) from exc
        if getattr(exc, "errno", None) == errno.EACCES:
            raise MnistctlError(f"not allowed to listen on port {port}", "pass a --port above 1023") from exc
        detail = getattr(exc, "strerror", None) or exc
        raise MnistctlError(f"cannot listen on {host}:{port}: {detail}", "check --host and --port") from exc
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run(reader: Reader, sock: socket.socket, *, max_upload: int, max_wait: float, access_log: bool = True) -> None:
    """Serve ``reader`` on ``sock`` until SIGINT or SIGTERM, answering the requests in flight before it stops;
    that is a normal end, so it returns."""
    import uvicorn

    from mnistctl.serve.app import create_app

    app = create_app(reader, max_upload=max_upload, max_wait=max_wait)
    config = uvicorn.Config(
        app,
        log_config=LOG_CONFIG,
        access_log=access_log,
        timeout_graceful_shutdown=10,
        limit_concurrency=1024,  # beyond this many connections at once: 503 rather than memory without bound
        timeout_keep_alive=5,
    )
    # uvicorn raises the signal that stopped it again once it has stopped: here, that is a clean end.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])


def run_workers(
    reader: Reader, load_reader: Callable[[], Reader], socks: list[socket.socket], **options: object
) -> None:
    """Serve on ``socks[0]`` with ``reader`` in this process, and on each other socket in a worker process of
    its own that makes its reader with ``load_reader`` (picklable: workers are spawned, not forked, since
    torch's thread pools do not survive a fork). A worker that dies while the server runs (killed, out of
    memory) is reported on stderr and replaced; not one that was asked to stop (SIGTERM, Ctrl-C), one that
    could not load the model, or one that stopped within RESTART_AFTER seconds of starting (it would only
    stop again). When this process stops, each worker is sent SIGTERM and answers what it has in flight
    first; Ctrl-C at a terminal reaches them all at once."""
    import logging.config
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    workers = _Workers(spawn, load_reader, options, socks[0].getsockname()[:2])
    # Until a worker's server takes over its signals, Ctrl-C leaves it be (its parent stops it in order): it is
    # spawned with SIGINT blocked (the mask survives the spawn) and ignores it before unblocking it (_worker),
    # so none stops half-started with a traceback. Here a Ctrl-C meanwhile (another thread may take it) is only
    # noted, so that no start is cut short, and raised again once they are all started (and known to stop()).
    try:
        asked: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda number, _frame: asked.append(number))
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for sock in socks[1:]:
                workers.start(sock)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # one pending arrives now, and is noted
            signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)  # None: C's
        if asked:
            signal.raise_signal(signal.SIGINT)  # as if it came now: the usual way of stopping
        logging.config.dictConfig(LOG_CONFIG)  # as the server will: the watcher's lines look like its own
        threading.Thread(target=workers.watch, name="mnistctl-workers", daemon=True).start()
        run(reader, socks[0], **options)  # type: ignore[arg-type]
    finally:
        workers.stop()


RESTART_AFTER = 10.0  # seconds: a worker that stops sooner after starting is not started again
CANNOT_LOAD = 3  # a worker's exit status when it cannot load the model: not started again either
# The exit statuses of a worker told to stop (SIGHUP: not on Windows, where there are no workers anyway).
ASKED_TO_STOP = (0, -signal.SIGTERM, -signal.SIGINT, -getattr(signal, "SIGHUP", signal.SIGTERM))


class _Workers:
    """The worker processes of :func:`run_workers`: started, watched, replaced, stopped."""

    def __init__(self, spawn: Any, load_reader: Callable[[], Reader], options: dict, address: tuple) -> None:
        self._spawn, self._load_reader, self._options, self._address = spawn, load_reader, options, address
        self._running: dict[Any, float] = {}  # process → when it started (time.monotonic())
        self._lock = threading.Lock()  # held to start one, and to stop them all: never both at once
        self._stopping = False

    def start(self, sock: socket.socket) -> None:
        try:
            process = self._spawn.Process(target=_worker, args=(self._load_reader, sock, self._options))
            process.start()
        finally:
            sock.close()  # the worker has its own copy now (or none: then no socket may stay open, unanswered)
        self._running[process] = time.monotonic()

    def watch(self) -> None:
        """Until the server stops: report each worker that stops, and start another in its place."""
        from multiprocessing.connection import wait

        # Ctrl-C is the main thread's to handle; blocked here, as while the first workers start (run_workers).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        log = logging.getLogger("mnistctl.serve")
        while not self._stopping:
            ready = set(wait([p.sentinel for p in list(self._running)], timeout=0.5))
            for process in [p for p in list(self._running) if p.sentinel in ready]:
                with self._lock:
                    if self._stopping:
                        return
                    process.join()
                    lived = time.monotonic() - self._running.pop(process)
                    what = f"a worker process (pid {process.pid}) {_how_it_ended(process.exitcode)}"
                    if process.exitcode in ASKED_TO_STOP:
                        log.info(f"{what}; not started again")
                    elif process.exitcode == CANNOT_LOAD or lived < RESTART_AFTER:
                        log.error(f"{what} {lived:.0f} s after it started; not started again: the server goes on "
                                  "with one process fewer")  # fmt: skip
                    else:
                        log.error(f"{what}; starting another in its place")
                        try:
                            self.start(_listen_one(*self._address, reuse_port=True))
                        except (MnistctlError, OSError) as exc:
                            log.error(f"cannot start another worker: {exc}")

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        for process in self._running:
            process.terminate()  # SIGTERM: a graceful stop
        for process in self._running:
            process.join()


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed ({name})"
    return f"stopped (exit status {exitcode})"


def _worker(load_reader: Callable[[], Reader], sock: socket.socket, options: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the server takes it over (see run_workers) ...
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # ... blocked till now, as it was spawned
    try:
        reader = load_reader()
    except MnistctlError as exc:  # the file changed since this process's parent read it: one line, not a traceback
        print(f"Error: a worker could not load the model: {exc}", file=sys.stderr)
        sys.exit(CANNOT_LOAD)
    run(reader, sock, **options)


# One line per event on stderr: "INFO  127.0.0.1:50412 POST /v1/digit 200", without uvicorn's colour codes.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(levelname)-5s %(message)s"},
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(levelname)-5s %(client_addr)s "%(request_line)s" %(status_code)s',
            "use_colors": False,
        },
    },
    "handlers": {
        "plain": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stderr"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["plain"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        "mnistctl.serve": {"handlers": ["plain"], "level": "INFO", "propagate": False},
    },
}
