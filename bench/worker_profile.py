"""Where an API worker's time goes under saturating load: py-spy flame graphs and a table of shares.

`bench/serving_bench.py --profile DIR` runs this after its measured runs, on the same server: for
each request kind, wrk saturates the server twice while py-spy samples every worker process (the
supervisor's subprocesses), once for a flame graph (`DIR/<store>-<kind>.svg`, open it in a browser)
and once for the collapsed stacks the table is counted from (`DIR/<store>-<kind>.txt`, which
flamegraph.pl and speedscope also read). Sampling slows the workers, so the throughput figures are
the serving bench's, from the runs before; the table's shares are what profiling is for.

py-spy ships as a wheel (the `dev` extra); it reads other processes' memory, which needs ptrace
rights (root, or CAP_SYS_PTRACE in a container).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

from bench import wrk

RATE = 250  # samples per second per thread

# What a sampled stack was doing, from the frames it holds: the first part in this order that any
# frame matches (the online update reads the user's state too, so the write path's parts come first).
PARTS = (
    ("feedback log (durable append, forget checks)", ("(serving/feedback_log.py", "(rtrec/durable.py")),
    ("online update (locks, read, write)", ("EventWriter._push (",)),
    ("model (scores, blends, top-k)", ("(serving/batcher.py", "(model/")),
    ("user state read", ("(serving/state_reader.py", "read_user (", "UserStateTable.read")),
    ("route handlers (validation, filtering, responses)", ("(serving/routes/",)),
)
HTTP = "HTTP server, middleware, event loop"
OTHER = "other threads"
WAITING = ("Condition.wait (", "Event.wait (", "_worker (concurrent/futures/thread.py", "_recv (multiprocessing/")


def require_py_spy() -> str:
    found = shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy not found: `pip install py-spy` (the dev extra has it)")
    return found


def part_of(frames: list[str]) -> str | None:
    """The part a stack (outermost frame first, thread and process frames included) belongs to;
    None for a thread that is waiting (the supervisor's pings, the watcher between ticks)."""
    for name, markers in PARTS:
        if any(marker in frame for frame in frames for marker in markers):
            return name
    if any(marker in frames[-1] for marker in WAITING):
        return None
    if any("MainThread" in frame for frame in frames):
        return HTTP
    return OTHER


def shares(collapsed: Path) -> Counter:
    """Samples per part in py-spy's collapsed output (`frame;frame;... count` per line)."""
    counts: Counter = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        part = part_of(stack.split(";"))
        if part is not None:
            counts[part] += int(count)
    return counts


def record(
    supervisor: int, url: str, kind: str, seconds: float, connections: int, users: int, items: int, out: Path
) -> Counter:
    """Saturate `url` with `kind` twice while py-spy samples the supervisor's workers: `out`.svg,
    then `out`.txt; returns the samples per part counted from the second."""
    py_spy = require_py_spy()
    options = ["--subprocesses", "--threads", "--nolineno", "--rate", str(RATE), "--duration", str(int(seconds))]
    for fmt, path in (("flamegraph", out.with_suffix(".svg")), ("raw", out.with_suffix(".txt"))):
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(supervisor), *options, "--format", fmt, "--output", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wrk.run(url, kind, seconds, connections, users, items)
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode != 0:
            raise SystemExit(f"py-spy failed ({spy.returncode}): {err.strip()[-500:]}")
    return shares(out.with_suffix(".txt"))
