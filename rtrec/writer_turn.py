"""Processes writing one SQLite database take turns on an flock of a side file before they begin.

SQLite's own busy handler waits for a lock with sleeps growing to 100 ms: under saturating load a
writer that lost a race sleeps long after the lock is free, and one process's writer can starve
past its timeout while the others keep winning. An flock tried every half millisecond hands the
turn over within that half millisecond instead. A process that dies holding it releases it.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

POLL_SECONDS = 0.0005


def open_turn(database: Path) -> int:
    """The descriptor whose flock the writers of `database` take turns on (``<database>.writer``)."""
    return os.open(f"{database}.writer", os.O_RDWR | os.O_CREAT, 0o644)


@contextmanager
def writer_turn(fd: int, wait_seconds: float, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold the turn on `fd`; raises `busy(reason)` when it is not ours within `wait_seconds`."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise busy(f"database busy: no turn to write in {wait_seconds} s") from None
            time.sleep(POLL_SECONDS)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
