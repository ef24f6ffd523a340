"""The online user state: how it is read, and the real-time write path.

Serving reads and writes it through `UserStateTable`, straight through the Feast provider.
`read_online` reads it as any application would, through `FeatureStore.get_online_features`,
together with the item stats of the items it is given; tests and benchmarks read through it.

A write is read-modify-write of the user's recent-items list, so two events for one user arriving
together could lose one. Every write for a user therefore holds that user's lock: a Redis lock when
the online store is Redis (it holds across hosts), otherwise an exclusive file lock on one of a
fixed set of stripe files (it holds across the worker processes of one host).

Redis ignores a write whose Feast event timestamp is not newer than the stored one, and Feast
reads stored timestamps back in whole seconds. So, inside the lock, a pushed row is stamped with
the current second or the stored one plus a second, whichever is later: a per-user logical clock
that a burst of events may run a few seconds ahead of the wall clock. The user's real last event
time is the `last_event_ts` feature.
"""

from __future__ import annotations

import fcntl
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from feast import FeatureStore, ValueType
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

from rtrec.events import STRENGTH

USER_STATE = ("recent_items", "recent_event_types", "last_event_ts")
ITEM_STATS = ("category", "price", "popularity_all", "popularity_7d", "purchase_rate")
LOCK_STRIPES = 256


@dataclass
class UserState:
    user_id: str
    recent_items: list[str] = field(default_factory=list)
    recent_event_types: list[str] = field(default_factory=list)
    last_event_ts: datetime | None = None
    stored_at: datetime | None = None  # Feast event timestamp of the stored row

    @property
    def known(self) -> bool:
        return bool(self.recent_items)

    def history(self) -> list[tuple[str, str]]:
        return list(zip(self.recent_items, self.recent_event_types))


def _ts(value) -> datetime | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


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


class UserLocks:
    """Per-user mutual exclusion across processes (file stripes) or hosts (Redis)."""

    def __init__(self, lock_dir: Path | None = None, redis_url: str | None = None, timeout: float = 0.5) -> None:
        self.lock_dir, self.redis = lock_dir, None
        if redis_url:
            import redis

            # fail fast when Redis is down (no backoff retries): the event is durable already
            self.redis = redis.Redis.from_url(
                redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=None
            )
        else:
            lock_dir.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def hold(self, user_id: str) -> Iterator[None]:
        if self.redis is not None:
            with self.redis.lock(f"rtrec:user-lock:{user_id}", timeout=10, blocking_timeout=10):
                yield
            return
        stripe = zlib.crc32(user_id.encode()) % LOCK_STRIPES
        with open(self.lock_dir / f"user-{stripe:03d}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def next_version(state: UserState, now: datetime) -> datetime:
    """A Feast event timestamp strictly newer, in whole seconds, than the stored row's."""
    now = now.replace(microsecond=0)
    return max(now, state.stored_at + timedelta(seconds=1)) if state.stored_at else now


class UserStateTable:
    """Reads and writes of the user_state view straight through the Feast provider.

    `FeatureStore.push` and the read after it rebuild every feature view from the registry on each
    call (~5 ms each, most of a write's time); the view is resolved here once instead. The rows are
    the ones the push source would write: the same view, entity key and value types."""

    def __init__(self, store: FeatureStore) -> None:
        self.config, self.provider = store.config, store.provider
        self.view = store.get_feature_view("user_state")

    @staticmethod
    def key(user_id: str) -> EntityKey:
        return EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=user_id)])

    def read(self, user_id: str) -> UserState:
        stored_at, values = self.provider.online_read(self.config, self.view, [self.key(user_id)], list(USER_STATE))[0]
        if not values:
            return UserState(user_id)
        python = {name: feast_value_type_to_python_type(value) for name, value in values.items()}
        return UserState(
            user_id,
            list(python.get("recent_items") or []),
            list(python.get("recent_event_types") or []),
            _ts(python.get("last_event_ts")),
            _ts(stored_at),
        )

    def write(self, state: UserState) -> None:
        values = {
            "recent_items": python_values_to_proto_values([state.recent_items], ValueType.STRING_LIST)[0],
            "recent_event_types": python_values_to_proto_values([state.recent_event_types], ValueType.STRING_LIST)[0],
            "last_event_ts": python_values_to_proto_values([state.last_event_ts], ValueType.UNIX_TIMESTAMP)[0],
        }
        self.provider.online_write_batch(
            self.config, self.view, [(self.key(state.user_id), values, state.stored_at, None)], None
        )


def push_event(
    table: UserStateTable, locks: UserLocks, user_id: str, item_id: str, event_type: str, ts: datetime, max_len: int
) -> UserState:
    """Append one event to the user's online state; the next online read shows it."""
    with locks.hold(user_id):
        state = table.read(user_id)
        items, types = appended(state, item_id, event_type, max_len)
        last = max(filter(None, [state.last_event_ts, ts]))
        new = UserState(user_id, items, types, last, next_version(state, datetime.now(UTC)))
        table.write(new)
        return new


def forget_user(table: UserStateTable, locks: UserLocks, user_id: str) -> None:
    """Replace the user's online state with an empty one (newer than anything stored)."""
    with locks.hold(user_id):
        state = table.read(user_id)
        table.write(UserState(user_id, [], [], None, next_version(state, datetime.now(UTC))))
