"""The HTTP API over real HTTP: `rtrec serve` processes against a real online store and model."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pyarrow.parquet as pq
import pytest

from flows.etl import etl
from flows.materialize import materialize
from model.config import preset
from model.data import load_marts
from model.lifecycle import train_and_register
from model.registry import Registry
from rtrec.feature_store import open_store
from rtrec.generate import ShopConfig, generate
from rtrec.online_state import read_online
from rtrec.settings import get_settings
from tests.conftest import start_redis
from tests.http_server import AUTH, TOKEN, Server
from tests.sites import settle


@pytest.fixture(scope="module")
def shop(tmp_path_factory, prefect_harness):
    """Generated shop -> dbt -> Feast -> a trained, promoted model. Tastes weigh more than in the
    default shop so that a few events in one category visibly move a user's recommendations."""
    data = tmp_path_factory.mktemp("served")
    os.environ["RTREC_DATA_DIR"] = str(data)
    get_settings.cache_clear()
    shop_cfg = ShopConfig(users=800, items=150, events=80_000, dirty_rate=0.0, categories=6, p_next=0.3, p_taste=0.5)
    generate(shop_cfg, data / "landing")
    etl()
    materialize()
    model_cfg, train_cfg = preset("cpu", epochs=40, patience=10, lr=2e-3)
    train_and_register(load_marts(data / "marts"), Registry(data / "models"), model_cfg, train_cfg, progress=False)
    yield data
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def server(shop):
    srv = Server(shop)
    yield srv
    srv.kill()


def events_of(data, user):
    rows = []
    for path in sorted((data / "landing" / "feedback").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["user_id"] == user]


def test_known_user_gets_model_recommendations(shop, server):
    reply = httpx.get(f"{server.url}/v1/recommendations/u1", params={"k": 5})
    assert reply.status_code == 200
    body = reply.json()
    assert len(body["items"]) == 5 and not body["cold_start"] and not body["fallback"]
    assert body["model_version"] == Registry(shop / "models").current()
    state, _ = read_online(open_store(get_settings()), "u1")
    assert not set(state.recent_items) & {i["item_id"] for i in body["items"]}  # what the user has is filtered out
    token, arm, version = body["request_id"].split(".")  # which list it was, and who answered it
    assert uuid.UUID(token) and (arm, version) == ("none", body["model_version"]) and body["arm"] is None


def test_unknown_user_gets_a_cold_start_list(server):
    body = httpx.get(f"{server.url}/v1/recommendations/nobody-{uuid.uuid4()}").json()
    assert body["cold_start"] and len(body["items"]) == 10


def category_share(url, user, items_by_category, category):
    top = [i["item_id"] for i in httpx.get(f"{url}/v1/recommendations/{user}").json()["items"]]
    return sum(items_by_category[i] == category for i in top) / len(top)


def test_feedback_changes_the_very_next_recommendation(shop, server):
    items = pq.read_table(shop / "marts" / "item_features.parquet").to_pandas()
    category_of = dict(zip(items.item_id, items.category))
    user = "u5"
    top = [i["item_id"] for i in httpx.get(f"{server.url}/v1/recommendations/{user}").json()["items"]]
    shares = Counter(category_of[i] for i in top)
    category = min(sorted(set(category_of.values())), key=lambda c: shares[c])  # the least recommended one
    before = category_share(server.url, user, category_of, category)
    chosen = items[items.category == category].sort_values("popularity_all", ascending=False).item_id[:8]
    events = [{"user_id": user, "item_id": i, "event_type": "click"} for i in chosen]
    reply = httpx.post(f"{server.url}/v1/events", json={"events": events}, headers=AUTH)
    assert reply.status_code == 202 and reply.json()["accepted"] == 8
    after = category_share(server.url, user, category_of, category)
    assert after > before


def test_a_repeated_event_id_is_accepted_once(server):
    event = {"event_id": f"dup-{uuid.uuid4()}", "user_id": "u9", "item_id": "i3", "event_type": "view"}
    assert httpx.post(f"{server.url}/v1/events", json=event, headers=AUTH).json() == {"accepted": 1, "received": 1}
    assert httpx.post(f"{server.url}/v1/events", json=event, headers=AUTH).json() == {"accepted": 0, "received": 1}
    batch = {"events": [event, {**event, "event_id": f"new-{uuid.uuid4()}"}]}
    assert httpx.post(f"{server.url}/v1/events", json=batch, headers=AUTH).json() == {"accepted": 1, "received": 2}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u1", "item_id": "i1", "event_type": "teleport"}, "event_type"),
        ({"user_id": "", "item_id": "i1", "event_type": "view"}, "user_id"),
        ({"user_id": "u" * 129, "item_id": "i1", "event_type": "view"}, "user_id"),
        ({"user_id": "u1", "event_type": "view"}, "item_id"),
        ({"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "2999-01-01T00:00:00Z"}, "ts"),
        ({"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "yesterday"}, "ts"),
        ({"user_id": "u1", "item_id": "i1", "event_type": "view", "colour": "red"}, "colour"),
    ],
)
def test_invalid_events_get_a_4xx_naming_the_field(server, body, field):
    reply = httpx.post(f"{server.url}/v1/events", json=body, headers=AUTH)
    assert reply.status_code == 422
    assert field in json.dumps(reply.json()["detail"])


def test_bad_requests_are_4xx_not_5xx(server):
    assert (
        httpx.post(
            f"{server.url}/v1/events", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
        ).status_code
        == 422
    )
    too_many = {"events": [{"user_id": "u1", "item_id": "i1", "event_type": "view"}] * 501}
    assert httpx.post(f"{server.url}/v1/events", json=too_many, headers=AUTH).status_code == 413
    huge = b'{"user_id": "' + b"x" * 2_000_000 + b'"}'
    assert (
        httpx.post(
            f"{server.url}/v1/events", content=huge, headers={**AUTH, "content-type": "application/json"}
        ).status_code
        == 413
    )
    assert httpx.get(f"{server.url}/v1/recommendations/u1", params={"k": 0}).status_code == 422
    assert httpx.get(f"{server.url}/v1/recommendations/" + "u" * 200).status_code == 422


def test_writes_need_the_token(server):
    event = {"user_id": "u1", "item_id": "i1", "event_type": "view"}
    assert httpx.post(f"{server.url}/v1/events", json=event).status_code == 401
    assert (
        httpx.post(f"{server.url}/v1/events", json=event, headers={"Authorization": "Bearer wrong"}).status_code == 401
    )
    assert httpx.delete(f"{server.url}/v1/users/u1").status_code == 401


def test_concurrent_writers_for_one_user_lose_nothing(shop, server):
    user = f"hot-{uuid.uuid4().hex[:6]}"
    items = [f"i{n}" for n in range(40)]

    def post(item):
        return httpx.post(
            f"{server.url}/v1/events", json={"user_id": user, "item_id": item, "event_type": "view"}, headers=AUTH
        )

    with ThreadPoolExecutor(8) as pool:
        assert all(r.status_code == 202 for r in pool.map(post, items))
    state, _ = read_online(open_store(get_settings()), user)
    assert sorted(state.recent_items) == sorted(items)
    assert sorted(e["item_id"] for e in events_of(shop, user)) == sorted(items)


def test_delete_forgets_the_user_everywhere(shop, server):
    user = f"gone-{uuid.uuid4().hex[:6]}"
    httpx.post(f"{server.url}/v1/events", json={"user_id": user, "item_id": "i2", "event_type": "view"}, headers=AUTH)
    reply = httpx.delete(f"{server.url}/v1/users/{user}", headers=AUTH)
    assert reply.status_code == 200 and reply.json()["feedback_events_removed"] == 1
    assert events_of(shop, user) == []
    assert read_online(open_store(get_settings()), user)[0].recent_items == []
    deletions = (shop / "landing" / "deletions.jsonl").read_text()
    assert user in deletions
    assert httpx.get(f"{server.url}/v1/recommendations/{user}").json()["cold_start"]


def test_metrics_and_health(server):
    httpx.get(f"{server.url}/v1/recommendations/u1")
    text = httpx.get(f"{server.url}/metrics").text
    assert "rtrec_http_requests_total" in text and "rtrec_http_request_seconds_bucket" in text
    assert 'rtrec_model_version_info{version="' in text
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"


def test_a_new_current_model_is_served_without_restart_or_errors(shop, server):
    registry = Registry(shop / "models")
    old = registry.current()
    model_cfg, train_cfg = preset("tiny", epochs=1)
    report = train_and_register(load_marts(shop / "marts"), registry, model_cfg, train_cfg, progress=False)
    errors, seen = [], set()
    registry.promote(report.version)
    deadline = time.time() + 20
    while time.time() < deadline and report.version not in seen:
        reply = httpx.get(f"{server.url}/v1/recommendations/u1")
        if reply.status_code != 200:
            errors.append(reply.status_code)
        seen.add(reply.json()["model_version"])
    assert errors == []
    assert report.version in seen
    registry.rollback()
    assert registry.current() == old


def test_acknowledged_events_survive_sigkill(shop):
    srv = Server(shop, workers=2)
    ids = [f"kill-{uuid.uuid4()}" for _ in range(30)]
    for event_id in ids:
        reply = httpx.post(
            f"{srv.url}/v1/events",
            headers=AUTH,
            json={"event_id": event_id, "user_id": "u7", "item_id": "i4", "event_type": "view"},
        )
        assert reply.status_code == 202
    srv.kill(signal.SIGKILL)
    logged = {e["event_id"] for e in events_of(shop, "u7")}
    assert set(ids) <= logged
    again = Server(shop, workers=1)
    try:
        replay = {"events": [{"event_id": i, "user_id": "u7", "item_id": "i4", "event_type": "view"} for i in ids]}
        assert httpx.post(f"{again.url}/v1/events", json=replay, headers=AUTH).json()["accepted"] == 0
    finally:
        again.kill()


def test_online_store_outage_degrades_to_the_popular_list(shop, prefect_harness, monkeypatch):
    redis_proc, url = start_redis()  # a server of its own, since this test kills it
    monkeypatch.setenv("RTREC_ONLINE_STORE", "redis")
    monkeypatch.setenv("RTREC_REDIS_URL", url)
    get_settings.cache_clear()
    materialize()
    srv = Server(shop, workers=1, RTREC_ONLINE_STORE="redis", RTREC_REDIS_URL=url)
    try:
        assert not httpx.get(f"{srv.url}/v1/recommendations/u1").json()["fallback"]
        redis_proc.kill()
        redis_proc.wait()
        body = httpx.get(f"{srv.url}/v1/recommendations/u1").json()
        assert body["fallback"] and len(body["items"]) == 10
        assert "rtrec_fallbacks_total 1.0" in httpx.get(f"{srv.url}/metrics").text
        # writes stay durable and fast while the online store is down; the online update is counted as failed
        event = {"user_id": "u1", "item_id": "i2", "event_type": "view"}
        started = time.perf_counter()
        assert httpx.post(f"{srv.url}/v1/events", json=event, headers=AUTH).json()["accepted"] == 1
        assert time.perf_counter() - started < 3
        assert "rtrec_online_write_failures_total 1.0" in httpx.get(f"{srv.url}/metrics").text
    finally:
        srv.kill()
        get_settings.cache_clear()


def gone(pid):
    """The process has exited (a zombie until its parent reaps it): its sockets are closed."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_granian_serves_the_same_api_and_replaces_a_dead_worker(shop):
    """RTREC_API_SERVER=granian: the same app behind granian's HTTP server (model lists, feedback
    changing the next one, 4xx for bad requests, metrics), and a worker that dies is replaced while
    the other one serves."""
    srv = Server(shop, workers=2, RTREC_API_SERVER="granian")
    try:
        assert "Starting granian" in srv.stderr()
        settle(lambda: srv.stderr().count("Started worker") == 2, 60, times=1)  # both serving, not one
        test_known_user_gets_model_recommendations(shop, srv)
        test_feedback_changes_the_very_next_recommendation(shop, srv)
        test_bad_requests_are_4xx_not_5xx(srv)
        test_metrics_and_health(srv)
        workers = dict(re.findall(r"Spawning (worker-\d+) with PID: (\d+)", srv.stderr()))
        assert len(workers) == 2
        os.kill(int(workers["worker-1"]), signal.SIGKILL)
        # each granian worker listens on a socket of its own: the connections queued on the dead one's
        # are reset (README, Settings); once it is gone, the other worker takes every new one
        settle(lambda: gone(int(workers["worker-1"])), 10, times=1)
        deadline = time.monotonic() + 60
        while srv.stderr().count("Started worker-1") < 2:  # until its replacement has started
            assert httpx.get(f"{srv.url}/v1/recommendations/u1").status_code == 200  # the other worker serves
            assert time.monotonic() < deadline, srv.stderr()[-2000:]
            time.sleep(0.2)
        assert re.findall(r"Spawning worker-1 with PID: (\d+)", srv.stderr())[-1] != workers["worker-1"]
        test_known_user_gets_model_recommendations(shop, srv)
    finally:
        srv.kill()


def test_schemathesis_finds_no_server_errors(server):
    schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    done = subprocess.run(
        [
            schemathesis,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "30",
            "-H",
            f"Authorization: Bearer {TOKEN}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:]
