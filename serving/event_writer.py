"""The write path of one worker: the events of concurrent POSTs, logged and pushed online together.

POST handlers run on the event loop: they validate, hand their events to the worker's
`EventWriter` and wait. One thread writes. It takes every call waiting (up to MAX_GROUP_EVENTS
events), appends their events to the feedback log in one group commit, durable before any of them
is answered, then pushes the events the log accepted to their users' online states in one turn
(`push_events`: the users' locks, one read, one write). Calls arriving meanwhile wait for the
next turn. A burst of requests costs one round of fsyncs and one store transaction, not one per
request, and the handlers do not take turns on the GIL in a thread pool: at saturation the
thread-pool handlers left a worker half idle, waiting on locks whose holders waited for the GIL.

An online update that fails costs freshness, never the event: it is durable already, the failure
is counted (`rtrec_online_write_failures_total`, per event) and the nightly run brings it online.
When a turn's update finds a lock busy, each of its users is tried on their own, so one user's
busy lock is not every user's failure.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from rtrec.online_state import LockTimeout, Push, StoreUnavailable, UserLocks, UserStateTable, push_events
from rtrec.settings import Settings
from rtrec.sqlite_online_store import StoreBusy
from serving import metrics
from serving.feedback_log import NotDurable

log = logging.getLogger("rtrec.serving")
MAX_GROUP_EVENTS = 1000  # per turn: a turn's latency stays bounded under overload


class EventWriter:
    def __init__(self, feedback, table: UserStateTable, locks: UserLocks, settings: Settings) -> None:
        self.feedback, self.table, self.locks, self.settings = feedback, table, locks, settings
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="event-writer")
        self.waiting: list[tuple[list[dict], asyncio.Future]] = []
        self.turns: asyncio.Task | None = None  # the task running the turns while calls wait

    async def write(self, events: list[dict]) -> list[dict]:
        """Make the events (`Event.to_log()`) durable, then push them online; returns those the log
        had never accepted, as logged. Raises `NotDurable` when the log could not keep them:
        nothing of the call was kept then, and a retry is safe."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((events, future))
        if self.turns is None:
            self.turns = asyncio.create_task(self._take_turns())
        return await future

    async def close(self) -> None:
        """Let the turns finish (every call taken is answered), then stop the thread."""
        while self.turns is not None:
            await asyncio.shield(self.turns)
        await asyncio.to_thread(self.thread.shutdown)

    async def _take_turns(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                group = self._next_group()
                try:
                    written = await loop.run_in_executor(self.thread, self._write, [events for events, _ in group])
                except Exception as err:
                    for _, future in group:
                        if not future.done():  # a request that went away is not answered
                            future.set_exception(_own(err))
                    continue
                for (_, future), logged in zip(group, written):
                    if not future.done():
                        future.set_result(logged)
        finally:
            self.turns = None

    def _next_group(self) -> list[tuple[list[dict], asyncio.Future]]:
        """The calls of the next turn: the oldest waiting ones, up to MAX_GROUP_EVENTS events (at least one call)."""
        size, count = 0, 0
        for events, _ in self.waiting:
            if count and size + len(events) > MAX_GROUP_EVENTS:
                break
            size, count = size + len(events), count + 1
        group, self.waiting = self.waiting[:count], self.waiting[count:]
        return group

    def _write(self, calls: list[list[dict]]) -> list[list[dict]]:
        """One turn, on the writer thread: the calls' events logged in one group commit, then pushed."""
        fresh = {record["event_id"]: record for record in self.feedback.append([e for events in calls for e in events])}
        logged = []
        for events in calls:  # an id repeated across the calls was accepted for the first of them
            logged.append([fresh.pop(e["event_id"]) for e in events if e["event_id"] in fresh])
        records = [record for records in logged for record in records]
        try:
            self._push(records)
        except Exception:  # durable already: an update that fails costs freshness, never the answer
            metrics.ONLINE_WRITE_FAILURES.inc(len(records))
            log.exception("online update failed for %d events", len(records))
        return logged

    def _push(self, records: list[dict]) -> None:
        if not records:
            return
        # a deletion the online store may not hold yet: the write carries its tombstone
        users = list(dict.fromkeys(r["user_id"] for r in records))
        pending = self.feedback.pending_forgets_of(users)
        pushes = [
            Push(
                r["user_id"],
                r["item_id"],
                r["event_type"],
                datetime.fromisoformat(r["ts"]),
                datetime.fromisoformat(r["received_at"]),
                pending.get(r["user_id"]),
            )
            for r in records
        ]
        try:
            self._try_push(pushes)
        except (LockTimeout, StoreBusy) as err:  # raised before anything was written: each user on their own
            if len(users) == 1:
                self._failed(len(pushes), err)
                return
            for user_id in users:
                mine = [p for p in pushes if p.user_id == user_id]
                try:
                    self._try_push(mine)
                except (LockTimeout, StoreBusy) as err:
                    self._failed(len(mine), err)

    def _try_push(self, pushes: list[Push]) -> None:
        """`push_events`; a store known to be down is counted here, not retried (on Redis a batch may
        be half written: its events would be added twice)."""
        try:
            push_events(
                self.table, self.locks, pushes, self.settings.max_recent_items, max_seen=self.settings.max_seen_items
            )
        except StoreUnavailable as err:
            self._failed(len(pushes), err)
            return
        for user_id, since in {p.user_id: p.forgotten_since for p in pushes}.items():
            if since is not None:  # the online store holds the deletion now
                self.feedback.forgotten_online(user_id, since)

    @staticmethod
    def _failed(count: int, err: Exception) -> None:
        metrics.ONLINE_WRITE_FAILURES.inc(count)
        log.warning("online update failed for %d events: %s", count, err)


def _own(err: Exception) -> Exception:
    """A call's own copy of a turn's failure (one exception object raised in several requests
    would gather their tracebacks): `NotDurable` stays one, anything else is a bug of the turn."""
    failure = NotDurable(str(err)) if isinstance(err, NotDurable) else RuntimeError(f"event write failed: {err!r}")
    failure.__cause__ = err
    return failure
