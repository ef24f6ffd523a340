"""The Feast repo against real stores: SQLite, and Redis through a real redis-server."""

import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from feast.data_source import PushMode

from flows.etl import etl
from flows.materialize import materialize
from rtrec.feature_store import FEATURE_REPO_DIR, feast_redis_connection, open_store
from rtrec.generate import ShopConfig, generate
from rtrec.online_state import UserLocks, UserState, UserStateTable, appended, push_event, read_online, seen_after
from rtrec.redis_server import free_port
from rtrec.settings import get_settings


@pytest.fixture(scope="module")
def shop(tmp_path_factory, prefect_harness):
    """A generated shop through dbt, shared by this module's tests (read-only for them)."""
    data = tmp_path_factory.mktemp("shop")
    os.environ["RTREC_DATA_DIR"] = str(data)
    get_settings.cache_clear()
    generate(ShopConfig(users=150, items=100, events=8_000, dirty_rate=0.0), data / "landing")
    etl()
    yield data
    get_settings.cache_clear()


@pytest.fixture(params=["sqlite", "redis"])
def settings(request, shop, monkeypatch, prefect_harness):
    monkeypatch.setenv("RTREC_DATA_DIR", str(shop))
    monkeypatch.setenv("RTREC_ONLINE_STORE", request.param)
    if request.param == "redis":
        # the server lives for the session, in step with this data dir's Redis registry
        monkeypatch.setenv("RTREC_REDIS_URL", request.getfixturevalue("redis_url"))
    get_settings.cache_clear()
    materialize()
    yield get_settings()
    get_settings.cache_clear()


def locks_for(settings):
    return UserLocks(settings.feast_dir / "locks", settings.redis_url if settings.online_store == "redis" else None)


def mart_row(settings, user_id):
    frame = pq.read_table(settings.marts_dir / "user_features.parquet").to_pandas().set_index("user_id")
    return frame.loc[user_id]


def test_online_state_equals_the_mart_after_materialize(settings):
    store = open_store(settings)
    frame = pq.read_table(settings.marts_dir / "user_features.parquet").to_pandas()
    for _, row in frame.head(20).iterrows():
        state, _ = read_online(store, row.user_id)
        assert state.recent_items == list(row.recent_items)
        assert state.recent_event_types == list(row.recent_event_types)
        assert state.seen_items == list(row.seen_items) and state.seen_event_types == list(row.seen_event_types)
        assert set(state.recent_items) <= set(state.seen_items)


def test_one_read_returns_item_features_too(settings):
    store = open_store(settings)
    items = pq.read_table(settings.marts_dir / "item_features.parquet").to_pandas().set_index("item_id")
    wanted = [*items.index[:3], "not-an-item"]
    _, found = read_online(store, "u1", wanted)
    assert set(found) == set(wanted[:3])
    for item in wanted[:3]:
        assert found[item]["category"] == items.loc[item, "category"]


def test_a_push_is_readable_at_once(settings):
    store, locks = open_store(settings), locks_for(settings)
    user = str(pq.read_table(settings.marts_dir / "user_features.parquet").column("user_id")[0])
    before, _ = read_online(store, user)
    push_event(UserStateTable(store), locks, user, "i7", "click", datetime.now(UTC), settings.max_recent_items)
    push_event(UserStateTable(store), locks, user, "i7", "purchase", datetime.now(UTC), settings.max_recent_items)
    after, _ = read_online(store, user)
    assert after.recent_items[-1] == "i7" and after.recent_event_types[-1] == "purchase"
    assert after.recent_items[:-1] == before.recent_items[-(settings.max_recent_items - 1) :]
    assert after.seen_items == [*before.seen_items, "i7"] if "i7" not in before.seen_items else before.seen_items
    brand_new = f"new-user-{settings.online_store}"
    push_event(UserStateTable(store), locks, brand_new, "i3", "view", datetime.now(UTC), settings.max_recent_items)
    assert read_online(store, brand_new)[0].recent_items == ["i3"]


def _push_many(args):
    env, user, items = args
    os.environ.update(env)
    get_settings.cache_clear()
    settings = get_settings()
    table, locks = UserStateTable(open_store(settings)), locks_for(settings)
    for item in items:
        push_event(table, locks, user, item, "view", datetime.now(UTC), 1000)


def test_other_producers_can_write_through_the_push_source(settings):
    store = open_store(settings)
    row = pd.DataFrame(
        {
            "user_id": ["streamed"],
            "recent_items": [["i1", "i2"]],
            "recent_event_types": [["view", "click"]],
            "last_event_ts": [datetime.now(UTC)],
            "seen_items": [["i1", "i2"]],
            "seen_event_types": [["view", "click"]],
            "event_timestamp": [datetime.now(UTC)],
        }
    )
    store.push("user_state_push", row, to=PushMode.ONLINE)
    state = read_online(store, "streamed")[0]
    assert state.history() == [("i1", "view"), ("i2", "click")] and state.excluded() == {"i1", "i2"}


def test_concurrent_pushes_for_one_user_lose_nothing(settings):
    env = {k: v for k, v in os.environ.items() if k.startswith("RTREC_")}
    user = f"busy-{settings.online_store}"
    batches = [[f"item-{w}-{n}" for n in range(8)] for w in range(4)]
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(_push_many, [(env, user, b) for b in batches]))
    state, _ = read_online(open_store(settings), user)
    assert sorted(state.recent_items) == sorted(i for b in batches for i in b)


def test_materialize_again_is_idempotent(settings):
    store = open_store(settings)
    item = str(pq.read_table(settings.marts_dir / "item_features.parquet").column("item_id")[0])
    first = read_online(store, "u2", [item])
    materialize()
    assert read_online(open_store(settings), "u2", [item]) == first


def test_feature_state_lists_follow_the_funnel():
    state = UserState("u", ["a", "b"], ["view", "click"])
    assert appended(state, "b", "purchase", 10) == (["a", "b"], ["view", "purchase"])
    assert appended(state, "b", "view", 10) == (["a", "b"], ["view", "click"])
    assert appended(state, "c", "view", 2) == (["b", "c"], ["click", "view"])


def test_the_seen_set_keeps_every_item_once_with_its_strongest_type():
    state = UserState("u", seen_items=["a", "b"], seen_event_types=["purchase", "view"])
    assert seen_after(state, "a", "view") == (["a", "b"], ["purchase", "view"])  # no downgrade, no move
    assert seen_after(state, "b", "click") == (["a", "b"], ["purchase", "click"])
    assert seen_after(state, "c", "view", max_seen=2) == (["b", "c"], ["view", "view"])


def test_what_is_left_out_follows_the_repeat_policy():
    state = UserState("u", ["x"], ["view"], seen_items=["a", "b", "c"], seen_event_types=["purchase", "click", "view"])
    assert state.excluded() == {"a", "b", "c", "x"}
    assert state.excluded(["purchase"]) == {"b", "c", "x"}  # consumables: a purchase may come back


def test_historical_retrieval_is_point_in_time_correct(shop, monkeypatch, prefect_harness):
    monkeypatch.setenv("RTREC_DATA_DIR", str(shop))
    get_settings.cache_clear()
    materialize()
    daily = pq.read_table(shop / "marts" / "item_daily_stats.parquet").to_pandas()
    item = daily.groupby("item_id").size().idxmax()
    days = daily[daily.item_id == item].sort_values("day")
    first, second = days.iloc[0], days.iloc[1]
    end_first = pd.Timestamp(first.event_timestamp, tz="UTC")
    entity_df = pd.DataFrame(
        {
            "item_id": [item] * 3,
            # just before day one is over (nothing known yet), after it, and after day two
            "event_timestamp": [
                end_first - timedelta(seconds=1),
                end_first + timedelta(hours=1),
                pd.Timestamp(second.event_timestamp, tz="UTC") + timedelta(minutes=1),
            ],
        }
    )
    got = (
        open_store(get_settings())
        .get_historical_features(entity_df=entity_df, features=["item_daily_stats:events_to_date"])
        .to_df()
        .sort_values("event_timestamp")
    )
    values = got["events_to_date"].tolist()
    assert pd.isna(values[0])
    assert values[1:] == [first.events_to_date, second.events_to_date]


def test_feast_serve_answers_without_our_code(shop, monkeypatch, prefect_harness):
    monkeypatch.setenv("RTREC_DATA_DIR", str(shop))
    monkeypatch.setenv("RTREC_ONLINE_STORE", "sqlite")
    get_settings.cache_clear()
    materialize()
    # the last user: test_a_push_is_readable_at_once pushes to the first, and a push newer than the
    # batch stays online (the online state never goes back in time)
    user = str(pq.read_table(get_settings().marts_dir / "user_features.parquet").column("user_id")[-1])
    port = free_port()
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    proc = subprocess.Popen(
        [feast, "-c", str(FEATURE_REPO_DIR), "serve", "-h", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "RTREC_DATA_DIR": str(shop)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = {"features": ["user_state:recent_items"], "entities": {"user_id": [user]}}
        deadline = time.time() + 60
        while True:
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/get-online-features", json=body, timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.time() < deadline, "feast serve did not start"
                time.sleep(0.5)
        assert reply.status_code == 200, reply.text
        values = reply.json()["results"][1]["values"][0]
        assert values == list(mart_row(get_settings(), user).recent_items)
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_url_becomes_feasts_connection_string():
    timeouts = "socket_timeout=0.5,socket_connect_timeout=0.5,retry=null"
    assert feast_redis_connection("redis://10.0.0.5:6380/2") == f"10.0.0.5:6380,db=2,{timeouts}"
    assert feast_redis_connection("redis://:pw@h/0") == f"h:6379,db=0,{timeouts},password=pw"
    with pytest.raises(ValueError, match="redis_url"):
        feast_redis_connection("http://nope")
