"""Run `mnistctl` expecting a test's own MNIST-format files rather than MNIST's, with no public mirror.

    python tests/mnistctl_expecting.py SPECS [mnistctl arguments...]

SPECS is a JSON list of [name, sha256, size] (helpers.cli_expecting writes it from a FakeMnist). For the tests
that need a real process: a signal, a hang, a full disk, a terminal.
"""

from __future__ import annotations

import json
import sys

import mnistctl.data.mnist as data_mod
import mnistctl.data.sources as sources
from mnistctl.cli import app


def main() -> None:
    specs, args = sys.argv[1], sys.argv[2:]
    data_mod.MNIST_FILES = tuple(data_mod.MnistFile(*spec) for spec in json.loads(specs))
    sources.PUBLIC_MIRRORS = ()
    sys.argv = ["mnistctl", *args]
    app()


if __name__ == "__main__":
    main()
