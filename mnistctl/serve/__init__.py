"""``mnistctl serve``: the reader over HTTP (a JSON API) and a page to draw digits on, in one ASGI app.

An optional extra (``pip install 'mnistctl[serve]'``): FastAPI and uvicorn are imported only here.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import TYPE_CHECKING

from mnistctl.errors import MnistctlError

if TYPE_CHECKING:
    from mnistctl.reader import Reader

NEEDS = ("fastapi", "uvicorn", "multipart")  # multipart: python-multipart, which reads forms


def missing_packages() -> list[str]:
    """The packages of the serve extra that are not installed (their import names)."""
    import importlib.util

    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port`` (0: any free port), or a one-line error saying why it cannot."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise MnistctlError(f"cannot listen on {host}: {exc.strerror or exc}", "pass another --host") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
