"""`rtrec serve` started in a child process and waited for: the demo's API and the benches'."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

START_SECONDS = 180  # for the API to answer /healthz (a large catalog's index loads first)


def serve_in_background(
    host: str, port: int, log: Path, workers: int = 2, env: dict | None = None, new_session: bool = False
) -> subprocess.Popen:
    """`rtrec serve` bound to `host`:`port` (where it is then asked) in a child process (`env`: its
    environment; `new_session`: a process group of its own), its output appended to `log`; returned
    once /healthz answers. A RuntimeError naming how it ended, with this run's part of `log`, when it
    exits or stays silent."""
    url = f"http://{host}:{port}"
    rtrec = os.path.join(os.path.dirname(sys.executable), "rtrec")
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [rtrec, "serve", "--host", host, "--port", str(port), "--workers", str(workers)],
            env=env,
            start_new_session=new_session,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_SECONDS
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    ended = f"exited with status {proc.returncode}" if proc.poll() is not None else "did not answer in time"
    tail = log.read_bytes()[start:].decode(errors="replace")[-2000:]
    raise RuntimeError(f"the API {ended}; its log, {log}, ends:\n{tail}")
