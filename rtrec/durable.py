"""Making file-system changes survive a crash or a power loss."""

from __future__ import annotations

import json
import os
from pathlib import Path


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


def replace_durably(path: Path, text: str) -> None:
    """Replace `path` with `text`: readers see the old file or the new one, never half of one, and
    after a power loss the new one is there whole (written and fsynced aside, renamed, folder fsynced)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with tmp.open("w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
