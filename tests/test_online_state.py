"""The online user state under faults: a push racing a deletion, a store that stops answering, a
busy user lock, and removing forgotten users' rows. On SQLite and on a real redis-server."""

import contextlib
import os
import signal
import sqlite3
import threading
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import redis
from feast import ValueType
from feast.data_source import PushMode
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

from rtrec import online_state, redis_server
from rtrec.feature_store import definitions, open_store
from rtrec.online_state import (
    LOCK_STRIPES,
    CircuitBreaker,
    LockExpired,
    LockTimeout,
    Push,
    StoreUnavailable,
    UserLocks,
    UserState,
    UserStateTable,
    forget_user,
    push_event,
    push_events,
    read_online,
    remove_user_keys,
    users_locked,
)
from rtrec.settings import get_settings
from rtrec.sqlite_online_store import StoreBusy


class Online:
    """An applied Feast repo on one online store, with its user-state table and user locks."""

    def __init__(self, settings):
        self.settings = settings
        self.store = open_store(settings)
        self.store.apply(definitions())
        self.table = UserStateTable(self.store)
        self.locks = self.new_locks()

    def new_locks(self, wait=None):
        redis_url = self.settings.redis_url if self.settings.online_store == "redis" else None
        return UserLocks(self.settings.feast_dir / "locks", redis_url, self.settings.redis_timeout_seconds, wait)

    def push(self, user, item, received_at=None, table=None):
        return push_event(
            table or self.table, self.locks, user, item, "view", datetime.now(UTC), 50, received_at=received_at
        )

    def items(self, user):
        return read_online(self.store, user)[0].recent_items


def online_on(monkeypatch, data, kind, redis_url=None):
    monkeypatch.setenv("RTREC_DATA_DIR", str(data))
    monkeypatch.setenv("RTREC_ONLINE_STORE", kind)
    if redis_url:
        monkeypatch.setenv("RTREC_REDIS_URL", redis_url)
    get_settings.cache_clear()
    return Online(get_settings())


@pytest.fixture(params=["sqlite", "redis"])
def online(request, tmp_path, monkeypatch):
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    yield online_on(monkeypatch, tmp_path / "data", request.param, redis_url)
    get_settings.cache_clear()


def new_user(tag="user"):
    return f"{tag}-{uuid.uuid4().hex[:10]}"  # the session's redis-server is shared: ids never repeat


def test_a_push_received_before_the_deletion_and_applied_after_it_is_skipped(online):
    user = new_user()
    online.push(user, "a", received_at=datetime.now(UTC))
    received_b = datetime.now(UTC)  # POST: "b" is durable in the feedback log...
    deleted_at = received_b + timedelta(microseconds=1)  # ...then a DELETE wins the race to the online state
    forget_user(online.table, online.locks, user, deleted_at)
    assert online.push(user, "b", received_at=received_b) is None  # the POST's push, applied after the DELETE
    assert online.push(user, "b2", received_at=deleted_at) is None  # not after the deletion: skipped too
    assert online.items(user) == []
    online.push(user, "c", received_at=deleted_at + timedelta(microseconds=1))  # arrived later: a new history
    assert online.items(user) == ["c"]
    assert online.table.read(user).forgotten_at == deleted_at


def test_the_tombstone_is_kept_through_batch_writes_and_unseen_by_feast_readers(online):
    user = new_user()
    online.push(user, "a")
    deleted_at = datetime.now(UTC)
    forget_user(online.table, online.locks, user, deleted_at)
    late = deleted_at - timedelta(seconds=1)
    # a batch write after the deletion (what materialize or another producer does) replaces the features...
    row = pd.DataFrame(
        {
            "user_id": [user],
            "recent_items": [["x"]],
            "recent_event_types": [["view"]],
            "last_event_ts": [datetime.now(UTC)],
            "seen_items": [["x"]],
            "seen_event_types": [["view"]],
            "event_timestamp": [datetime.now(UTC) + timedelta(seconds=5)],
        }
    )
    online.store.push("user_state_push", row, to=PushMode.ONLINE)
    assert online.items(user) == ["x"]
    # ...but not the watermark: a late push from before the deletion stays out
    assert online.push(user, "a-again", received_at=late) is None
    assert online.items(user) == ["x"]
    got = online.store.get_online_features(features=["user_state:recent_items"], entity_rows=[{"user_id": user}])
    assert set(got.to_dict()) == {"user_id", "recent_items"}


def users_of_one_stripe(count):
    """`count` new users whose file locks are one stripe (one lock file)."""
    first = new_user()
    stripe, users = zlib.crc32(first.encode()) % LOCK_STRIPES, [first]
    while len(users) < count:
        user = new_user()
        if zlib.crc32(user.encode()) % LOCK_STRIPES == stripe:
            users.append(user)
    return users


def test_a_batch_of_pushes_lands_in_order_in_one_turn(online):
    """Several events of several users, two of them sharing a lock stripe (each lock is taken once:
    a second flock of one file would wait on itself), read once and written once."""
    a, b = users_of_one_stripe(2)
    c = new_user()
    now = datetime.now(UTC)
    pushes = [Push(a, "a1", "view", now), Push(b, "b1", "view", now), Push(a, "a2", "click", now)]
    pushes += [Push(c, "c1", "view", now), Push(a, "a2", "purchase", now)]  # the funnel's next step on a2
    reads, writes = [], []
    table = online.table
    spy = UserStateTable.__new__(UserStateTable)
    spy.__dict__.update(table.__dict__)
    spy.read_many = lambda users: reads.append(list(users)) or table.read_many(users)
    spy.write_many = lambda states: writes.append([s.user_id for s in states]) or table.write_many(states)
    after = push_events(spy, online.locks, pushes, 50)
    assert reads == [[a, b, c]] and writes == [[a, b, c]]
    assert online.items(a) == ["a1", "a2"] and online.items(b) == ["b1"] and online.items(c) == ["c1"]
    stored = online.table.read(a)
    assert stored.recent_event_types == ["view", "purchase"] and stored.seen_items == ["a1", "a2"]
    # each push answers the state after it, stamped with the version written for its user
    assert [s.recent_items for s in after] == [["a1"], ["b1"], ["a1", "a2"], ["c1"], ["a1", "a2"]]
    assert {s.stored_at for s in after if s.user_id == a} == {stored.stored_at}
    assert push_events(online.table, online.locks, [], 50) == []


def test_a_pending_deletion_is_written_even_when_every_event_of_the_batch_is_skipped(online):
    """The deletion the store did not hold yet comes with the batch: its events were all received
    before it, so none is applied, and the tombstone is written all the same."""
    user = new_user()
    online.push(user, "old")
    deleted_at = datetime.now(UTC)
    before = deleted_at - timedelta(seconds=1)
    pushes = [Push(user, "x", "view", before, before, deleted_at), Push(user, "y", "view", before, before, deleted_at)]
    assert push_events(online.table, online.locks, pushes, 50) == [None, None]
    assert online.items(user) == []
    assert online.table.read(user).forgotten_at == deleted_at


def test_a_busy_lock_of_one_user_fails_the_batch_and_holds_no_other_lock(online):
    user, other = new_user(), new_user()
    while online.locks._lock_of(other) >= online.locks._lock_of(user):
        other = new_user()  # two locks, the free one taken first: the batch must let go of it
    elsewhere = online.new_locks()
    now = datetime.now(UTC)
    with elsewhere.hold(user):
        with pytest.raises(LockTimeout):
            push_events(
                online.table,
                online.new_locks(wait=0.05),
                [Push(other, "o", "view", now), Push(user, "u", "view", now)],
                50,
            )
        with elsewhere.hold(other):  # not left held by the failed batch
            pass
    assert online.items(other) == [] and online.items(user) == []


def test_free_redis_locks_are_taken_in_one_round_trip_and_released_in_one(redis_url, tmp_path, monkeypatch):
    online = online_on(monkeypatch, tmp_path / "data", "redis", redis_url)
    locks, users = online.locks, [new_user() for _ in range(6)]
    one_by_one, calls = [], redis.Redis.from_url(redis_url)

    def evalsha_calls():  # those that ran: the first one on a fresh server fails (NOSCRIPT) and is sent again
        stats = calls.info("commandstats").get("cmdstat_evalsha", {})
        return stats.get("calls", 0) - stats.get("failed_calls", 0)

    set_one = locks.redis.set
    monkeypatch.setattr(locks.redis, "set", lambda *a, **kw: one_by_one.append(a[0]) or set_one(*a, **kw))
    keys, released = [f"rtrec:user-lock:{u}" for u in users], evalsha_calls()
    with users_locked(online.table, locks, users):
        assert calls.exists(*keys) == len(users)
    assert one_by_one == [] and evalsha_calls() == released + 1  # one pipeline of SETs, one release
    assert calls.exists(*keys) == 0


def test_a_redis_lock_that_expired_is_not_released_from_its_new_holder(redis_url, tmp_path, monkeypatch):
    """The holder whose lock expired (a worker stopped past LOCK_EXPIRY_SECONDS) is told so on
    release, and leaves the lock another holder took since then held."""
    online = online_on(monkeypatch, tmp_path / "data", "redis", redis_url)
    monkeypatch.setattr(online_state, "LOCK_EXPIRY_SECONDS", 0.2)
    user, late, other = new_user(), online.new_locks(), online.new_locks()
    handles = late.acquire_all([user, new_user()])
    time.sleep(0.3)  # both expired
    monkeypatch.setattr(online_state, "LOCK_EXPIRY_SECONDS", 10)  # the new holder's stays while the test runs
    taken = other.acquire(user)
    with pytest.raises(LockExpired, match="2 of 2"):
        late.release_all(handles)
    with pytest.raises(LockTimeout):  # still the other holder's
        online.new_locks(wait=0.05).acquire(user)
    other.release(taken)
    online.new_locks(wait=0.05).release(online.new_locks(wait=0.05).acquire(user))


def test_the_rows_written_and_read_are_feasts_own_conversion():
    """The state's protos are built and read directly (why: `UserStateTable._state`): the messages
    and values are Feast's own conversion's."""
    state = UserState("u", ["a", "b"], ["view", "click"], datetime(2026, 3, 1, 12, 0, 7, 900000, tzinfo=UTC))
    state.seen_items, state.seen_event_types = ["z", "a", "b"], ["purchase", "view", "click"]
    values = UserStateTable._values(state)
    types = {"last_event_ts": ValueType.UNIX_TIMESTAMP}
    for name in ("recent_items", "recent_event_types", "last_event_ts", "seen_items", "seen_event_types"):
        python = getattr(state, name)
        assert values[name] == python_values_to_proto_values([python], types.get(name, ValueType.STRING_LIST))[0]
    assert feast_value_type_to_python_type(values["last_event_ts"]) == datetime(2026, 3, 1, 12, 0, 7, tzinfo=UTC)
    read = UserStateTable._state("u", None, values)
    assert read.last_event_ts == datetime(2026, 3, 1, 12, 0, 7, tzinfo=UTC)
    assert (read.recent_items, read.recent_event_types, read.seen_items) == (
        ["a", "b"],
        ["view", "click"],
        ["z", "a", "b"],
    )
    empty = UserStateTable._values(UserState("v", ["a"], ["view"]))  # no last event time: Feast's null
    assert empty["last_event_ts"] == python_values_to_proto_values([None], ValueType.UNIX_TIMESTAMP)[0]
    assert UserStateTable._state("v", None, empty).last_event_ts is None


def test_a_deletion_watermark_never_moves_back(online):
    user = new_user()
    later = datetime.now(UTC)
    forget_user(online.table, online.locks, user, later)
    forget_user(online.table, online.locks, user, later - timedelta(minutes=5))  # e.g. a retried older DELETE
    assert online.table.read(user).forgotten_at == later
    assert online.push(user, "a", received_at=later - timedelta(seconds=1)) is None


def test_remove_user_keys_deletes_rows_and_tombstones(online):
    gone, forgotten, kept = new_user("gone"), new_user("forgotten"), new_user("kept")
    for user in (gone, forgotten, kept):
        online.push(user, "a")
    forget_user(online.table, online.locks, forgotten)
    assert remove_user_keys(online.store, [gone, forgotten, new_user("never-seen")]) == 2
    for user in (gone, forgotten):
        assert online.table.read(user) == UserState(user)  # no row at all: not even a tombstone
        assert raw_rows(online, user) == 0
    assert online.items(kept) == ["a"] and raw_rows(online, kept) > 0
    assert remove_user_keys(online.table, [kept]) == 1 and raw_rows(online, kept) == 0
    assert remove_user_keys(online.store, []) == 0


def raw_rows(online, user):
    """Rows (SQLite) or hash fields (Redis) the online store holds under the user's key."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _redis_key

    config, store = online.table.config, online.table.provider.online_store
    key = UserStateTable.key(user)
    if online.settings.online_store == "redis":
        return store._get_client(config.online_store).hlen(_redis_key(config.project, key, 3))
    conn = store._get_conn(config)
    binary = serialize_entity_key(key, entity_key_serialization_version=3)
    return conn.execute("select count(*) from rtrec_user_state where entity_key = ?", (binary,)).fetchone()[0]


def test_a_busy_user_lock_is_waited_on_briefly_and_does_not_open_the_breaker(online):
    user = new_user()
    other = online.new_locks()  # another worker process holding the user's lock
    with other.hold(user):
        started = time.perf_counter()
        with pytest.raises(LockTimeout):
            online.push(user, "a")
        assert time.perf_counter() - started < 2  # the wait is ~0.5 s (was unbounded on files, 10 s on Redis)
    assert online.table.breaker.state == "closed"
    online.push(user, "a")
    assert online.items(user) == ["a"]


def test_a_locked_sqlite_store_is_busy_not_down_and_reads_never_wait_for_a_write(tmp_path, monkeypatch):
    online = online_on(monkeypatch, tmp_path / "data", "sqlite")
    user = new_user()
    online.push(user, "a")
    writer = sqlite3.connect(online.settings.feast_dir / "online.db")
    assert writer.execute("pragma journal_mode").fetchone() == ("wal",)
    writer.execute("begin immediate")  # another process holds the write lock past the busy timeout
    try:
        assert online.items(user) == ["a"]  # reads go on
        with pytest.raises(StoreBusy):
            online.push(user, "b")
        assert online.table.breaker.state == "closed"  # busy is not down: the next push is not failed fast
    finally:
        writer.rollback()
        writer.close()
    online.push(user, "b")
    assert online.items(user) == ["a", "b"]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def failing():
    raise ConnectionError("store down")


def call(breaker, work=lambda: None):
    with breaker.guard():
        return work()


def test_the_breaker_fails_fast_after_a_failure_then_one_trial_call_decides():
    clock, changes, rejected = Clock(), [], []
    breaker = CircuitBreaker(cooldown=2.0, clock=clock, on_change=changes.append, on_reject=lambda: rejected.append(1))
    call(breaker)
    with pytest.raises(ConnectionError):
        call(breaker, failing)
    assert breaker.state == "open"
    ran = []
    with pytest.raises(StoreUnavailable):
        call(breaker, lambda: ran.append(1))
    assert ran == [] and len(rejected) == 1  # failed fast: the call never reached the store
    clock.now += 2.0
    assert breaker.state == "half-open"
    with breaker.guard(), pytest.raises(StoreUnavailable):  # the trial call: while it runs, others fail fast
        call(breaker)
    assert breaker.state == "closed"
    assert changes == ["open", "half-open", "closed"]
    call(breaker)


def test_a_failed_trial_opens_the_breaker_for_another_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(cooldown=2.0, clock=clock)
    with pytest.raises(ConnectionError):
        call(breaker, failing)
    clock.now += 2.5
    with pytest.raises(ConnectionError):
        call(breaker, failing)  # the trial
    clock.now += 1.0
    with pytest.raises(StoreUnavailable):
        call(breaker)
    clock.now += 1.0
    call(breaker)
    assert breaker.state == "closed"


def test_lock_timeouts_say_nothing_about_the_store():
    clock = Clock()
    breaker = CircuitBreaker(cooldown=2.0, clock=clock)

    def busy():
        raise LockTimeout("busy")

    with pytest.raises(LockTimeout):
        call(breaker, busy)
    assert breaker.state == "closed"
    with pytest.raises(ConnectionError):
        call(breaker, failing)
    clock.now += 2.0
    with pytest.raises(LockTimeout):
        call(breaker, busy)  # an inconclusive trial: the next call is the trial
    assert breaker.state == "half-open"
    call(breaker)
    assert breaker.state == "closed"


def test_a_hung_redis_costs_one_timeout_then_pushes_fail_fast_and_recover(tmp_path, monkeypatch):
    proc, url = redis_server.start()  # a server of its own: this test stops it
    try:
        online = online_on(monkeypatch, tmp_path / "data", "redis", url)
        online.table.breaker.cooldown = 1.0
        user = new_user()
        online.push(user, "before")
        os.kill(proc.pid, signal.SIGSTOP)  # hung, not refused: every call waits out its socket timeout
        started, failed = time.perf_counter(), 0
        for n in range(500):
            with pytest.raises((StoreUnavailable, redis.RedisError)):
                online.push(user, f"i{n}")
            failed += 1
            assert time.perf_counter() - started < 5, f"{n + 1} pushes took over 5 s: each waits for the dead store"
        assert failed == 500
        with pytest.raises(StoreUnavailable):
            online.table.read(user)  # reads fail fast too
        os.kill(proc.pid, signal.SIGCONT)
        # another user: the lock request that timed out reaches Redis when it resumes, so that
        # user's lock stays taken until it expires (LOCK_EXPIRY_SECONDS)
        other, deadline = new_user(), time.monotonic() + 10
        while True:  # recovers by itself once the cooldown is over: the next call is the trial
            try:
                online.push(other, "after")
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the breaker never let a trial call through"
                time.sleep(0.1)
        assert online.items(other) == ["after"] and online.items(user) == ["before"]
        assert online.table.breaker.state == "closed"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(10)
        get_settings.cache_clear()


def test_pushes_and_deletions_racing_in_threads_never_resurrect(online):
    """Threads push batches of events for one user while another forgets it, each batch and each
    deletion stamped by one clock. At the end the state holds only what was received after the
    last deletion."""
    user = new_user()
    clock_mutex, arrivals, deletions, done = threading.Lock(), {}, [], threading.Event()

    def tick():
        with clock_mutex:  # the feedback log's one clock
            time.sleep(0.0001)
            return datetime.now(UTC)

    def pusher(w):
        batch = 0
        while not done.is_set():  # like a POST: a batch is received at once, then applied event by event
            at, batch = tick(), batch + 1
            for n in range(5):
                arrivals[f"w{w}-{batch}-{n}"] = at
                with contextlib.suppress(LockTimeout):  # an online-update failure: allowed
                    online.push(user, f"w{w}-{batch}-{n}", received_at=at)

    def deleter():
        for _ in range(5):
            time.sleep(0.02)
            while True:
                deleted_at = tick()
                with contextlib.suppress(LockTimeout):
                    forget_user(online.table, online.locks, user, deleted_at)
                    deletions.append(deleted_at)
                    break
        done.set()  # the batches in flight now finish after the last deletion

    threads = [threading.Thread(target=pusher, args=(w,)) for w in range(3)] + [threading.Thread(target=deleter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(deletions) == 5
    assert set(online.items(user)) <= {item for item, at in arrivals.items() if at > max(deletions)}


def test_reads_and_pushes_racing_in_threads_all_succeed(online):
    """Request threads of one worker read and push at once, as a saturated API does: no read and
    no write fails (on SQLite each thread has its own connection), and every push is kept."""
    users = [new_user(f"racer{n}") for n in range(4)]
    errors, done = [], threading.Event()

    def pusher(user):
        try:
            for n in range(40):
                online.push(user, f"i{n}")
        except Exception as err:
            errors.append(err)

    def reader():
        while not done.is_set():
            try:
                for user in users:
                    online.table.read(user)
            except Exception as err:
                errors.append(err)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    pushers = [threading.Thread(target=pusher, args=(user,)) for user in users]
    for thread in readers + pushers:
        thread.start()
    for thread in pushers:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    assert errors == []
    assert all(online.items(user) == [f"i{n}" for n in range(40)] for user in users)


def test_each_thread_has_its_own_sqlite_connection(tmp_path, monkeypatch):
    """Feast's SQLite store shares one connection among threads; under a saturated API a read on it
    while another thread began a write failed one of them ("another row available", "database is
    locked"), opening the breaker for everyone. Ours gives each thread its own."""
    online = online_on(monkeypatch, tmp_path / "data", "sqlite")
    store, config = online.table.provider.online_store, online.table.config
    mine = store._get_conn(config)
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(store._get_conn(config)))
    thread.start()
    thread.join()
    assert store._get_conn(config) is mine and theirs[0] is not mine
    assert theirs[0].execute("pragma synchronous").fetchone() == (1,)  # NORMAL on every connection
