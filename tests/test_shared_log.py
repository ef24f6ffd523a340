"""The feedback log shared by API hosts, on a real redis-server with an fsynced append-only file:
hosts racing the same event ids, Redis itself SIGKILLed, a collection stopped half way, and a
deletion before and after collection."""

import json
import threading
import time
import uuid

import pytest
import redis

from rtrec import redis_server
from rtrec.landing import ensure_landing_zone
from rtrec.privacy import forgotten_users, redact_landing
from rtrec.shared_log import COLLECTOR, EVENTS, IDS, PENDING, CollectorBusy, SharedLogNotDurable, collect, traces_of
from serving.feedback_log import NotDurable
from serving.shared_feedback_log import RedisFeedbackLog

MAX_FILE_BYTES = 2_000  # a few dozen lines a file: collections span several files


@pytest.fixture
def landing(tmp_path):
    ensure_landing_zone(tmp_path / "landing")
    return tmp_path / "landing"


def event(event_id, user="u1", item="i1"):
    return {
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "event_type": "click",
        "ts": "2026-06-01T10:00:00+00:00",
        "value": None,
        "request_id": None,
    }


def collected_lines(landing):
    return [
        json.loads(line)
        for path in sorted((landing / "feedback").glob("redis-*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def test_a_redis_that_could_lose_an_acknowledged_event_is_refused(redis_url):
    # the session's server runs without an append-only file
    with pytest.raises(SharedLogNotDurable, match="appendonly no, appendfsync"):
        RedisFeedbackLog(redis_url)


def test_hosts_racing_the_same_events_accept_each_exactly_once(durable_redis):
    hosts = [RedisFeedbackLog(durable_redis["url"]) for _ in range(2)]
    ids = [f"e{n}" for n in range(200)]
    accepted: list[dict] = []
    start = threading.Barrier(6)

    def client(n):
        host = hosts[n % 2]
        start.wait()
        for first in range(0, len(ids), 10):  # every client sends every event, in batches with repeats
            batch = [event(i, user=f"u{int(i[1:]) % 7}") for i in ids[first : first + 10]]
            accepted.extend(host.append(batch + batch[:3]))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e["event_id"] for e in accepted) == sorted(ids)
    client = redis.Redis.from_url(durable_redis["url"])
    assert client.xlen(EVENTS) == len(ids) and client.hlen(IDS) == len(ids)
    times = [e["received_at"] for e in accepted]
    assert len(set(times)) == len(ids) // 10  # one time per accepted batch, never one twice


def test_acknowledged_events_survive_redis_killed(durable_redis):
    log = RedisFeedbackLog(durable_redis["url"])
    acknowledged = [e["event_id"] for n in range(50) for e in log.append([event(f"k{n}-{m}") for m in range(4)])]
    port = int(durable_redis["url"].rsplit(":", 1)[1].split("/")[0])
    durable_redis["proc"].kill()  # SIGKILL: no shutdown, no final save
    durable_redis["proc"].wait(10)
    durable_redis["proc"], _ = redis_server.start_durable(durable_redis["dir"], port)
    client = redis.Redis.from_url(durable_redis["url"])
    assert client.xlen(EVENTS) == len(acknowledged) == 200
    again = RedisFeedbackLog(durable_redis["url"])
    assert again.append([event(i) for i in acknowledged[:20]]) == []  # the ids survived too
    assert [e["event_id"] for e in again.append([event("after")])] == ["after"]


def test_each_event_lands_once_even_when_a_collection_stops_before_trimming(durable_redis, landing, monkeypatch):
    log = RedisFeedbackLog(durable_redis["url"])
    for n in range(6):
        log.append([event(f"c{n}-{m}", user=f"u{m}") for m in range(10)])
    real_trim = redis.Redis.xtrim
    monkeypatch.setattr(redis.Redis, "xtrim", lambda *a, **k: (_ for _ in ()).throw(redis.ConnectionError("cut")))
    with pytest.raises(redis.ConnectionError):
        collect(durable_redis["url"], landing, MAX_FILE_BYTES)  # the first file is renamed in, the stream untrimmed
    assert 0 < len(collected_lines(landing)) < 60
    monkeypatch.setattr(redis.Redis, "xtrim", real_trim)
    log.append([event("late", user="late")])
    done = collect(durable_redis["url"], landing, MAX_FILE_BYTES)
    assert len(done.files) > 1  # every file names its first and last entry
    lines = collected_lines(landing)
    assert sorted(line["event_id"] for line in lines) == sorted(
        [f"c{n}-{m}" for n in range(6) for m in range(10)] + ["late"]
    )
    assert all(line["received_at"] and line["seq"] >= 1 for line in lines)
    client = redis.Redis.from_url(durable_redis["url"])
    assert client.xlen(EVENTS) == 0  # collected, trimmed: Redis holds only what the next run collects
    # users stop naming the entries a collection trimmed (a stopped one leaves names to entries that are
    # gone, which a deletion finds gone)
    assert not client.exists("rtrec:{feedback}:user:late:entries")
    assert collect(durable_redis["url"], landing, MAX_FILE_BYTES).events == 0


def test_a_deletion_removes_uncollected_events_now_and_collected_ones_at_the_next_run(durable_redis, landing):
    log = RedisFeedbackLog(durable_redis["url"])
    log.append([event("old-1", user="gone"), event("old-2", user="gone"), event("kept", user="other")])
    collect(durable_redis["url"], landing, MAX_FILE_BYTES)
    log.append([event("new-1", user="gone"), event("new-2", user="other")])
    forgetting = log.forget_user("gone")
    assert forgetting.removed == 1  # new-1, not collected yet: gone from Redis at once
    assert log.pending_forgets_of(["u1", "gone", "gone"]) == {"gone": forgetting.deleted_at}
    after = log.append([event("again", user="gone"), event("old-1", user="gone")])
    assert [e["event_id"] for e in after] == ["again", "old-1"]  # the user's ids were forgotten too
    client = redis.Redis.from_url(durable_redis["url"])
    assert len(collect(durable_redis["url"], landing, MAX_FILE_BYTES).files) == 1
    until = forgotten_users(landing)
    assert until == {"gone": forgetting.deleted_at}
    redaction = redact_landing(landing)
    assert redaction.rows_removed == 2  # old-1 and old-2, collected before the deletion
    assert sorted((line["event_id"], line["user_id"]) for line in collected_lines(landing)) == [
        ("again", "gone"),
        ("kept", "other"),
        ("new-2", "other"),
        ("old-1", "gone"),  # sent again after the deletion: the user's new history
    ]
    assert collect(durable_redis["url"], landing, MAX_FILE_BYTES).deletions == 0  # each deletion lands once
    log.forgotten_online("gone", forgetting.deleted_at)
    assert client.hlen(PENDING) == 0


def test_once_collected_and_brought_online_a_deletion_leaves_no_trace_in_redis(durable_redis, landing):
    url = durable_redis["url"]
    log = RedisFeedbackLog(url)
    log.append([event("s-1", user="solo"), event("s-2", user="solo"), event("o-1", user="other")])
    assert traces_of(url, "solo") == [
        "the user's event ids",
        "the user's entries",
        "accepted event ids",
        "uncollected events",
    ]
    collect(url, landing, MAX_FILE_BYTES)
    forgetting = log.forget_user("solo")
    assert traces_of(url, "solo") == ["a deletion whose online part is pending", "an uncollected deletion"]
    collect(url, landing, MAX_FILE_BYTES)
    log.forgotten_online("solo", forgetting.deleted_at)
    assert traces_of(url, "solo") == []
    assert traces_of(url, "other") == ["the user's event ids", "accepted event ids"]  # collected, still deduplicated


def test_what_a_deletion_forgot_leaves_the_redis_disk_at_the_next_collection(durable_redis, landing):
    url = durable_redis["url"]
    log = RedisFeedbackLog(url)
    log.append([event("d-1", user="forget-me-on-disk"), event("d-2", user="someone-else")])
    forgetting = log.forget_user("forget-me-on-disk")
    log.forgotten_online("forget-me-on-disk", forgetting.deleted_at)  # what the API does once the store has it
    aof = durable_redis["dir"] / "appendonly.aof"
    assert b"forget-me-on-disk" in aof.read_bytes()  # the commands that wrote it are still in the file
    collect(url, landing, MAX_FILE_BYTES)  # collects the deletion, then has Redis rewrite the file
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while (info := client.info("persistence"))["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert b"forget-me-on-disk" not in aof.read_bytes()
    assert b"someone-else" in aof.read_bytes()  # the file was rewritten, not emptied: its event id stays


def test_one_collector_at_a_time(durable_redis, landing):
    held = redis.Redis.from_url(durable_redis["url"]).lock(COLLECTOR, timeout=30)
    assert held.acquire(blocking=False)
    with pytest.raises(CollectorBusy, match="another nightly run"):
        collect(durable_redis["url"], landing, MAX_FILE_BYTES)
    held.release()
    assert collect(durable_redis["url"], landing, MAX_FILE_BYTES).events == 0


def test_redis_down_is_a_fast_not_durable_and_a_host_still_starts(durable_redis):
    log = RedisFeedbackLog(durable_redis["url"])
    durable_redis["proc"].kill()
    durable_redis["proc"].wait(10)
    with pytest.raises(NotDurable, match="ConnectionError"):
        log.append([event(uuid.uuid4().hex)])
    started = RedisFeedbackLog(durable_redis["url"])  # a host (re)starting while Redis is down
    with pytest.raises(redis.ConnectionError):  # the read path falls back on it (serving/forgetting.py)
        started.pending_forgets_of(["u1"])
    with pytest.raises(NotDurable):
        started.append([event(uuid.uuid4().hex)])
