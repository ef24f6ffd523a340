"""The online user state: how it is read, and the real-time write path.

Serving reads and writes it through `UserStateTable`, straight through the Feast provider.
`read_online` reads it as any application would, through `FeatureStore.get_online_features`,
together with the item stats of the items it is given; tests and benchmarks read through it.

A write is read-modify-write of the user's recent-items list, so two events for one user arriving
together could lose one. Every write for a user therefore holds that user's lock: a Redis lock when
the online store is Redis (it holds across hosts), otherwise an exclusive file lock on one of a
fixed set of stripe files (it holds across the worker processes of one host). A lock is waited on
for a bounded time (`LockTimeout` after it): the event is durable already, so a busy lock costs an
online update, never a stalled request. A batch of events (`push_events`) holds the locks of all
its users, taken in one order, so two batches never wait on each other in a cycle.

Redis ignores a write whose Feast event timestamp is not newer than the stored one, and Feast
reads stored timestamps back in whole seconds. So, inside the lock, a pushed row is stamped with
the current second or the stored one plus a second, whichever is later: a per-user logical clock
that a burst of events may run a few seconds ahead of the wall clock. The user's real last event
time is the `last_event_ts` feature.

Forgetting a user leaves a tombstone: the row is emptied and keeps, in a field outside the view's
schema (`forgotten_at`, invisible to Feast readers), the deletion time. What a deletion forgot stays
forgotten: a push of an event received at or before that time is skipped, under the user's lock,
so a push racing a DELETE can never bring the user back; events received later start a new history.
The nightly run removes forgotten users' rows entirely (`remove_user_keys`).

Every call to the online store goes through a per-process `CircuitBreaker`: after a failure, calls
fail at once (`StoreUnavailable`) for a cooldown, then one trial call decides whether the store is
back. A store that is down costs one timeout per process, not one per event.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import StringList, Value
from feast.type_map import NULL_TIMESTAMP_INT_VALUE

from rtrec.events import STRENGTH
from rtrec.sqlite_online_store import CHUNK, StoreBusy

USER_STATE = ("recent_items", "recent_event_types", "last_event_ts", "seen_items", "seen_event_types")
ITEM_STATS = ("category", "price", "popularity_all", "popularity_7d", "purchase_rate")
FORGOTTEN_AT = "forgotten_at"  # the tombstone's field: stored in the user's row, not a feature of the view
LOCK_STRIPES = 256
LOCK_EXPIRY_SECONDS = 10  # a Redis lock whose holder died frees itself after this
BREAKER_COOLDOWN_SECONDS = 2.0

log = logging.getLogger("rtrec.online_state")


class StoreUnavailable(RuntimeError):
    """The online store failed recently: the call was not made (the circuit breaker is open)."""


class LockTimeout(TimeoutError):
    """The user's lock was not acquired within the wait."""


class LockExpired(RuntimeError):
    """A Redis user lock expired before its holder released it."""


@dataclass
class UserState:
    user_id: str
    recent_items: list[str] = field(default_factory=list)
    recent_event_types: list[str] = field(default_factory=list)
    last_event_ts: datetime | None = None
    stored_at: datetime | None = None  # Feast event timestamp of the stored row
    forgotten_at: datetime | None = None  # the user's last deletion: events received until then stay out
    seen_items: list[str] = field(default_factory=list)  # every item interacted with, first seen first
    seen_event_types: list[str] = field(default_factory=list)  # the strongest event type on each, aligned

    @property
    def known(self) -> bool:
        return bool(self.recent_items)

    def excluded(self, repeatable: Iterable[str] = ()) -> set[str]:
        """Items not to recommend again: every item seen, except those whose strongest event type
        is in `repeatable` (a shop of consumables lets purchases come back)."""
        repeatable = set(repeatable)
        pairs = [*zip(self.seen_items, self.seen_event_types), *zip(self.recent_items, self.recent_event_types)]
        return {item for item, event_type in pairs if event_type not in repeatable}

    def seen(self) -> set[str]:
        """Every item the user has interacted with (as far as the seen set keeps them)."""
        return {*self.seen_items, *self.recent_items}

    def history(self) -> list[tuple[str, str]]:
        return list(zip(self.recent_items, self.recent_event_types))


def _ts(value) -> datetime | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_online(store: FeatureStore, user_id: str, item_ids: Sequence[str] = ()) -> tuple[UserState, dict[str, dict]]:
    """The user's state and the item_stats of `item_ids`, in one read through Feast's public API."""
    rows = [{"user_id": user_id, "item_id": i} for i in item_ids] or [{"user_id": user_id, "item_id": ""}]
    features = [f"user_state:{f}" for f in USER_STATE] + [f"item_stats:{f}" for f in ITEM_STATS]
    got = store.get_online_features(features=features, entity_rows=rows).to_dict(include_event_timestamps=True)
    state = UserState(
        user_id,
        list(got["recent_items"][0] or []),
        list(got["recent_event_types"][0] or []),
        _ts(got["last_event_ts"][0]),
        _ts(got.get("recent_items__ts", [None])[0]),
        seen_items=list(got["seen_items"][0] or []),
        seen_event_types=list(got["seen_event_types"][0] or []),
    )
    items = {
        item: {f: got[f][row] for f in ITEM_STATS}
        for row, item in enumerate(item_ids)
        if got["category"][row] is not None
    }
    return state, items


def appended(state: UserState, item_id: str, event_type: str, max_len: int) -> tuple[list[str], list[str]]:
    """The state's lists after one more event: a repeat of the last item (the next funnel step)
    upgrades that interaction's type instead of adding one, as dbt's int_interactions does."""
    items, types = list(state.recent_items), list(state.recent_event_types)
    if items and items[-1] == item_id:
        if STRENGTH.get(event_type, 0) > STRENGTH.get(types[-1], 0):
            types[-1] = event_type
    else:
        items.append(item_id)
        types.append(event_type)
    return items[-max_len:], types[-max_len:]


def seen_after(
    state: UserState, item_id: str, event_type: str, max_seen: int | None = None
) -> tuple[list[str], list[str]]:
    """The state's seen lists after one more event: a new item is added last (the oldest dropped
    past `max_seen`), a seen one keeps its place and its strongest event type."""
    items, types = list(state.seen_items), list(state.seen_event_types)
    if item_id in items:
        at = items.index(item_id)
        if STRENGTH.get(event_type, 0) > STRENGTH.get(types[at], 0):
            types[at] = event_type
    else:
        items.append(item_id)
        types.append(event_type)
    if max_seen is not None:
        items, types = items[-max_seen:], types[-max_seen:]
    return items, types


class CircuitBreaker:
    """Fail fast while the online store is down; per process, thread-safe.

    closed: calls go through. A failed call opens it: for `cooldown` seconds every call fails at
    once with `StoreUnavailable`. Then it is half-open: one trial call goes through (the others
    still fail fast); its success closes the breaker, its failure opens it for another cooldown.
    A `LockTimeout` or a busy database (`StoreBusy`) says nothing about the store being down and
    changes nothing. `on_change(state)` hears
    every change of state, `on_reject()` every call failed fast (serving counts them)."""

    CLOSED, HALF_OPEN, OPEN = "closed", "half-open", "open"

    def __init__(
        self,
        cooldown: float = BREAKER_COOLDOWN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], Any] | None = None,
        on_reject: Callable[[], Any] | None = None,
    ) -> None:
        self.cooldown, self.clock = cooldown, clock
        self.on_change, self.on_reject = on_change, on_reject
        self._state, self._opened_at, self._trial = self.CLOSED, 0.0, False
        self._mutex = threading.Lock()

    @property
    def state(self) -> str:
        with self._mutex:
            if self._state == self.OPEN and self.clock() - self._opened_at >= self.cooldown:
                return self.HALF_OPEN  # the next call is the trial
            return self._state

    @contextmanager
    def guard(self) -> Iterator[None]:
        """One call to the store: raises `StoreUnavailable` without running it while open."""
        trial = self._admit()
        try:
            yield
        except (LockTimeout, StoreBusy):  # busy, not down
            self._settle(None, trial)
            raise
        except Exception as err:
            self._settle(False, trial, err)
            raise
        except BaseException:
            self._settle(None, trial)
            raise
        self._settle(True, trial)

    def _admit(self) -> bool:
        with self._mutex:
            if self._state == self.CLOSED:
                return False
            if self._state == self.OPEN and self.clock() - self._opened_at >= self.cooldown:
                self._set(self.HALF_OPEN)
            if self._state == self.HALF_OPEN and not self._trial:
                self._trial = True
                return True
            left = max(0.0, self.cooldown - (self.clock() - self._opened_at))
        if self.on_reject:
            self.on_reject()
        raise StoreUnavailable(f"online store unavailable: failing fast (circuit {self._state}, retry in {left:.1f} s)")

    def _settle(self, ok: bool | None, trial: bool, err: Exception | None = None) -> None:
        with self._mutex:
            if trial:
                self._trial = False
            if ok is False:
                self._opened_at = self.clock()
                if self._state != self.OPEN:
                    log.warning(
                        "online store call failed (%s): failing fast for %.1f s", type(err).__name__, self.cooldown
                    )
                self._set(self.OPEN)
            elif ok and trial:
                log.warning("online store answers again: circuit closed")
                self._set(self.CLOSED)

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self.on_change:
                self.on_change(state)


# deletes each of KEYS still holding its token (ARGV, in order): the locks this holder took and still
# owns; returns how many it deleted (a lock that expired meanwhile may be another holder's now). Its
# keys span hash slots: one Redis node, as the lock client is (no cluster, no sharding proxy)
RELEASE_LOCKS = """
local released = 0
for i, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[i] then
    redis.call('del', key)
    released = released + 1
  end
end
return released
"""


class UserLocks:
    """Per-user mutual exclusion across processes (file stripes) or hosts (Redis), each waited on
    for at most `wait` seconds (default: the Redis socket timeout).

    A Redis lock is a key set to a token of its holder's (`SET NX PX`), deleted by that holder
    only. The locks of a batch are tried in one round trip and released in one."""

    def __init__(
        self,
        lock_dir: Path | None = None,
        redis_url: str | None = None,
        timeout: float = 0.5,
        wait: float | None = None,
    ) -> None:
        self.lock_dir, self.redis = lock_dir, None
        self.wait = timeout if wait is None else wait
        if redis_url:
            import redis

            # fail fast when Redis is down (no backoff retries): the event is durable already
            self.redis = redis.Redis.from_url(
                redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=None
            )
            self._release_locks = self.redis.register_script(RELEASE_LOCKS)
        else:
            lock_dir.mkdir(parents=True, exist_ok=True)

    def acquire(self, user_id: str) -> Any:
        """The user's lock, held: a handle for `release`. `LockTimeout` when it stays busy."""
        return self._acquire(self._lock_of(user_id), time.monotonic() + self.wait)

    def acquire_all(self, user_ids: Iterable[str]) -> list[Any]:
        """The locks of all of `user_ids`, held: handles for `release_all`. They are taken in one
        order (so two callers wanting some of the same locks never wait on each other), each lock
        once (users of one file stripe share it), all within one `wait` (a Redis lock taken first
        must not expire before the last); on a `LockTimeout` none stays held. Redis locks are
        first tried all at once: when one is busy, those taken are given back and each is waited
        for in order."""
        deadline, handles = time.monotonic() + self.wait, []
        locks = sorted({self._lock_of(user_id) for user_id in user_ids})
        try:
            if self.redis is not None and len(locks) > 1:
                handles = self._take_free(locks)
            if not handles:
                for lock in locks:
                    handles.append(self._acquire(lock, deadline))
        except BaseException:
            with contextlib.suppress(Exception):  # the error to raise is the one that stopped us
                self.release_all(handles)
            raise
        return handles

    def _lock_of(self, user_id: str) -> str | int:
        """What the user's lock is: its Redis key, or its stripe file's number."""
        if self.redis is not None:
            return f"rtrec:user-lock:{user_id}"
        return zlib.crc32(user_id.encode()) % LOCK_STRIPES

    def _take_free(self, keys: list[str]) -> list[tuple[str, str]]:
        """Every one of the Redis locks `keys` in one round trip, or none held when one was busy."""
        tokens = [uuid.uuid4().hex for _ in keys]
        pipe = self.redis.pipeline(transaction=False)
        for key, token in zip(keys, tokens):
            pipe.set(key, token, nx=True, px=int(LOCK_EXPIRY_SECONDS * 1000))
        try:
            taken = pipe.execute()
        except BaseException:  # Redis may have applied some SETs: give back whatever holds our tokens
            with contextlib.suppress(Exception):
                self._release_locks(keys=keys, args=tokens)
            raise
        held = [(key, token) for key, token, ok in zip(keys, tokens, taken) if ok]
        if len(held) == len(keys):
            return held
        self.release_all(held)
        return []

    def _acquire(self, lock: str | int, deadline: float) -> Any:
        busy = f"a user lock stayed busy for {self.wait:.2f} s"
        if self.redis is not None:
            token = uuid.uuid4().hex
            while not self.redis.set(lock, token, nx=True, px=int(LOCK_EXPIRY_SECONDS * 1000)):
                if time.monotonic() >= deadline:
                    raise LockTimeout(busy)
                time.sleep(0.005)
            return lock, token
        fd = os.open(self.lock_dir / f"user-{lock:03d}.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        pause = 0.001
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise LockTimeout(busy) from None
                    time.sleep(min(pause, left))
                    pause = min(pause * 2, 0.01)
        except BaseException:
            os.close(fd)
            raise

    def release(self, handle: Any) -> None:
        self.release_all([handle])

    def release_all(self, handles: Iterable[Any]) -> None:
        """Release every one of `handles` (the Redis ones in one call); a failure is raised once
        all were tried. A Redis lock that expired before its release is an error: another holder
        may have taken it, and the work under it was not exclusive to the end."""
        handles = list(handles)
        if self.redis is not None:
            if handles:
                keys, tokens = zip(*handles)
                released = self._release_locks(keys=list(keys), args=list(tokens))
                if released != len(handles):
                    raise LockExpired(f"{len(handles) - released} of {len(handles)} user locks expired before release")
            return
        failure = None
        for handle in handles:
            try:
                try:
                    fcntl.flock(handle, fcntl.LOCK_UN)
                finally:
                    os.close(handle)
            except Exception as err:
                failure = err
        if failure is not None:
            raise failure

    @contextmanager
    def hold(self, user_id: str) -> Iterator[None]:
        handle = self.acquire(user_id)
        try:
            yield
        finally:
            self.release(handle)


def next_version(state: UserState, now: datetime) -> datetime:
    """A Feast event timestamp strictly newer, in whole seconds, than the stored row's."""
    now = now.replace(microsecond=0)
    return max(now, state.stored_at + timedelta(seconds=1)) if state.stored_at else now


class UserStateTable:
    """Reads and writes of the user_state view straight through the Feast provider.

    `FeatureStore.push` and the read after it rebuild every feature view from the registry on each
    call (~5 ms each, most of a write's time); the view is resolved here once instead. The rows are
    the ones the push source would write: the same view, entity key and value types, plus the
    tombstone field once the user was forgotten. Every call goes through `breaker`."""

    def __init__(self, store: FeatureStore, breaker: CircuitBreaker | None = None) -> None:
        self.config, self.provider = store.config, store.provider
        self.view = store.get_feature_view("user_state")
        self.breaker = breaker or CircuitBreaker()

    @staticmethod
    def key(user_id: str) -> EntityKey:
        return EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user_id)])

    def read(self, user_id: str) -> UserState:
        return self.read_many([user_id])[0]

    def read_many(self, user_ids: Sequence[str]) -> list[UserState]:
        """The states of `user_ids`, in their order, in one call to the store per CHUNK of them."""
        rows = []
        for start in range(0, len(user_ids), CHUNK):  # SQLite limits the parameters of one statement
            keys = [self.key(user_id) for user_id in user_ids[start : start + CHUNK]]
            with self.breaker.guard():
                rows += self.provider.online_read(self.config, self.view, keys, [*USER_STATE, FORGOTTEN_AT])
        return [self._state(user_id, stored_at, values) for user_id, (stored_at, values) in zip(user_ids, rows)]

    @staticmethod
    def _state(user_id: str, stored_at, values: dict[str, Value] | None) -> UserState:
        """The user's row read from its protos, whose types the view fixes (string lists, a unix
        timestamp, the tombstone's string): Feast's generic conversion, both ways, took a fifth of
        the POST path's CPU in a profile."""
        present = {name: value for name, value in (values or {}).items() if value.WhichOneof("val")}
        if not present:  # no row (Redis answers a missing key with empty values)
            return UserState(user_id)

        def strings(name: str) -> list[str]:
            return list(present[name].string_list_val.val) if name in present else []

        last = present.get("last_event_ts")
        last_ts = last.unix_timestamp_val if last is not None else NULL_TIMESTAMP_INT_VALUE
        forgotten = present.get(FORGOTTEN_AT)
        return UserState(
            user_id,
            strings("recent_items"),
            strings("recent_event_types"),
            None if last_ts == NULL_TIMESTAMP_INT_VALUE else datetime.fromtimestamp(last_ts, UTC),
            _ts(stored_at),
            datetime.fromisoformat(forgotten.string_val) if forgotten is not None and forgotten.string_val else None,
            strings("seen_items"),
            strings("seen_event_types"),
        )

    def write(self, state: UserState) -> None:
        self.write_many([state])

    def write_many(self, states: Sequence[UserState]) -> None:
        """Write the rows of `states` (one per user) in one call to the store: one transaction on SQLite."""
        with self.breaker.guard():
            self.provider.online_write_batch(
                self.config,
                self.view,
                [(self.key(s.user_id), self._values(s), s.stored_at, None) for s in states],
                None,
            )

    @staticmethod
    def _values(state: UserState) -> dict[str, Value]:
        """The protos of the user's row, the messages Feast's own conversion gives (see `_state`)."""
        values = {
            "recent_items": Value(string_list_val=StringList(val=state.recent_items)),
            "recent_event_types": Value(string_list_val=StringList(val=state.recent_event_types)),
            "last_event_ts": Value(),  # no value: Feast's null
            "seen_items": Value(string_list_val=StringList(val=state.seen_items)),
            "seen_event_types": Value(string_list_val=StringList(val=state.seen_event_types)),
        }
        if state.last_event_ts is not None:  # whole seconds, as Feast's conversion truncates them
            values["last_event_ts"] = Value(unix_timestamp_val=int(_utc(state.last_event_ts).timestamp()))
        if state.forgotten_at is not None:  # carried along by every write, so every field has one timestamp
            values[FORGOTTEN_AT] = Value(string_val=_utc(state.forgotten_at).isoformat())
        return values


@contextmanager
def user_lock(table: UserStateTable, locks: UserLocks, user_id: str) -> Iterator[None]:
    """Hold the user's lock (`users_locked` for one user)."""
    with users_locked(table, locks, [user_id]):
        yield


@contextmanager
def users_locked(table: UserStateTable, locks: UserLocks, user_ids: Iterable[str]) -> Iterator[None]:
    """Hold the locks of all of `user_ids`. Taking a Redis lock is a call to the store: it goes
    through the table's breaker (a file lock too, harmlessly). A failed release is logged, not
    raised: the work under the locks is done, and a Redis lock frees itself after LOCK_EXPIRY_SECONDS."""
    with table.breaker.guard():
        handles = locks.acquire_all(user_ids)
    try:
        yield
    finally:
        try:
            locks.release_all(handles)
        except Exception as err:
            log.warning("releasing a user lock failed: %s", err)


@dataclass(frozen=True)
class Push:
    """One event for `push_events`. `received_at`: when the feedback log accepted it (default: the
    push's time); `forgotten_since`: a deletion of the user the online store may not hold yet."""

    user_id: str
    item_id: str
    event_type: str
    ts: datetime
    received_at: datetime | None = None
    forgotten_since: datetime | None = None


def push_event(
    table: UserStateTable,
    locks: UserLocks,
    user_id: str,
    item_id: str,
    event_type: str,
    ts: datetime,
    max_len: int,
    *,
    received_at: datetime | None = None,
    forgotten_since: datetime | None = None,
    max_seen: int | None = None,
) -> UserState | None:
    """`push_events` of one event."""
    push = Push(user_id, item_id, event_type, ts, received_at, forgotten_since)
    return push_events(table, locks, [push], max_len, max_seen=max_seen)[0]


def push_events(
    table: UserStateTable, locks: UserLocks, pushes: Sequence[Push], max_len: int, *, max_seen: int | None = None
) -> list[UserState | None]:
    """Append the events to their users' online states, in order; the next online read shows them.

    All of them take one turn: the users' locks, one read of their states, one write of the new
    ones (one transaction on SQLite), so a worker's concurrent events cost one round of each.
    Returns, per push, the user's state as written, or None when the event was skipped: an event
    received at or before the user's last deletion never brings forgotten history back. A
    `forgotten_since` newer than the stored deletion makes the state forgotten first, and the
    write carries the tombstone even when every event of the user is skipped. The seen set keeps
    up to `max_seen` items (default: all). Raises what the locks or the store raised: nothing was
    written after a `LockTimeout` or `StoreBusy`; after another store error, Redis (whose batch
    write is a pipeline, not a transaction) may hold some of the rows."""
    if not pushes:
        return []
    now = datetime.now(UTC)
    users = list(dict.fromkeys(push.user_id for push in pushes))
    with users_locked(table, locks, users):
        states = dict(zip(users, table.read_many(users)))
        changed, after = set(), []
        for push in pushes:
            state = states[push.user_id]
            received_at = _utc(push.received_at) if push.received_at is not None else now
            if push.forgotten_since is not None and (
                state.forgotten_at is None or state.forgotten_at < push.forgotten_since
            ):
                state = UserState(push.user_id, stored_at=state.stored_at, forgotten_at=_utc(push.forgotten_since))
                changed.add(push.user_id)
            if state.forgotten_at is not None and received_at <= state.forgotten_at:
                states[push.user_id] = state
                after.append(None)
                continue
            items, types = appended(state, push.item_id, push.event_type, max_len)
            seen, seen_types = seen_after(state, push.item_id, push.event_type, max_seen)
            last = max(filter(None, [state.last_event_ts, push.ts]))
            state = UserState(push.user_id, items, types, last, state.stored_at, state.forgotten_at, seen, seen_types)
            states[push.user_id] = state
            changed.add(push.user_id)
            after.append(state)
        # one new version per user, strictly newer than the stored row's (the reads' stored_at)
        versions = {user: next_version(states[user], now) for user in changed}
        if changed:
            table.write_many([replace(states[user], stored_at=versions[user]) for user in users if user in changed])
    return [None if state is None else replace(state, stored_at=versions[state.user_id]) for state in after]


def mark_forgotten(table: UserStateTable, user_id: str, deleted_at: datetime) -> UserState:
    """Replace the user's online state with a tombstone: no history, newer than anything stored,
    holding the latest deletion time. Call it holding the user's lock (`user_lock`)."""
    state = table.read(user_id)
    forgotten_at = max(filter(None, [state.forgotten_at, _utc(deleted_at)]))
    tombstone = UserState(user_id, [], [], None, next_version(state, datetime.now(UTC)), forgotten_at)
    table.write(tombstone)
    return tombstone


def forget_user(table: UserStateTable, locks: UserLocks, user_id: str, deleted_at: datetime | None = None) -> None:
    """Empty the user's online state and skip, from now on, events received until `deleted_at`
    (default: now)."""
    with user_lock(table, locks, user_id):
        mark_forgotten(table, user_id, deleted_at or datetime.now(UTC))


def remove_user_keys(store_or_table: FeatureStore | UserStateTable, user_ids: Iterable[str]) -> int:
    """Delete the users' rows, tombstones included, from the online store (SQLite or Redis):
    every online view keyed by user_id. Returns how many of the users had a row. For the nightly
    run, after the deletions have reached the warehouse; takes no user lock."""
    if isinstance(store_or_table, UserStateTable):
        config, online, views = store_or_table.config, store_or_table.provider.online_store, [store_or_table.view]
    else:
        config, online = store_or_table.config, store_or_table.provider.online_store
        views = [v for v in store_or_table.list_feature_views() if v.online and "user_id" in v.join_keys]
    keys = [UserStateTable.key(u) for u in dict.fromkeys(user_ids)]
    if not keys or not views:
        return 0
    version = config.entity_key_serialization_version
    removed = 0
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    if isinstance(online, RedisOnlineStore):
        from feast.infra.online_stores.helpers import _redis_key

        client = online._get_client(config.online_store)
        redis_keys = [_redis_key(config.project, k, entity_key_serialization_version=version) for k in keys]
        for start in range(0, len(redis_keys), 500):  # one Redis hash per user holds all of its views
            removed += client.delete(*redis_keys[start : start + 500])
        return removed
    if isinstance(online, SqliteOnlineStore):
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.sqlite import _quote_id, _table_id

        versioning = config.registry.enable_online_feature_view_versioning
        tables = [_quote_id(_table_id(config.project, view, versioning)) for view in views]
        binary = [serialize_entity_key(k, entity_key_serialization_version=version) for k in keys]
        # a connection of its own (Feast shares one among a process's threads): one write transaction
        with closing(sqlite3.connect(online._get_db_path(config), timeout=30, isolation_level=None)) as conn:
            conn.execute("begin immediate")
            try:
                for start in range(0, len(binary), 500):
                    chunk = binary[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    found: set[bytes] = set()
                    for table in tables:
                        query = f"select distinct entity_key from {table} where entity_key in ({marks})"
                        found |= {row[0] for row in conn.execute(query, chunk)}
                        conn.execute(f"delete from {table} where entity_key in ({marks})", chunk)
                    removed += len(found)
                conn.execute("commit")
            except BaseException:
                conn.execute("rollback")
                raise
        return removed
    raise NotImplementedError(f"removing keys from a {type(online).__name__} online store")
