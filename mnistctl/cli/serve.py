"""`mnistctl serve`: the reader over HTTP (the optional serve extra); see docs/serve.md."""

from __future__ import annotations

from mnistctl.cli import options as opt
from mnistctl.cli.loading import model_reader

HELP = (
    "Serve the reader over HTTP: a JSON API for other programs, and a page at / to draw digits on.\n\n"
    "Needs the serve extra: pip install 'mnistctl\\[serve]'. The API is described in docs/serve.md and at /docs."
)
EXAMPLES = """
mnistctl serve                                   http://127.0.0.1:8000/ (open it in a browser)
mnistctl serve --port 9000 -m my_model.pt        another port and model
curl --data-binary @digit.png -H 'Content-Type: image/png' localhost:8000/v1/digit  read one digit
"""


def serve(
    host: opt.Host = "127.0.0.1",
    port: opt.Port = 8000,
    model: opt.Model = None,
    device: opt.Device = None,
    amp: opt.InferenceAmp = None,
    threads: opt.Threads = None,
    max_upload: opt.MaxUpload = 10.0,
    batch_wait: opt.BatchWait = 0.0,
    quiet: opt.ServeQuiet = False,
) -> None:
    from mnistctl import report
    from mnistctl import serve as server
    from mnistctl.errors import MnistctlError
    from mnistctl.runtime import leave_cores

    if missing := server.missing_packages():
        raise MnistctlError(f"mnistctl serve needs {', '.join(missing)}", "install them: pip install 'mnistctl[serve]'")
    sock = server.listen(host, port)
    reader = model_reader(model, amp, device, threads, quiet)
    if reader.device.type == "cpu" and threads is None:
        leave_cores(1)  # the event loop, parsing requests and writing answers, needs a core of its own
    report.log(f"Serving {reader.meta.arch} at {server.url_of(sock)} — Ctrl-C stops.")
    server.run(reader, sock, max_upload=round(max_upload * 1e6), max_wait=batch_wait / 1e3, access_log=not quiet)
    report.log("Stopped: every request in flight was answered.")
