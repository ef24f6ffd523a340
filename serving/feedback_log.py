"""The feedback log: accepted events, durable before the API answers 202.

Each worker process appends to its own JSONL file in ``landing/feedback/`` (dbt's source reads
them all); every line carries ``seq`` (its line number in that file) and ``received_at``. A SQLite
index of event ids shared by all workers makes a repeated event_id count once: under one write
transaction an id is looked up, the line appended and fsynced, then the id recorded. A crash
between the append and the commit can leave a line whose retry is appended again; dbt's
first-arrival dedup drops that copy, so nothing acknowledged is ever lost or double counted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path


class FeedbackLog:
    def __init__(self, feedback_dir: Path) -> None:
        self.dir = feedback_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.path = self.dir / f"api-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self.seq = 0
        # shared by the request threads of this worker; the mutex keeps them off it one at a time
        self.index = sqlite3.connect(
            self.dir / "event_ids.sqlite", timeout=30, isolation_level=None, check_same_thread=False
        )
        self.mutex = threading.Lock()
        self.index.execute("pragma journal_mode=wal")
        self.index.execute("create table if not exists event_ids (event_id text primary key, user_id text)")

    def append(self, events: list[dict]) -> list[dict]:
        """Durably append the events whose ids were never accepted; returns those events."""
        received_at = datetime.now(UTC).isoformat()
        with self.mutex:
            return self._append(events, received_at)

    def _append(self, events: list[dict], received_at: str) -> list[dict]:
        self.index.execute("begin immediate")  # one writer at a time across all workers
        try:
            ids = [e["event_id"] for e in events]
            marks = ",".join("?" * len(ids))
            seen = {
                row[0] for row in self.index.execute(f"select event_id from event_ids where event_id in ({marks})", ids)
            }
            fresh, batch_ids = [], set()
            for event in events:
                if event["event_id"] not in seen and event["event_id"] not in batch_ids:
                    fresh.append(event)
                    batch_ids.add(event["event_id"])
            if fresh:
                lines = []
                for event in fresh:
                    self.seq += 1
                    lines.append(json.dumps({**event, "received_at": received_at, "seq": self.seq}) + "\n")
                # opened per write: forget_user may have replaced the file since the last one
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write("".join(lines))
                    handle.flush()
                    os.fsync(handle.fileno())
                self.index.executemany(
                    "insert into event_ids values (?, ?)", [(e["event_id"], e["user_id"]) for e in fresh]
                )
            self.index.execute("commit")
        except BaseException:
            self.index.execute("rollback")
            raise
        return fresh

    def forget_user(self, user_id: str) -> int:
        """Remove a user's lines from every feedback file and record the deletion, so the next
        batch run drops the user's history from the warehouse too; returns the lines removed."""
        with self.mutex:
            return self._forget_user(user_id)

    def _forget_user(self, user_id: str) -> int:
        removed = 0
        self.index.execute("begin immediate")
        try:
            with open(self.dir.parent / "deletions.jsonl", "a", encoding="utf-8") as record:
                record.write(json.dumps({"user_id": user_id, "deleted_at": datetime.now(UTC).isoformat()}) + "\n")
                record.flush()
                os.fsync(record.fileno())
            for path in sorted(self.dir.glob("*.jsonl")):
                lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
                kept = [line for line in lines if json.loads(line).get("user_id") != user_id]
                if len(kept) != len(lines):
                    removed += len(lines) - len(kept)
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text("".join(kept), encoding="utf-8")
                    os.replace(tmp, path)
            self.index.execute("delete from event_ids where user_id = ?", (user_id,))
            self.index.execute("commit")
        except BaseException:
            self.index.execute("rollback")
            raise
        return removed
