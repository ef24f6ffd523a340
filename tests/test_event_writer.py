"""A worker's write path (serving/event_writer.py): the events of concurrent POSTs logged in one
group commit and pushed online in one turn, each call answered with its own events; a log that
fails fails every call of the turn and pushes nothing; one user's busy lock costs that user's
update only. On a real feedback log and real online stores (SQLite and redis-server)."""

import asyncio
import json
import os

import pytest
from prometheus_client import REGISTRY

from rtrec.settings import get_settings
from serving.event_writer import EventWriter
from serving.feedback_log import FeedbackLog, NotDurable
from serving.schemas import Event
from tests.test_online_state import new_user, online_on


@pytest.fixture(params=["sqlite", "redis"])
def online(request, tmp_path, monkeypatch):
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    yield online_on(monkeypatch, tmp_path, request.param, redis_url)
    get_settings.cache_clear()  # the settings of this test's data dir stay out of the next tests


def writer_on(online, tmp_path):
    writer = EventWriter(FeedbackLog(tmp_path / "feedback"), online.table, online.locks, online.settings)
    turns = []
    write = writer._write
    writer._write = lambda calls: turns.append(len(calls)) or write(calls)  # counts the turns, writes for real
    return writer, turns


def event(user, item, **fields):
    return Event(user_id=user, item_id=item, event_type="view", **fields).to_log()


def logged_ids(feedback):
    return [json.loads(line)["event_id"] for path in feedback.dir.glob("*.jsonl") for line in path.open()]


def failures():
    return REGISTRY.get_sample_value("rtrec_online_write_failures_total") or 0.0


def test_concurrent_calls_share_a_turn_and_each_gets_its_own_events(online, tmp_path):
    writer, turns = writer_on(online, tmp_path)
    users = [new_user() for _ in range(4)]
    calls = [[event(users[n % 4], f"i{n}")] for n in range(30)]
    repeated = {**calls[3][0], "item_id": "again"}  # a retried event: the same id in a later call
    calls.append([event(users[0], "i-last"), repeated])

    async def post_all():
        return await asyncio.gather(*(writer.write(events) for events in calls))

    answers = asyncio.run(post_all())
    asyncio.run(writer.close())
    assert len(turns) < len(calls) / 4, turns  # the calls waiting were taken together
    for events, logged in zip(calls[:30], answers):
        assert [r["event_id"] for r in logged] == [events[0]["event_id"]] and logged[0]["received_at"]
    assert [r["item_id"] for r in answers[30]] == ["i-last"]  # the repeat counts for the first call only
    assert sorted(logged_ids(writer.feedback)) == sorted(e["event_id"] for events in calls[:31] for e in events[:1])
    for n, user in enumerate(users):  # online, in the order of the calls
        expected = [f"i{m}" for m in range(n, 30, 4)] + (["i-last"] if n == 0 else [])
        assert online.items(user) == expected


def test_a_log_that_fails_fails_every_call_of_the_turn_and_nothing_goes_online(online, tmp_path, monkeypatch):
    writer, _ = writer_on(online, tmp_path)
    user = new_user()
    calls = [[event(user, f"i{n}")] for n in range(5)]

    def fsync(fd):
        raise OSError(5, "Input/output error")

    async def post_all():
        return await asyncio.gather(*(writer.write(events) for events in calls), return_exceptions=True)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", fsync)
        answers = asyncio.run(post_all())
    assert all(isinstance(a, NotDurable) for a in answers) and len({id(a) for a in answers}) == len(answers)
    assert "EIO" in str(answers[0])
    assert online.items(user) == [] and logged_ids(writer.feedback) == []
    assert [len(r) for r in asyncio.run(post_all())] == [1] * 5  # nothing was kept: the retry lands, once
    asyncio.run(writer.close())
    assert online.items(user) == [f"i{n}" for n in range(5)]


def test_a_busy_lock_costs_its_users_update_only(online, tmp_path):
    writer, turns = writer_on(online, tmp_path)
    writer.locks = online.new_locks(wait=0.05)
    busy, free = new_user(), new_user()
    while online.locks._lock_of(free) == online.locks._lock_of(busy):
        free = new_user()  # two locks (two users can share a file stripe)
    before = failures()

    async def post_both():
        return await asyncio.gather(
            writer.write([event(busy, "b1"), event(busy, "b2")]), writer.write([event(free, "f1")])
        )

    with online.new_locks().hold(busy):  # another worker holds it
        answers = asyncio.run(post_both())
    asyncio.run(writer.close())
    assert turns == [2]  # one turn: its update failed, then each user was tried on their own
    assert [len(a) for a in answers] == [2, 1]  # durable all the same
    assert online.items(free) == ["f1"] and online.items(busy) == []
    assert failures() == before + 2  # the busy user's two events, counted once each


def test_an_update_that_fails_after_the_log_kept_the_events_still_answers_them(online, tmp_path, monkeypatch):
    """Anything failing once the events are durable (here the deletion bookkeeping) costs their
    online update, counted, never the answer: a 500 would make clients retry what was kept."""
    writer, _ = writer_on(online, tmp_path)
    user = new_user()
    before = failures()

    def broken(user_ids):
        raise RuntimeError("pending deletions unreadable")

    monkeypatch.setattr(writer.feedback, "pending_forgets_of", broken)
    answers = asyncio.run(writer.write([event(user, "a"), event(user, "b")]))
    asyncio.run(writer.close())
    assert [r["item_id"] for r in answers] == ["a", "b"] and len(logged_ids(writer.feedback)) == 2
    assert failures() == before + 2


def test_a_pending_deletion_goes_online_with_the_next_events(online, tmp_path):
    """A DELETE while the store was down left the deletion pending; the next turn's write carries
    the tombstone (what was received before it stays out) and the deletion is pending no more."""
    writer, _ = writer_on(online, tmp_path)
    user = new_user()
    asyncio.run(writer.write([event(user, "old")]))
    forgetting = writer.feedback.forget_user(user)  # the log's part; the online part left pending
    assert writer.feedback.pending_forgets_of([user]) == {user: forgetting.deleted_at} and online.items(user) == ["old"]
    asyncio.run(writer.write([event(user, "new")]))
    asyncio.run(writer.close())
    assert online.items(user) == ["new"]
    assert online.table.read(user).forgotten_at == forgetting.deleted_at
    assert writer.feedback.pending_forgets_of([user]) == {}
