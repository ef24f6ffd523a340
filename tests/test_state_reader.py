"""Micro-batching of the recommendation handlers' online reads (serving/state_reader.py), on a
real SQLite online store."""

import asyncio
from datetime import UTC, datetime, timedelta

from rtrec.feature_store import open_store
from rtrec.online_state import Push, StoreUnavailable, UserLocks, UserStateTable, push_events
from rtrec.settings import get_settings
from serving.feedback_log import open_feedback_log
from serving.forgetting import read_user
from serving.state_reader import StateReader
from tests.sites import make_site

USERS = ["a", "b", "nobody", "a"]


def test_the_reads_of_one_turn_are_one_store_read_and_each_gets_its_own_state(tmp_path, monkeypatch):
    make_site(tmp_path, monkeypatch)
    settings = get_settings()
    table, feedback = UserStateTable(open_store(settings)), open_feedback_log(settings)
    start = datetime.now(UTC) - timedelta(minutes=1)
    events = [("a", "i1"), ("b", "i2"), ("b", "i3")]
    pushes = [Push(user, item, "view", start + timedelta(seconds=n)) for n, (user, item) in enumerate(events)]
    push_events(table, UserLocks(settings.feast_dir / "locks"), pushes, settings.max_recent_items)
    reads, read_many = [], table.read_many
    monkeypatch.setattr(table, "read_many", lambda user_ids: reads.append(list(user_ids)) or read_many(user_ids))
    reader = StateReader(table, feedback)

    async def requests():
        return await asyncio.gather(*(reader.read(user) for user in USERS))

    states = asyncio.run(requests())
    assert reads == [USERS]  # one read of the store for the whole turn
    assert [s.recent_items for s in states] == [["i1"], ["i2", "i3"], [], ["i1"]]
    assert states == [read_user(table, feedback, user) for user in USERS]  # as each would have read alone

    def down(user_ids):
        raise StoreUnavailable("the online store is down")

    monkeypatch.setattr(table, "read_many", down)

    async def failing():
        return await asyncio.gather(*(reader.read(user) for user in USERS[:2]), return_exceptions=True)

    first, second = asyncio.run(failing())
    assert all(isinstance(e, RuntimeError) and "the online store is down" in str(e) for e in (first, second))
    assert first is not second  # each request's own error: its fallback, logged once
