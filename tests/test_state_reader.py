"""Micro-batching of the recommendation handlers' online reads (serving/state_reader.py), on a
real SQLite online store and feedback log."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from rtrec.feature_store import open_store
from rtrec.online_state import Push, StoreUnavailable, UserLocks, UserStateTable, push_events
from rtrec.settings import get_settings
from serving.feedback_log import open_feedback_log
from serving.forgetting import read_user
from serving.state_reader import StateReader
from tests.sites import make_site

USERS = ["a", "b", "forgotten", "nobody", "a"]


@pytest.fixture
def site(tmp_path, monkeypatch):
    """(table, feedback, the store reads made, as lists of user ids): a, b and `forgotten` have
    events online; `forgotten`'s deletion is pending (not yet online)."""
    make_site(tmp_path, monkeypatch)
    settings = get_settings()
    table, feedback = UserStateTable(open_store(settings)), open_feedback_log(settings)
    start = datetime.now(UTC) - timedelta(minutes=1)
    events = [("a", "i1"), ("b", "i2"), ("b", "i3"), ("forgotten", "i4")]
    pushes = [Push(user, item, "view", start + timedelta(seconds=n)) for n, (user, item) in enumerate(events)]
    push_events(table, UserLocks(settings.feast_dir / "locks"), pushes, settings.max_recent_items)
    feedback.forget_user("forgotten")
    reads, read_many = [], table.read_many
    monkeypatch.setattr(table, "read_many", lambda user_ids: reads.append(list(user_ids)) or read_many(user_ids))
    return table, feedback, reads


def read_together(reader, users, cancel=()):
    """Every user's read started in one turn of the loop (those at the indices in `cancel` cancelled
    before the flush); the states or errors, within 10 s: no request may be left waiting."""

    async def requests():
        tasks = [asyncio.ensure_future(reader.read(user)) for user in users]
        await asyncio.sleep(0)  # every read is waiting now, the flush not run yet
        for i in cancel:
            tasks[i].cancel()
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)

    return asyncio.run(requests())


def test_the_reads_of_one_turn_are_one_store_read_and_each_gets_its_own_state(site, monkeypatch):
    table, feedback, reads = site
    checks, pending_forgets_of = [], feedback.pending_forgets_of
    monkeypatch.setattr(feedback, "pending_forgets_of", lambda ids: checks.append(list(ids)) or pending_forgets_of(ids))
    states = read_together(StateReader(table, feedback), USERS)
    assert reads == [USERS]  # one read of the store for the whole turn
    assert checks == [["a", "b", "forgotten", "a"]]  # and one of the pending deletions, of the users it knows
    assert [s.recent_items for s in states] == [["i1"], ["i2", "i3"], [], [], ["i1"]]
    assert states[2].forgotten_at is not None  # the pending deletion hides what the store still holds
    reads.clear()
    assert states == [read_user(table, feedback, user) for user in USERS]  # as each would have read alone


def test_a_cancelled_request_is_not_read(site):
    table, feedback, reads = site
    states = read_together(StateReader(table, feedback), ["a", "b"], cancel=[1])
    assert reads == [["a"]] and states[0].recent_items == ["i1"]
    assert isinstance(states[1], asyncio.CancelledError)


def test_one_users_failed_read_is_their_own_and_a_store_that_is_down_fails_each_request(site, monkeypatch):
    table, feedback, reads = site
    read_many = table.read_many

    def poisoned(user_ids):
        if "b" in user_ids:
            raise ValueError("b's row cannot be decoded")
        return read_many(user_ids)

    monkeypatch.setattr(table, "read_many", poisoned)
    a, b, nobody = read_together(StateReader(table, feedback), ["a", "b", "nobody"])
    assert a.recent_items == ["i1"] and nobody.recent_items == []
    assert isinstance(b, RuntimeError) and "cannot be decoded" in str(b)

    monkeypatch.setattr(table, "read_many", lambda user_ids: read_many(user_ids)[1:])  # a short answer
    assert all(isinstance(e, RuntimeError) for e in read_together(StateReader(table, feedback), ["a", "b"]))

    class Interrupted(BaseException):
        pass

    def interrupted(user_ids):
        raise Interrupted

    monkeypatch.setattr(table, "read_many", interrupted)  # asyncio logs it; the requests must still be answered
    assert all(isinstance(e, RuntimeError) for e in read_together(StateReader(table, feedback), ["a", "b"]))

    def down(user_ids):
        reads.append(list(user_ids))
        raise StoreUnavailable("the online store is down")

    monkeypatch.setattr(table, "read_many", down)
    reads.clear()
    first, second = read_together(StateReader(table, feedback), ["a", "b"])
    assert reads == [["a", "b"]]  # the breaker is open: no user is tried again alone
    assert all(isinstance(e, RuntimeError) and "the online store is down" in str(e) for e in (first, second))
    assert first is not second  # each request's own error: its fallback, logged once

    monkeypatch.setattr(table, "read_many", read_many)
    checks = []

    def log_down(user_ids):
        checks.append(list(user_ids))
        raise OSError("the feedback log is unreachable")

    monkeypatch.setattr(feedback, "pending_forgets_of", log_down)
    first, second = read_together(StateReader(table, feedback), ["a", "b"])
    assert checks == [["a", "b"]]  # one read for the batch fails for every user: none is tried again alone
    assert all(isinstance(e, RuntimeError) and "feedback log is unreachable" in str(e) for e in (first, second))
