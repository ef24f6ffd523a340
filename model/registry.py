"""Model registry on the file system.

``versions/<id>/`` holds one trained model: ``weights.pt``, ``config.json``, ``vocab.json`` (its own
item vocabulary), ``metrics.json``, ``history.json`` and ``curve.png``. A version directory is
written under a temporary name and renamed, so it is complete or absent. ``CURRENT`` names the
serving version and is replaced atomically; ``promotions.jsonl`` logs every switch, and replaying
it gives the stack that ``rollback`` walks back.

Durable, not only atomic: a rename can reach the disk before the data it names, so after a power
loss ``CURRENT`` could name a truncated version. Every file of a version, its directory and the
versions directory are fsynced before the rename (and the versions directory again after it); the
new pointer file is fsynced before it replaces ``CURRENT``, and the registry directory after.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rtrec.durable import append_json_line, fsync_dir, replace_durably


class RegistryError(RuntimeError):
    pass


@dataclass(frozen=True)
class VersionInfo:
    version: str
    path: Path
    metrics: dict
    current: bool


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / "versions"
        self.pointer = root / "CURRENT"
        self.log = root / "promotions.jsonl"

    def create(self, write) -> str:
        """Make a new version: `write(directory)` fills a temporary directory that is then renamed."""
        self.versions.mkdir(parents=True, exist_ok=True)
        version = datetime.now(UTC).strftime("v%Y%m%d-%H%M%S-%f")
        staging = self.versions / f".{version}.partial"
        staging.mkdir()
        try:
            write(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _sync_tree(staging)
        fsync_dir(self.versions)
        staging.rename(self.versions / version)
        fsync_dir(self.versions)  # the rename itself
        return version

    def path(self, version: str) -> Path:
        path = self.versions / version
        if not path.is_dir():
            raise RegistryError(f"no model version {version!r} in {self.versions}")
        return path

    def current(self) -> str | None:
        try:
            return self.pointer.read_text().strip() or None
        except FileNotFoundError:
            return None

    def metrics(self, version: str) -> dict:
        return json.loads((self.path(version) / "metrics.json").read_text())

    def list(self) -> list[VersionInfo]:
        if not self.versions.is_dir():
            return []
        current = self.current()
        return [
            VersionInfo(p.name, p, self.metrics(p.name), p.name == current)
            for p in sorted(self.versions.iterdir())
            if p.is_dir() and not p.name.startswith(".")
        ]

    def promote(self, version: str, reason: str = "manual") -> None:
        self.path(version)
        self._switch(version, {"action": "promote", "version": version, "reason": reason})

    def rollback(self) -> str:
        """Make the version that was current before the current one current again."""
        stack = self._stack()
        if len(stack) < 2:
            raise RegistryError("nothing to roll back to: fewer than two promotions on record")
        previous = stack[-2]
        self._switch(previous, {"action": "rollback", "version": previous, "from": stack[-1]})
        return previous

    def _stack(self) -> list[str]:
        stack: list[str] = []
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                entry = json.loads(line)
                if entry["action"] == "promote":
                    stack.append(entry["version"])
                elif stack:
                    stack.pop()
        return stack

    def _switch(self, version: str, entry: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        entry["at"] = datetime.now(UTC).isoformat()
        append_json_line(self.log, entry)
        replace_durably(self.pointer, version + "\n")  # its folder fsync also makes a new log's entry durable


def _sync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory, deepest first, `root` last."""
    directories = []
    for directory, _, files in os.walk(root):
        directories.append(Path(directory))
        for name in files:
            fd = os.open(Path(directory) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for directory in reversed(directories):
        fsync_dir(directory)


def not_worse(candidate: float, current: float | None) -> bool:
    """The promotion gate: a candidate replaces the current model only if it is at least as good."""
    return current is None or candidate >= current
