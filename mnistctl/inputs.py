"""What ``mnistctl predict`` reads: the command line's files and directories expanded into image files
(:func:`expand_inputs`), and the list of paths ``predict -`` reads from stdin (:func:`read_path_list`).
Reading them is :mod:`mnistctl.reader`'s.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple

from PIL import Image

from mnistctl.errors import UsageError
from mnistctl.imaging import IMAGE_SUFFIXES, image_format, pillow_warnings
from mnistctl.imaging.decode import open_image_file


class InputProblem(NamedTuple):
    """An input that gave no image to read: its path, what is wrong, and what to do (or what became of it)."""

    path: str
    problem: str
    hint: str = "check the path"


def expand_inputs(inputs: Sequence[str], recursive: bool) -> tuple[list[str], list[InputProblem]]:
    """The image files named by ``inputs``, and a problem for each input that gave none and each directory that
    could not be read (with ``recursive``, a subdirectory's images are skipped, and said to be).

    A file is taken as it is, whatever its suffix; so is a path that cannot even be looked at (a name too long,
    a directory on the way that may not be searched): reading it fails with its reason, in its place among the
    others. A directory gives its image files (by suffix, any case), sorted, skipping hidden ones (e.g. macOS
    ``._x.png`` resource forks); subdirectories only with ``recursive``.
    """
    paths: list[str] = []
    problems: list[InputProblem] = []
    for raw in inputs:
        kind = _kind(raw)
        if kind is None:
            problems.append(InputProblem(raw, "no such file or directory"))
        elif kind == "directory":
            found, has_subdirs, unreadable = _images_in(raw, recursive)
            problems.extend(_unreadable(raw, unreadable))
            if found:
                paths.extend(found)
            elif not unreadable:  # (one that could not be read is said above)
                problem = InputProblem(raw, "no images in the directory")
                if has_subdirs and not recursive:
                    problem = problem._replace(hint="add --recursive to search its subdirectories")
                problems.append(problem)
        else:
            paths.append(raw)
    return paths, problems


def _kind(path: str) -> str | None:
    """What is at ``path``: "directory", "other" (a file, or a path stat cannot look at: reading it will say
    why), or None for nothing."""
    try:
        return "directory" if stat.S_ISDIR(os.stat(path).st_mode) else "other"
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the name, or ""
        return None
    except OSError:
        return "other"


def _unreadable(directory: str, errors: list[OSError]) -> Iterator[InputProblem]:
    """A problem for each directory os.walk could not read, below ``directory`` or ``directory`` itself."""
    for exc in errors:
        where = os.fsdecode(exc.filename) if exc.filename is not None else directory
        top = os.path.normpath(where) == os.path.normpath(directory)
        reason = (exc.strerror or type(exc).__name__).lower()
        yield InputProblem(
            where, f"cannot read the directory ({reason})", "check the path" if top else "its images were skipped"
        )


def _images_in(directory: str, recursive: bool) -> tuple[list[str], bool, list[OSError]]:
    """(sorted image paths, whether there are subdirectories, the errors of the directories that could not be
    read: the top one, or with ``recursive`` any below it)."""
    found: list[tuple[tuple[str, ...], str]] = []
    has_subdirs = False
    errors: list[OSError] = []
    for root, dirs, files in os.walk(directory, onerror=errors.append):
        rel = os.path.relpath(root, directory)
        parts = () if rel == "." else tuple(Path(rel).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        has_subdirs = has_subdirs or bool(dirs)
        for name in files:
            path = os.path.join(root, name)
            if not name.startswith(".") and (_image_suffix(name) or _image_content(name, path)):
                found.append(((*parts, name), path))
        if not recursive:
            break
    return [path for _, path in sorted(found)], has_subdirs, errors


def _image_suffix(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _image_content(name: str, path: str) -> bool:
    """A file without a suffix (``scan0001``) is an image if Pillow recognises its header: a regular file only
    (a FIFO would block, a device never end), checked on the descriptor that is read (``open_image_file``:
    no window for the name to become a FIFO between a check and the open). Of a large file only the header is
    read; a small one (up to imaging's ``IN_MEMORY_BYTES``) is read whole, as decoding it would."""
    if os.path.splitext(name)[1]:
        return False
    try:
        with open_image_file(path) as fp, pillow_warnings, Image.open(fp) as image:
            return bool(image.format)
    except Exception:  # noqa: BLE001 - unreadable or not an image: not one of the directory's images
        return False


# The most bytes `predict -` reads from stdin: about a million paths of 60 characters. The list is read whole
# before the first image (so that one bad entry is found at once), so it must fit in memory.
MAX_PATH_LIST = 64 << 20


def read_path_list(stream: BinaryIO, *, null: bool) -> list[str]:
    """The paths in ``stream`` (stdin for ``predict -``): one a line, or NUL-separated with ``null`` (as
    ``find -print0`` and ``xargs -0`` write them: the only separator no path can contain).

    Lines lose their ``\\n`` or ``\\r\\n``; empty lines and empty NUL-separated entries are skipped. Names are
    decoded as the filesystem does (``os.fsdecode``), so any name that exists can be read back. A NUL byte in a
    newline-separated list means a NUL-separated one was meant: that is a :class:`UsageError`; so is an image
    (``predict - < photo.png``: its content, where its path was meant), and so is a list over
    :data:`MAX_PATH_LIST` bytes (``predict - < /dev/zero`` would otherwise fill the memory).
    """
    data = stream.read(MAX_PATH_LIST + 1)
    _refuse_an_image(data, null)
    if len(data) > MAX_PATH_LIST:
        raise UsageError(
            f"the list of paths on stdin is longer than {MAX_PATH_LIST >> 20} MiB, the most `predict -` reads",
            "pass fewer paths at a time: split the list (e.g. `split -l 500000`), or pass their directory instead",
        )
    if null:
        return [os.fsdecode(name) for name in data.split(b"\0") if name]
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise UsageError(
            f"the list of paths holds a NUL byte (line {line}): it looks NUL-separated",
            "pass --null (-0) to read NUL-separated paths, as `find -print0` writes them",
        )
    lines = (line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n"))
    return [os.fsdecode(line) for line in lines if line]


def _refuse_an_image(data: bytes, null: bool) -> None:
    """A UsageError if ``data`` is an image file rather than a list of paths. Pillow takes no ordinary list of
    paths for an image, but a name can be anything (even "P1 1 1", a PBM header): a list whose first entry
    exists is a list."""
    kind = image_format(data)
    if kind is None:
        return
    first = data.split(b"\0" if null else b"\n", 1)[0].removesuffix(b"\r")
    if first and os.path.lexists(os.fsdecode(first)):
        return
    raise UsageError(
        f"stdin holds a {kind} image, not a list of paths",
        "pass the file's path, not its content: `mnistctl predict FILE` (`-` reads image paths from stdin)",
    )
