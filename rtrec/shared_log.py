"""The feedback log shared by every API host (``RTREC_FEEDBACK_LOG=redis``), and its collection into
the landing zone by the nightly flow.

Each host's local log (serving/feedback_log.py) deduplicates and appends on its own disk: behind a
load balancer two hosts would each accept the same event_id, and the nightly run would see one
host's files. With the shared log every host writes to one Redis, under its own Lua scripts, so a
check and its writes are one atomic step whichever host runs it:

- ``events``: a stream, one entry per accepted event (its JSON as the client sent it, its user and
  ``received_us``, from the one clock below);
- ``ids``: every accepted event id and its user (a repeated event_id counts once across hosts);
- ``user:<id>:ids`` / ``user:<id>:entries``: a user's event ids and uncollected entries, so that a
  deletion drops them without scanning;
- ``clock``: the last time handed out as a ``received_at`` or ``deleted_at`` (max(now, last + 1 µs),
  so an event accepted before a deletion on any host has an earlier time than it);
- ``deletions``: a stream of deletions not collected yet; ``pending``: deletions whose online part
  is not done yet.

Durable means Redis's append-only file with ``appendfsync always``: Redis writes and fsyncs a
script's effects before it answers, so an acknowledged event survives a crash of Redis or of its
host (given a disk that honours fsync). What it cannot survive is losing that disk before the
nightly run collected the events: run Redis with a replica for that. `require_durable` refuses a
Redis configured otherwise.

Collection. `collect` copies the entries after the last collected one into landing files named
``redis-<first id>-<last id>.jsonl`` (written aside, fsynced, renamed), then trims them from the
stream. The names are the checkpoint: a run that stops between the rename and the trim starts after
the last named id next time, so every event lands exactly once. Deletions are appended to
``landing/deletions.jsonl`` with their stream id (``log_id``), the same way. One warehouse collects
the log: a lease in Redis keeps a second run out while one collects, and two warehouses collecting
in turn would each get part of it. Then Redis rewrites its append-only file, so what was trimmed
or forgotten leaves its disk as well.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rtrec.durable import append_durably, replace_durably

log = logging.getLogger("rtrec.shared_log")

PREFIX = "rtrec:{feedback}:"  # one hash tag: every key in one cluster slot, as scripts need
EVENTS, IDS, CLOCK, DELETIONS, PENDING = (PREFIX + name for name in ("events", "ids", "clock", "deletions", "pending"))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WRITE_TIMEOUT_S = 5.0  # an fsync per write: generous, and a timeout is safe to retry (event ids dedupe)
COLLECTED = re.compile(r"^redis-(\d+-\d+)-(\d+-\d+)\.jsonl$")
PAGE = 5_000
COLLECTOR = PREFIX + "collector"  # the lease of the one run collecting at a time
LEASE_S = 600  # renewed after every file landed


def user_ids_key(user_id: str) -> str:
    return f"{PREFIX}user:{user_id}:ids"


def user_entries_key(user_id: str) -> str:
    return f"{PREFIX}user:{user_id}:entries"


class CollectorBusy(RuntimeError):
    """Another run holds the collector's lease."""


class SharedLogNotDurable(RuntimeError):
    """The Redis of the shared feedback log would not keep an acknowledged event through a crash."""


def iso(ts: datetime) -> str:
    """The text of a `received_at` or `deleted_at`: ISO-8601 UTC, always to the microsecond."""
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def from_micros(us: int | bytes | str) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def micros(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


def connect(url: str):
    import redis

    # no client-side retries: a write that timed out is retried by the client of the API, whose
    # event ids make the retry safe, and a Redis that is down costs one failure, not three
    return redis.Redis.from_url(url, socket_timeout=WRITE_TIMEOUT_S, socket_connect_timeout=2, retry=None)


def require_durable(client) -> None:
    """Refuse a Redis whose append-only file is off or not fsynced on every write."""
    import redis

    def text(value) -> str:
        return value.decode() if isinstance(value, bytes) else value

    try:
        seen = {text(k): text(v) for k, v in client.config_get("append*").items()}
    except redis.ResponseError:  # CONFIG renamed away, as managed Redis services do: the operator vouches
        log.warning("cannot read the shared feedback log's Redis configuration; assuming appendfsync always")
        return
    if seen.get("appendonly") != "yes" or seen.get("appendfsync") != "always":
        raise SharedLogNotDurable(
            "feedback_log=redis needs a Redis with appendonly yes and appendfsync always, so that a 202 "
            f"survives a crash; this one has appendonly {seen.get('appendonly')}, appendfsync {seen.get('appendfsync')}"
        )


# -- collection -------------------------------------------------------------------------------------


@dataclass
class Collected:
    """What `collect` did."""

    events: int = 0
    deletions: int = 0
    files: list[str] = field(default_factory=list)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def _after(entry_id: str) -> str:
    """The smallest stream id after `entry_id` (XTRIM MINID keeps ids from there on)."""
    ms, seq = _id_key(entry_id)
    return f"{ms}-{seq + 1}"


def last_collected_event(feedback_dir: Path) -> str | None:
    ends = [m.group(2) for p in feedback_dir.glob("redis-*.jsonl") if (m := COLLECTED.match(p.name))]
    return max(ends, key=_id_key) if ends else None


def last_collected_deletion(deletions: Path) -> str | None:
    ids = []
    if deletions.exists():
        for line in deletions.read_bytes().splitlines():
            try:
                entry_id = json.loads(line).get("log_id")
            except (ValueError, AttributeError):  # a torn or foreign line: no checkpoint in it
                continue
            if isinstance(entry_id, str) and re.fullmatch(r"\d+-\d+", entry_id):
                ids.append(entry_id)
    return max(ids, key=_id_key) if ids else None


def _entries(client, stream: str, after: str | None) -> Iterator[tuple[str, dict[str, str]]]:
    start = f"({after}" if after else "-"
    while page := client.xrange(stream, min=start, max="+", count=PAGE):
        for raw_id, fields in page:
            entry_id = raw_id.decode()
            yield entry_id, {k.decode(): v.decode() for k, v in fields.items()}
        start = f"({entry_id}"


def _land_events(client, feedback_dir: Path, max_file_bytes: int, done: Collected, lease) -> None:
    batch: list[tuple[str, str]] = []  # (entry id, user) of the lines in `lines`
    lines: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if not batch:
            return
        path = feedback_dir / f"redis-{batch[0][0]}-{batch[-1][0]}.jsonl"
        replace_durably(path, b"".join(lines))  # written aside under a name no source pattern matches
        client.xtrim(EVENTS, minid=_after(batch[-1][0]), approximate=False)
        with client.pipeline(transaction=False) as pipe:  # the entries left the stream: users stop naming them
            for entry_id, user in batch:
                pipe.srem(user_entries_key(user), entry_id)
            pipe.execute()
        done.events += len(batch)
        done.files.append(path.name)
        lease.reacquire()  # raises if the lease ran out: then another collector may have started
        batch.clear()
        lines.clear()
        size = 0

    for entry_id, fields in _entries(client, EVENTS, last_collected_event(feedback_dir)):
        record = {**json.loads(fields["event"]), "received_at": iso(from_micros(fields["received_us"]))}
        line = (json.dumps(record | {"seq": len(batch) + 1}) + "\n").encode()
        batch.append((entry_id, fields["user"]))
        lines.append(line)
        size += len(line)
        if size >= max_file_bytes:
            flush()
    flush()


def _ends_mid_line(path: Path) -> bool:
    if not path.exists() or not path.stat().st_size:
        return False
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) != b"\n"


def _land_deletions(client, deletions: Path, done: Collected) -> None:
    records = [
        {"user_id": fields["user_id"], "deleted_at": iso(from_micros(fields["deleted_us"])), "log_id": entry_id}
        for entry_id, fields in _entries(client, DELETIONS, last_collected_deletion(deletions))
    ]
    if not records:
        return
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    if _ends_mid_line(deletions):
        data = b"\n" + data  # a line torn by someone else's crash stays a line of its own
    append_durably(deletions, data)  # cut back to where it was if the write or the fsync fails
    client.xtrim(DELETIONS, minid=_after(records[-1]["log_id"]), approximate=False)
    done.deletions = len(records)


def _compact(client) -> None:
    """Have Redis rewrite its append-only file from what it holds now: the collected entries and a
    forgotten user's events and ids leave its disk too, not only its memory."""
    import redis

    try:
        client.bgrewriteaof()
    except redis.ResponseError as err:  # one in progress already (it starts another after), or not allowed
        log.warning("the shared log's Redis did not start rewriting its append-only file: %s", err)


def collect(url: str, landing_dir: Path, max_file_bytes: int) -> Collected:
    """Move the shared log's uncollected events and deletions into the landing zone, exactly once.
    Events first: a deletion that removed an event this run read is then collected by this run too.
    One collector at a time, whichever host runs it: a second one raises `CollectorBusy`."""
    client = connect(url)
    feedback = landing_dir / "feedback"
    lease = client.lock(COLLECTOR, timeout=LEASE_S, blocking=False)
    if not lease.acquire():
        raise CollectorBusy(f"another nightly run is collecting the shared feedback log ({COLLECTOR} is held)")
    try:
        for stale in feedback.glob(".redis-*.jsonl.*"):  # a collection that stopped before its rename
            stale.unlink()
        done = Collected()
        _land_events(client, feedback, max_file_bytes, done, lease)
        _land_deletions(client, landing_dir / "deletions.jsonl", done)
    finally:
        lease.release()
    if done.events or done.deletions:
        _compact(client)
    return done


def traces_of(url: str, user_id: str) -> list[str]:
    """What the shared log still holds of the user (for `rtrec privacy-audit`): nothing once the
    user's deletion was collected and brought online, and no event of theirs arrived since."""
    client = connect(url)
    keys = ((user_ids_key(user_id), "the user's event ids"), (user_entries_key(user_id), "the user's entries"))
    found = [what for key, what in keys if client.exists(key)]
    if client.hexists(PENDING, user_id):
        found.append("a deletion whose online part is pending")
    if any(owner == user_id.encode() for _, owner in client.hscan_iter(IDS, count=10_000)):
        found.append("accepted event ids")
    for stream, name, what in (
        (EVENTS, "user", "uncollected events"),
        (DELETIONS, "user_id", "an uncollected deletion"),
    ):
        if any(fields.get(name) == user_id for _, fields in _entries(client, stream, None)):
            found.append(what)
    return found
