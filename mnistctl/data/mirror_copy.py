"""Copying one file from a local mirror (a directory or file:// URL) into the partial download: a symlink to a
regular file is fine, but a FIFO (which would block), a device such as /dev/zero (which never ends) or a
directory is refused, and no more is copied than MNIST's file can be."""

from __future__ import annotations

import os
from pathlib import Path

from mnistctl.data.mnist import MnistFile
from mnistctl.data.sources import Source
from mnistctl.data.transfer import DownloadProgress, Missing, NotMnist, max_gz_size, open_part, write_all
from mnistctl.fsutil import NotRegularFile, open_regular


def fetch_local(source: Source, spec: MnistFile, part: Path, progress: DownloadProgress) -> str | None:
    """Copy ``spec`` from the directory ``source`` into ``part``; None on success, else why not. Nothing to
    resume from a local copy, so a partial one is never left behind."""
    part.unlink(missing_ok=True)
    try:
        copy_file(Path(source.location(spec)), part, spec, progress, source.shown)
    except Missing as exc:
        return str(exc)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return None


def copy_file(path: Path, part: Path, spec: MnistFile, progress: DownloadProgress, source: str) -> None:
    """Copy a local mirror's file into ``part``; only a regular file, and only as much as MNIST's can be."""
    limit = max_gz_size(spec)
    try:
        src = open_regular(path)
    except NotRegularFile as exc:
        raise Missing("is a directory" if exc.is_directory else "not a regular file") from None
    except FileNotFoundError as exc:
        raise Missing("no such file") from exc
    except IsADirectoryError as exc:
        raise Missing("is a directory") from exc
    except OSError as exc:
        raise Missing(exc.strerror or str(exc)) from exc
    with src:
        size = os.fstat(src.fileno()).st_size
        if size > limit:
            raise NotMnist(f"larger than {spec.gz_name} can be: {size:,} bytes")
        progress.start(spec.name, source, size)
        with open_part(part, resume=False) as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                if out.tell() + len(block) > limit:  # the file grows while it is copied
                    raise NotMnist(f"larger than {spec.gz_name} can be: over {limit:,} bytes")
                write_all(out, block)
                progress.advance(spec.name, len(block))
