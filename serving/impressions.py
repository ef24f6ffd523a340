"""The impression log: every list served while an experiment runs, for its report.

One JSONL file per worker under the experiment's folder; a line per response: ``request_id``,
``at``, ``arm``, ``version`` and ``items`` shown, plus ``shadow_version`` and ``shadow_items`` (the
treatment's list, scored and not shown) in shadow mode. No user id: the report counts lists per
arm, and the feedback log's events point at them by request id.

A line is written with one unbuffered append, not fsynced: an impression lost to a power cut
takes one request off an arm's count, where an fsync per recommendation would halve throughput.
A line cut short by a crash is skipped by the report's reader.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path


class ImpressionLog:
    def __init__(self) -> None:
        self.tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.mutex = threading.Lock()
        self._fd: int | None = None
        self._dir: Path | None = None

    def record(self, directory: Path, line: dict) -> None:
        data = (json.dumps({**line, "at": datetime.now(UTC).isoformat()}) + "\n").encode()
        with self.mutex:
            if self._dir != directory:  # a new experiment: a new file in its folder
                self.close()
                directory.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(directory / f"{self.tag}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
                self._dir = directory
            os.write(self._fd, data)  # this worker's own file: lines never interleave

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._dir = None
