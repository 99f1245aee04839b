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
mnistctl serve --workers 2                       one process per core: about twice the requests per second
curl --data-binary @digit.png -H 'Content-Type: image/png' localhost:8000/v1/digit  read one digit
"""


def serve(
    host: opt.Host = "127.0.0.1",
    port: opt.Port = 8000,
    model: opt.Model = None,
    device: opt.Device = None,
    amp: opt.InferenceAmp = None,
    threads: opt.ServeThreads = None,
    max_upload: opt.MaxUpload = 10.0,
    batch_wait: opt.BatchWait = 0.0,
    workers: opt.ServeWorkers = 1,
    quiet: opt.ServeQuiet = False,
) -> None:
    import functools

    from mnistctl import report
    from mnistctl import serve as server
    from mnistctl.errors import MnistctlError
    from mnistctl.reader import load_reader
    from mnistctl.runtime import set_threads

    if missing := server.missing_packages():
        raise MnistctlError(f"mnistctl serve needs {', '.join(missing)}", "install them: pip install 'mnistctl[serve]'")
    socks = server.listen(host, port, count=workers)
    reader = model_reader(model, amp, device, threads, quiet)
    if reader.device.type == "cpu" and threads is None:
        # The cores are shared among the workers, and each one's event loop (parsing requests, writing
        # answers) needs one of its own: torch gets what is left, at least one thread.
        threads = set_threads(max(1, set_threads(None) // workers - 1))
    options = {"max_upload": round(max_upload * 1e6), "max_wait": batch_wait / 1e3, "access_log": not quiet}
    processes = f" in {workers} processes" if workers > 1 else ""
    report.log(f"Serving {reader.meta.arch} at {server.url_of(socks[0])}{processes} — Ctrl-C stops.")
    if workers == 1:
        server.run(reader, socks[0], **options)
    else:
        meta = reader.meta  # each worker's reader as this one: the same networks, device and precision
        load = functools.partial(
            load_reader, meta.path, device=meta.device, precision=meta.precision, threads=threads,
            line_model=meta.line_model or False, second_model=meta.second_model or False,
        )  # fmt: skip
        server.run_workers(reader, load, socks, **options)
    report.log("Stopped: every request in flight was answered.")
