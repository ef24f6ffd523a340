"""Forgetting users in the landing zone: who is forgotten, and the batch files rewritten without them.

The rule, the same online and in dbt (models/staging/stg_deletions.sql): what a deletion forgets
stays forgotten, and events that arrive after it start a new history. ``landing/deletions.jsonl``
holds ``{user_id, deleted_at}`` lines; a user's rows that arrived at or before their last deletion
are forgotten. A feedback line arrives when the API accepts it (``received_at``; the feedback log
removes a forgotten user's lines itself, and the nightly run removes them from the files it
collected from the shared log); a batch file's rows arrive when the file lands (its modification
time).

The nightly run rewrites, before dbt reads them, the batch event files and ``users.parquet``
without forgotten users' rows. A rewritten file carries, in its parquet metadata, the fingerprint
and landing time of the file it replaced (``rtrec.fingerprint``, ``rtrec.landed_at``): to dbt it is
the same batch, not a new one (stg_batch_files), and its rows keep the time they arrived.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rtrec.durable import replace_durably
from rtrec.landing import write_parquet_atomically
from rtrec.shared_log import EPOCH

FINGERPRINT_KEY = b"rtrec.fingerprint"
LANDED_AT_KEY = b"rtrec.landed_at"
_DAMAGED_USER = re.compile(rb'"user_id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def fingerprint(path: Path) -> str:
    """What a batch file is known by, whatever its name: the md5 of its bytes (hex). The same as
    dbt's `file_fingerprint` macro; tests/test_privacy.py checks that they agree."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _utc(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def forgotten_users(landing_dir: Path) -> dict[str, datetime]:
    """Each forgotten user and the time up to which their rows are forgotten (their last deletion).
    A damaged line still forgets the user it names, up to the record's last change."""
    path = landing_dir / "deletions.jsonl"
    if not path.exists():
        return {}
    written = _mtime(path)
    until: dict[str, datetime] = {}
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            user, deleted_at = record.get("user_id"), _utc(record.get("deleted_at"))
        else:
            found = _DAMAGED_USER.search(line)
            user, deleted_at = (found.group(1).decode("utf-8", "replace") if found else None), None
        if not isinstance(user, str) or not user:
            continue
        deleted_at = deleted_at or written
        until[user] = max(until.get(user, deleted_at), deleted_at)
    return until


def stamps(path: Path) -> tuple[str, datetime]:
    """A landing parquet file's (fingerprint, landing time): those stamped by an earlier rewrite,
    else the md5 of its bytes and its modification time."""
    metadata = pq.read_schema(path).metadata or {}
    stamped_at = _utc(metadata.get(LANDED_AT_KEY, b"").decode() or None)
    stamped = metadata.get(FINGERPRINT_KEY, b"").decode()
    return stamped or fingerprint(path), stamped_at or _mtime(path)


@dataclass
class Redaction:
    """What `redact_landing` did."""

    users: int = 0  # forgotten users on record
    files_rewritten: list[str] = field(default_factory=list)
    rows_removed: int = 0


def _rewrite_without(path: Path, until: dict[str, datetime], now: datetime) -> int:
    """Rewrite one landing parquet file without the rows of users forgotten since it landed; returns
    the rows removed (0: the file is left as it is)."""
    if "user_id" not in pq.read_schema(path).names:
        return 0
    file_fingerprint, landed_at = stamps(path)
    arrived_at = min(landed_at, now)
    gone = [user for user, forgotten_until in until.items() if arrived_at <= forgotten_until]
    if not gone:
        return 0
    users = pq.read_table(path, columns=["user_id"]).column("user_id")
    hit = pc.is_in(users.cast(pa.string()), value_set=pa.array(gone, pa.string()))
    removed = pc.sum(hit).as_py() or 0
    if not removed:
        return 0
    table = pq.read_table(path)
    kept = table.filter(pc.invert(pc.fill_null(hit, False)))
    metadata = {
        **(table.schema.metadata or {}),
        FINGERPRINT_KEY: file_fingerprint.encode(),
        LANDED_AT_KEY: landed_at.isoformat().encode(),
    }
    write_parquet_atomically(kept.replace_schema_metadata(metadata), path)
    return removed


def _rewrite_collected_without(path: Path, until: dict[str, datetime]) -> int:
    """Rewrite a feedback file collected from the shared log (rtrec/shared_log.py) without the lines
    of users forgotten at or after the line arrived; returns the lines removed. The API's own local
    files are not touched: the local log removes a user's lines itself."""
    lines = path.read_bytes().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):  # never written by the collector, which writes aside and renames
            kept.append(line)
            continue
        user = record.get("user_id")
        received_at = _utc(record.get("received_at")) or EPOCH
        if user not in until or received_at > until[user]:
            kept.append(line)
    if len(kept) < len(lines):
        replace_durably(path, b"".join(kept))
    return len(lines) - len(kept)


def redact_landing(landing_dir: Path, now: datetime | None = None) -> Redaction:
    """Rewrite the batch event files, users.parquet and the feedback collected from the shared log
    without forgotten users' rows (each rewrite atomic: temp file, fsync, rename, folder fsync). A
    file whose rows arrived after a user's last deletion keeps them: that is the user's new history.
    Run it when no dbt run reads the files."""
    now = now or datetime.now(UTC)
    until = forgotten_users(landing_dir)
    done = Redaction(users=len(until))
    if not until:
        return done
    files = sorted((landing_dir / "events").glob("*.parquet"))
    if (landing_dir / "users.parquet").exists():
        files.append(landing_dir / "users.parquet")
    removals = [(path, _rewrite_without(path, until, now)) for path in files]
    collected = sorted((landing_dir / "feedback").glob("redis-*.jsonl"))
    removals += [(path, _rewrite_collected_without(path, until)) for path in collected]
    for path, removed in removals:
        if removed:
            done.files_rewritten.append(str(path.relative_to(landing_dir)))
            done.rows_removed += removed
    return done
