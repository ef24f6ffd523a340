"""The feedback log: accepted events, durable before the API answers 202.

This is the log of one host (``RTREC_FEEDBACK_LOG=local``, the default); API hosts behind one load
balancer share the Redis log instead (serving/shared_feedback_log.py). `open_feedback_log` picks.

Files. Each worker process appends to its own JSONL file in ``landing/feedback/`` (dbt's source
reads them all) and starts a new one once that file holds ``max_file_bytes``; every line carries
``seq`` (increasing within its file) and ``received_at`` (ISO-8601 UTC).

Index. A SQLite database in the same folder, shared by all workers, with
- ``event_ids``: every accepted event id and its user; a repeated event_id counts once;
- ``user_files``: which files hold each user's lines, so forgetting a user rewrites only those;
- ``files``: the committed size of each file; bytes past it were never acknowledged;
- ``clock``: the last time handed out as a ``received_at`` or a ``deleted_at``;
- ``pending_forgets``: deletions whose online part is not done yet (the store was down): reads
  treat those users as forgotten, and `serving.forgetting` finishes the work once the store is back.

Append. Under one write transaction (one writer at a time across all workers) the ids are looked
up, a time is taken from the clock, the lines are appended and fsynced, then ids, user files and
the new size are recorded and committed; only then does the API answer 202. Group commit: the
calls that arrive while a worker's append is under way wait for it to end; then one of them appends
them all in one transaction (one fsync of the file, one of the index) and answers each with its own
lines (or each with a `NotDurable`), so concurrent requests share the cost of the two fsyncs. When anything fails
the transaction is rolled back and the file cut back to its size before the write (and fsynced):
the log is exactly as it was, and the caller gets `NotDurable` (the API's 503) and may retry. If
even cutting back fails, this worker never appends to that file again; the uncommitted tail is cut
off by the next worker start or forget. A crash between the append and the commit leaves bytes
past the committed size too: they were never acknowledged, and are cut off the same way.

Forget. `forget_user` takes a deletion time from the clock, rewrites the files holding the user's
lines (temp file fsynced, renamed over, folder fsynced), drops the user's ids and records the
deletion in ``landing/deletions.jsonl`` (``user_id``, ``deleted_at``), all under the write
transaction. Its cost follows the user's files, not the size of the whole log.

Time. ``received_at`` and ``deleted_at`` come from the one clock in the index, advanced under the
write transaction to max(now, last + 1 µs): on one host, an event appended before a deletion has
``received_at < deleted_at``, one appended after has a later one, whichever workers handled them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rtrec.durable import TornFile, append_durably, cut_back, fsync_dir, write_all
from rtrec.settings import Settings
from rtrec.shared_log import from_micros, iso, micros
from rtrec.sqlite_online_store import CHUNK
from rtrec.writer_turn import open_turn, writer_turn

log = logging.getLogger("rtrec.serving")

DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024
INDEX_WAIT_SECONDS = 30  # for a turn to write the index, then `NotDurable`
SCHEMA = (
    "create table if not exists event_ids (event_id text primary key, user_id text)",
    "create index if not exists event_ids_by_user on event_ids (user_id)",
    "create table if not exists user_files (user_id text, file text, primary key (user_id, file)) without rowid",
    "create index if not exists user_files_by_file on user_files (file)",
    "create table if not exists files (file text primary key, size integer not null, ours integer not null)",
    "create table if not exists clock (id integer primary key check (id = 0), last_us integer not null)",
    "create table if not exists pending_forgets (user_id text primary key, deleted_at_us integer not null)",
)


class NotDurable(Exception):
    """The events could not be made durable. Nothing of the call was kept (the log and its index
    are as they were before it), so retrying the same events is safe."""


@dataclass
class _Call:
    """One caller's events waiting for a group commit, and its answer once `done`."""

    events: list[dict]
    logged: list[dict] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


@dataclass(frozen=True)
class Forgetting:
    """What `forget_user` did: the lines it removed and the deletion time it recorded."""

    removed: int
    deleted_at: datetime


def _reason(err: BaseException) -> str:
    """What went wrong, for a client: the errno's name and text, never a path."""
    if isinstance(err, TornFile) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, OSError) and err.errno:
        return f"{errno.errorcode.get(err.errno, err.errno)}: {os.strerror(err.errno)}"
    return f"{type(err).__name__}: {err}" if isinstance(err, sqlite3.Error) else type(err).__name__


def _user_of(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:  # a line that does not parse cannot be attributed; dbt quarantines it
        return None
    return record.get("user_id") if isinstance(record, dict) else None


class FeedbackLog:
    def __init__(self, feedback_dir: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.dir = feedback_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.deletions = self.dir.parent / "deletions.jsonl"
        self.max_file_bytes = max_file_bytes
        self.tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path: Path | None = None  # the file this worker appends to; a new one is started when None
        self.seq = 0
        # shared by the request threads of this worker; the mutex keeps them off it one at a time
        self.index = sqlite3.connect(
            self.dir / "event_ids.sqlite", timeout=INDEX_WAIT_SECONDS, isolation_level=None, check_same_thread=False
        )
        self.turn = open_turn(self.dir / "event_ids.sqlite")
        self.mutex = threading.Lock()
        # appends not taken into a group yet, and whether a group is being committed (under `queue`)
        self.waiting: list[_Call] = []
        self.leading = False
        self.queue = threading.Condition()
        self.index.execute("pragma journal_mode=wal")
        for statement in SCHEMA:
            self.index.execute(statement)
        # reads of pending deletions (every recommendation) never wait behind an append's fsync
        self.reader = sqlite3.connect(
            self.dir / "event_ids.sqlite", timeout=INDEX_WAIT_SECONDS, check_same_thread=False
        )
        self.reader_mutex = threading.Lock()
        with self.mutex:
            self._transaction(self._sync)

    # -- transactions -------------------------------------------------------------------------

    def _transaction(self, work, *args):
        """Run `work` inside one write transaction of the index (one writer across all workers)."""
        with self._turn():
            self.index.execute("begin immediate")
            try:
                result = work(*args)
                self.index.execute("commit")
            except BaseException:
                self._rollback()
                raise
        return result

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """This worker's turn to write the index, among every process that does (rtrec/writer_turn.py)."""
        with writer_turn(self.turn, INDEX_WAIT_SECONDS, sqlite3.OperationalError):
            yield

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # no transaction left: SQLite rolled it back itself
            self.index.execute("rollback")

    def _tick(self) -> datetime:
        """The next time of the clock: now, or 1 µs after the last one handed out when that is later."""
        row = self.index.execute("select last_us from clock where id = 0").fetchone()
        now = time.time_ns() // 1000
        issued = max(now, row[0] + 1) if row else now
        self.index.execute(
            "insert into clock (id, last_us) values (0, ?) on conflict (id) do update set last_us = excluded.last_us",
            (issued,),
        )
        return from_micros(issued)

    # -- the folder and the index -------------------------------------------------------------

    def _sync(self) -> None:
        """Bring the index in line with the folder (in a write transaction): cut the uncommitted
        tail off our files, and index the users of any file it does not know as it is (files from
        before the index recorded them, or written by something else)."""
        known = {file: (size, ours) for file, size, ours in self.index.execute("select file, size, ours from files")}
        present = set()
        for path in sorted(self.dir.glob("*.jsonl")):
            present.add(path.name)
            size = path.stat().st_size
            committed, ours = known.get(path.name, (None, 0))
            if ours and size > committed and cut_back(path, committed):
                log.warning("cut %s back to its last committed size, %d bytes", path.name, committed)
            elif size != committed:
                self._adopt(path, ours)
        for gone in known.keys() - present:
            self.index.execute("delete from files where file = ?", (gone,))
            self.index.execute("delete from user_files where file = ?", (gone,))

    def _adopt(self, path: Path, ours: int) -> None:
        data = path.read_bytes()
        users = {_user_of(line) for line in data.splitlines()} - {None}
        self.index.execute("delete from user_files where file = ?", (path.name,))
        self.index.executemany("insert into user_files values (?, ?)", [(u, path.name) for u in users])
        self._record_size(path.name, len(data), ours)

    def _record_size(self, file: str, size: int, ours: int = 1) -> None:
        self.index.execute(
            "insert into files values (?, ?, ?) on conflict (file) do update set size = excluded.size",
            (file, size, ours),
        )

    def _start_file(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self.dir / f"api-{stamp}-{self.tag}-{uuid.uuid4().hex[:6]}.jsonl"

        def create() -> None:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            fsync_dir(self.dir)  # the new name is durable before any line is acknowledged in it
            self._record_size(path.name, 0)

        self._transaction(create)
        self.path, self.seq = path, 0

    # -- appending ----------------------------------------------------------------------------

    def append(self, events: list[dict]) -> list[dict]:
        """Durably append the events whose ids were never accepted; returns them as logged, each
        with its `received_at` (ISO-8601 UTC, one per group commit) and `seq`. Raises `NotDurable`
        when they could not be made durable; nothing of the call is kept then."""
        call = _Call(events)
        with self.queue:
            self.waiting.append(call)
            while not call.done and self.leading:  # a group is being committed: ours may be in it
                self.queue.wait()
            if not call.done:  # not taken: this call leads every call waiting now
                self.leading = True
                group, self.waiting = self.waiting, []
        if not call.done:
            try:
                with self.mutex:
                    self._commit_group(group)
            finally:
                with self.queue:
                    self.leading = False
                    self.queue.notify_all()
        if call.error is not None:
            raise call.error
        return call.logged

    def _commit_group(self, group: list[_Call]) -> None:
        """Append the calls of `group` in one transaction and answer each (under the mutex). Each
        call of a failed group gets its own `NotDurable`; an error that is not the log's (a bug)
        is raised in the leading call too."""
        try:
            if self.path is None:
                self._start_file()
            for call, logged in zip(group, self._append([call.events for call in group])):
                call.logged = logged
        except BaseException as err:
            if isinstance(err, OSError | sqlite3.Error):
                log.exception("feedback append failed")
            for call in group:
                call.error = NotDurable(f"the feedback log could not be written ({_reason(err)})")
                call.error.__cause__ = err
            if not isinstance(err, OSError | sqlite3.Error):
                raise
        finally:
            for call in group:
                call.done = True

    def _never_accepted(self, calls: list[list[dict]]) -> list[list[dict]]:
        """The events of each call whose ids the index does not hold; an id repeated across the
        calls counts for the first (in a write transaction)."""
        ids = list({e["event_id"] for events in calls for e in events})
        seen = set()
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            seen.update(
                row[0]
                for row in self.index.execute(f"select event_id from event_ids where event_id in ({marks})", chunk)
            )
        fresh = [[] for _ in calls]
        for events, kept in zip(calls, fresh):
            for event in events:
                if event["event_id"] not in seen:
                    kept.append(event)
                    seen.add(event["event_id"])
        return fresh

    def _append(self, calls: list[list[dict]]) -> list[list[dict]]:
        """Log the never accepted events of each call in one transaction; returns them per call."""
        path = self.path
        size = end = None
        with self._turn():
            self.index.execute("begin immediate")
            try:
                fresh = self._never_accepted(calls)
                logged = [[] for _ in calls]
                if any(fresh):
                    received_at = iso(self._tick())
                    for kept, out in zip(fresh, logged):
                        for event in kept:
                            # never reused, even if this append fails: (file, seq) names one line for good
                            self.seq += 1
                            out.append({**event, "received_at": received_at, "seq": self.seq})
                    records = [record for out in logged for record in out]
                    data = "".join(json.dumps(record) + "\n" for record in records).encode()
                    size = append_durably(path, data)
                    self.index.executemany(
                        "insert into event_ids values (?, ?)", [(e["event_id"], e["user_id"]) for e in records]
                    )
                    self.index.executemany(
                        "insert or ignore into user_files values (?, ?)", {(e["user_id"], path.name) for e in records}
                    )
                    end = size + len(data)
                    self._record_size(path.name, end)
                self.index.execute("commit")
            except BaseException as err:
                self._rollback()
                if isinstance(err, TornFile) or (size is not None and not cut_back(path, size)):
                    self.path = None  # never append to a file that ends in a write we could not undo
                raise
        if end is not None and end >= self.max_file_bytes:
            self.path = None  # rotate: the next append starts a new file
        return logged

    # -- forgetting ---------------------------------------------------------------------------

    def forget_user(self, user_id: str) -> Forgetting:
        """Remove the user's lines from the feedback files that hold them and record the deletion,
        so the next batch run drops the user's history from the warehouse too. Returns the lines
        removed and the deletion time recorded: events appended before it have an earlier
        `received_at`, events appended after it a later one."""
        with self.mutex, self._turn():
            self.index.execute("begin immediate")
            recorded = None
            try:
                self._sync()
                deleted_at = self._tick()
                files = self.index.execute("select file from user_files where user_id = ?", (user_id,)).fetchall()
                removed = sum(self._rewrite_without(self.dir / file, user_id) for (file,) in files)
                self.index.execute("delete from user_files where user_id = ?", (user_id,))
                self.index.execute("delete from event_ids where user_id = ?", (user_id,))
                self.index.execute(
                    "insert into pending_forgets values (?, ?) on conflict (user_id) do update "
                    "set deleted_at_us = max(deleted_at_us, excluded.deleted_at_us)",
                    (user_id, micros(deleted_at)),
                )
                record = json.dumps({"user_id": user_id, "deleted_at": iso(deleted_at)}) + "\n"
                recorded = append_durably(self.deletions, record.encode())
                self.index.execute("commit")
            except BaseException:
                self._rollback()
                if recorded is not None:  # no deletion on record that the index does not hold
                    cut_back(self.deletions, recorded)
                raise
        return Forgetting(removed, deleted_at)

    # -- deletions whose online part is pending -----------------------------------------------

    def pending_forgets_of(self, user_ids: Sequence[str]) -> dict[str, datetime]:
        """The latest deletion of each of `user_ids` whose online part is not done yet (users
        without one are left out), in one query per `CHUNK` users."""
        ids, rows = list(dict.fromkeys(user_ids)), []
        with self.reader_mutex:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                query = f"select user_id, deleted_at_us from pending_forgets where user_id in ({marks})"
                rows += self.reader.execute(query, chunk).fetchall()
        return {user: from_micros(us) for user, us in rows}

    def pending_forgets(self) -> list[tuple[str, datetime]]:
        with self.reader_mutex:
            rows = self.reader.execute("select user_id, deleted_at_us from pending_forgets").fetchall()
        return [(user, from_micros(us)) for user, us in rows]

    def forgotten_online(self, user_id: str, deleted_at: datetime) -> None:
        """The online store holds the deletion of `deleted_at` (or a later one): it is no longer
        pending. A failure is logged, not raised: the entry stays, and finishing it again is harmless."""
        try:
            with self.mutex:
                self._transaction(
                    lambda: self.index.execute(
                        "delete from pending_forgets where user_id = ? and deleted_at_us <= ?",
                        (user_id, micros(deleted_at)),
                    )
                )
        except sqlite3.Error as err:
            log.warning("a finished deletion stays marked pending: %s", err)

    def _rewrite_without(self, path: Path, user_id: str) -> int:
        """Rewrite `path` without the user's lines: temp file fsynced, renamed over, folder fsynced."""
        lines = path.read_bytes().splitlines(keepends=True)
        kept = [line for line in lines if _user_of(line) != user_id]
        if len(kept) == len(lines):
            return 0
        data = b"".join(kept)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(self.dir)
        self._record_size(path.name, len(data))
        return len(lines) - len(kept)


def open_feedback_log(settings: Settings):
    """The feedback log the settings name: this host's files, or the log all hosts share in Redis."""
    if settings.feedback_log == "redis":
        from serving.shared_feedback_log import RedisFeedbackLog

        return RedisFeedbackLog(settings.feedback_log_url, settings.redis_timeout_seconds)
    return FeedbackLog(settings.feedback_dir, settings.feedback_file_max_bytes)
