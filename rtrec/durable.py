"""Making file-system changes survive a crash or a power loss."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("rtrec.durable")


def fsync_dir(path: Path) -> None:
    """Make a directory's entries durable: files created, renamed into or removed from it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_json_line(path: Path, entry: dict) -> None:
    """Append one JSON line to a log and fsync it before returning."""
    with path.open("a") as log:
        log.write(json.dumps(entry) + "\n")
        log.flush()
        os.fsync(log.fileno())


def replace_durably(path: Path, text: str | bytes) -> None:
    """Replace `path` with `text`: readers see the old file or the new one, never half of one, and
    after a power loss the new one is there whole (written and fsynced aside, renamed, folder fsynced)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with tmp.open("wb" if isinstance(text, bytes) else "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class TornFile(OSError):
    """A failed append could not be undone: `path` holds bytes past `size` that were never acknowledged."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(f"{path} could not be cut back to {size} bytes after a failed append")
        self.path, self.size = path, size


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`, however many calls it takes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"write of {len(view)} bytes made no progress")
        view = view[written:]


def cut_back(path: Path, size: int) -> bool:
    """Truncate `path` back to `size` and fsync it; False (logged) when even that fails."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    except OSError:
        log.exception("could not cut %s back to %d bytes after a failed append", path, size)
        return False


def append_durably(path: Path, data: bytes) -> int:
    """Append `data` to `path` and fsync it; returns the file's size before. If the write or the
    fsync fails, the file is cut back to that size and the error raised (`TornFile` when even the
    cut fails: the file then ends in a partial write)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError as err:
            if not cut_back(path, size):
                raise TornFile(path, size) from err
            raise
        return size
    finally:
        os.close(fd)
