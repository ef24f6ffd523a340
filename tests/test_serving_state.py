"""Serving under faults, over real HTTP (`rtrec serve`, 2 workers) and in process: a DELETE racing
POSTs, a worker that stalls or dies, a Redis that stops answering, a registry pointing at a missing
or damaged model, a catalog that appears after startup, a power loss in the registry, and user ids
kept out of logs and metrics."""

import contextlib
import gc
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
import redis
from fastapi.testclient import TestClient

from cli.demo import start_api
from model.experiments import Experiments
from model.registry import Registry
from rtrec import redis_server
from rtrec.feature_store import open_store
from rtrec.online_state import UserLocks, read_online
from rtrec.redis_server import free_port
from rtrec.settings import get_settings
from serving.app import create_app
from serving.catalog import Catalog
from serving.forgetting import finish_pending
from serving.model_holder import ModelHolder
from tests.http_server import AUTH, Server
from tests.sites import ITEMS, add_version, make_site, settle, write_marts


@pytest.fixture(autouse=True)
def fresh_settings():
    yield
    get_settings.cache_clear()


def logged_events(data, user):
    rows = []
    for path in sorted((data / "landing" / "feedback").glob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("user_id") == user]


def metric(text, name):
    """The sum of a metric's samples in Prometheus text (0 when absent)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


# -- a DELETE racing POSTs ---------------------------------------------------------------------


def test_post_racing_delete_never_brings_forgotten_events_back(tmp_path, monkeypatch):
    data = make_site(tmp_path, monkeypatch)
    server = Server(data, workers=2, RTREC_MAX_RECENT_ITEMS="1000")
    try:
        user = f"racer-{uuid.uuid4().hex[:8]}"

        def post(batch):
            events = [{"user_id": user, "item_id": f"b{batch}-{n}", "event_type": "view"} for n in range(20)]
            return httpx.post(f"{server.url}/v1/events", json={"events": events}, headers=AUTH, timeout=60).status_code

        def delete(_):
            for _ in range(20):  # a 503 (lock busy) asks for a retry
                status = httpx.delete(f"{server.url}/v1/users/{user}", headers=AUTH, timeout=60).status_code
                if status != 503:
                    return status
            return status

        work = [(post, n) for n in range(40)] + [(delete, n) for n in range(12)]
        random.Random(7).shuffle(work)
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda job: job[0](job[1]), work))
        assert set(statuses) <= {200, 202}, statuses
        # what the feedback log kept is exactly what was received after the last deletion
        kept = sorted(e["item_id"] for e in logged_events(data, user))
        online = sorted(read_online(open_store(get_settings()), user)[0].recent_items)
        assert set(online) <= set(kept), f"forgotten events came back online: {set(online) - set(kept)}"
        failures = metric(httpx.get(f"{server.url}/metrics").text, "rtrec_online_write_failures_total")
        if not failures:  # every online update went through: then nothing received later is missing either
            assert online == kept
    finally:
        server.kill()


# -- a store that stops answering --------------------------------------------------------------


def launch_redis(port):
    proc = subprocess.Popen(
        [str(redis_server.redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    client, deadline = redis.Redis(port=port), time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


def test_a_worker_stalled_for_seconds_is_waited_for_and_a_dead_one_replaced(tmp_path, monkeypatch):
    """A worker busy for a few seconds (a model loading on a loaded host) is waited for: uvicorn's
    default would kill it after 5 s without an answer to a ping, and its requests in flight with it."""
    server = Server(make_site(tmp_path, monkeypatch), workers=2)
    try:

        def workers():  # the supervisor's children, less multiprocessing's resource tracker
            found = set()
            for child in psutil.Process(server.proc.pid).children():
                with contextlib.suppress(psutil.Error):  # one just dead is a zombie until the supervisor reaps it
                    if "spawn_main" in " ".join(child.cmdline()):
                        found.add(child.pid)
            return found

        before = workers()
        assert len(before) == 2
        stalled = min(before)
        os.kill(stalled, signal.SIGSTOP)
        time.sleep(8)  # the supervisor pings every 0.5 s
        os.kill(stalled, signal.SIGCONT)
        time.sleep(1)
        assert workers() == before, "the stalled worker was restarted"
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        # one that dies is replaced, and the log says so
        os.kill(stalled, signal.SIGKILL)
        settle(lambda: len(workers() - {stalled}) == 2, 60)
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert f"Child process [{stalled}] died" in server.stderr()
    finally:
        server.kill()


def test_the_demos_api_logs_to_a_file_and_does_not_start_beside_a_server_on_its_port(tmp_path, monkeypatch):
    make_site(tmp_path, monkeypatch)
    settings = get_settings()
    proc, url, log = start_api(settings, free_port())
    try:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert f"Uvicorn running on {url}" in log.read_text()  # in the file, not on the demo's screen
        with pytest.raises(RuntimeError, match="already answers"):
            start_api(settings, int(url.rsplit(":", 1)[1]))
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_hung_redis_costs_one_fast_failure_and_recovers_without_a_restart(tmp_path, monkeypatch):
    proc, url = redis_server.start()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    data = make_site(tmp_path, monkeypatch, "redis", url)
    server = Server(data, workers=2, RTREC_ONLINE_STORE="redis", RTREC_REDIS_URL=url)
    restarted = None
    try:
        store = open_store(get_settings())
        user = f"steady-{uuid.uuid4().hex[:8]}"
        event = {"user_id": user, "item_id": "i1", "event_type": "view"}
        assert httpx.post(f"{server.url}/v1/events", json=event, headers=AUTH).status_code == 202
        assert read_online(store, user)[0].recent_items == ["i1"]
        os.kill(proc.pid, signal.SIGSTOP)  # hung: connections hang instead of being refused

        batch = {"events": [{"user_id": f"{user}-{n % 50}", "item_id": "i2", "event_type": "view"} for n in range(500)]}

        def timed(method, path, **kwargs):
            started = time.perf_counter()
            reply = httpx.request(method, f"{server.url}{path}", timeout=60, **kwargs)
            return reply, time.perf_counter() - started

        calls = [("POST", "/v1/events", {"json": batch, "headers": AUTH})] * 3
        calls += [("GET", f"/v1/recommendations/{user}", {})] * 4 + [("GET", "/healthz", {})] * 4
        with ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(lambda c: timed(c[0], c[1], **c[2]), calls))
        for (method, path, _), (reply, seconds) in zip(calls, answers):
            assert seconds < 5, f"{method} {path} took {seconds:.1f} s with the store down"
            assert reply.status_code == (202 if method == "POST" else 200), reply.text
        assert all(r.json()["accepted"] == 500 for r, _ in answers[:3])
        assert all(r.json()["fallback"] and len(r.json()["items"]) == 10 for r, _ in answers[3:7])
        text = httpx.get(f"{server.url}/metrics").text
        assert metric(text, "rtrec_online_write_failures_total") >= 1500
        # failed fast, not waited out: each worker's first call timed out, the calls after it (reads
        # and a batch's update) were refused at once
        assert metric(text, "rtrec_online_store_rejected_total") >= 1
        assert user not in server.stderr()

        proc.kill()  # restart it: the API is not restarted
        proc.wait(10)
        restarted = launch_redis(port)
        other = f"back-{uuid.uuid4().hex[:8]}"
        deadline, n = time.monotonic() + 20, 0
        while not read_online(store, other)[0].recent_items:
            assert time.monotonic() < deadline, "online updates never came back"
            event = {"user_id": other, "item_id": f"i{n % 30}", "event_type": "view"}
            assert httpx.post(f"{server.url}/v1/events", json=event, headers=AUTH).status_code == 202
            n += 1
            time.sleep(0.2)
        settle(lambda: not httpx.get(f"{server.url}/v1/recommendations/{other}").json()["fallback"])
        settle(lambda: httpx.get(f"{server.url}/healthz").json()["online_store"] == "closed")
    finally:
        for p in (proc, restarted):  # first: SIGKILL ends a stopped redis-server too
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        server.kill()


# -- serving state: model and catalog --------------------------------------------------------


def test_workers_start_without_model_or_catalog_and_pick_them_up_later(tmp_path, monkeypatch, good_model):
    data = make_site(tmp_path, monkeypatch, marts=False)
    (data / "models" / "CURRENT").write_text("v-missing\n")
    server = Server(data, workers=2)
    try:
        health = httpx.get(f"{server.url}/healthz").json()
        assert health["status"] == "degraded" and health["model_version"] is None
        assert "v-missing" in health["model_error"]
        body = httpx.get(f"{server.url}/v1/recommendations/someone").json()
        assert body["cold_start"] and body["items"] == [] and body["model_version"] is None

        write_marts(data, popular=ITEMS[::-1])  # the nightly run lands a catalog after startup
        expected = ITEMS[::-1][:10]
        settle(
            lambda: [i["item_id"] for i in httpx.get(f"{server.url}/v1/recommendations/x").json()["items"]] == expected
        )

        user = f"shopper-{uuid.uuid4().hex[:6]}"
        events = [{"user_id": user, "item_id": i, "event_type": "view"} for i in ("i1", "i2", "i3")]
        assert httpx.post(f"{server.url}/v1/events", json={"events": events}, headers=AUTH).status_code == 202
        version = add_version(data, good_model, "v-good")
        Registry(data / "models").promote(version)
        form = "onnx" if json.loads((good_model / "metrics.json").read_text())["compressed"]["passed"] else "float32"
        settle(lambda: httpx.get(f"{server.url}/healthz").json() | {"catalog_items": 0} == healthy(version, form))
        body = httpx.get(f"{server.url}/v1/recommendations/{user}").json()
        assert body["model_version"] == version and not body["cold_start"] and len(body["items"]) == 10
    finally:
        server.kill()


def healthy(version, form):
    return {
        "status": "ok",
        "model_version": version,
        "model_form": form,  # the compressed form when the version's check passed
        "model_error": None,
        "online_store": "closed",
        "catalog_items": 0,
        "catalog_error": None,
        "experiment": None,
        "experiment_error": None,
    }


def test_damaged_weights_never_stop_the_workers_nor_replace_a_good_model(tmp_path, monkeypatch, good_model):
    data = make_site(tmp_path, monkeypatch)
    registry = Registry(data / "models")
    registry.promote(add_version(data, good_model, "v1-damaged", damage=True))
    server = Server(data, workers=2)
    try:
        health = httpx.get(f"{server.url}/healthz").json()
        assert health["status"] == "degraded" and health["model_version"] is None
        assert "v1-damaged" in health["model_error"]
        body = httpx.get(f"{server.url}/v1/recommendations/someone").json()
        assert body["cold_start"] and [i["item_id"] for i in body["items"]] == ITEMS[:10]

        registry.promote(add_version(data, good_model, "v2-good"))
        settle(lambda: httpx.get(f"{server.url}/healthz").json()["status"] == "ok")
        assert httpx.get(f"{server.url}/healthz").json()["model_version"] == "v2-good"

        registry.promote(add_version(data, good_model, "v3-damaged", damage=True))

        def still_serving_the_good_one():
            health = httpx.get(f"{server.url}/healthz").json()
            return health["status"] == "degraded" and health["model_version"] == "v2-good" and health["model_error"]

        settle(still_serving_the_good_one)
        assert "v3-damaged" in httpx.get(f"{server.url}/healthz").json()["model_error"]
        user = f"shopper-{uuid.uuid4().hex[:6]}"
        event = {"user_id": user, "item_id": "i4", "event_type": "view"}
        assert httpx.post(f"{server.url}/v1/events", json=event, headers=AUTH).status_code == 202
        body = httpx.get(f"{server.url}/v1/recommendations/{user}").json()
        assert body["model_version"] == "v2-good" and not body["cold_start"]

        assert registry.rollback() == "v2-good"
        settle(lambda: httpx.get(f"{server.url}/healthz").json()["status"] == "ok")
    finally:
        server.kill()


def test_the_model_holder_never_raises_and_keeps_the_last_good_model(tmp_path, good_model, caplog):
    registry = Registry(tmp_path / "models")
    (tmp_path / "models").mkdir()
    registry.pointer.write_text("v-missing\n")
    holder = ModelHolder(registry, retry_seconds=0)
    assert holder.recommender is None and holder.degraded and "v-missing" in holder.error
    good = add_version(tmp_path, good_model, "v-good")
    registry.promote(good)
    holder.refresh()
    assert holder.version == good and holder.error is None and not holder.degraded
    registry.promote(add_version(tmp_path, good_model, "v-damaged", damage=True))
    holder.refresh()
    assert holder.version == good and "v-damaged" in holder.error and holder.degraded
    (registry.versions / "v-empty").mkdir()
    registry.promote("v-empty")
    holder.refresh()
    assert holder.version == good and "v-empty" in holder.error
    assert any("still serving v-good" in r.getMessage() for r in caplog.records)


def test_the_catalog_follows_the_mart_and_keeps_the_last_good_one(tmp_path):
    catalog = Catalog(tmp_path / "marts")
    assert catalog.popular == [] and not catalog.refresh()
    write_marts(tmp_path)
    assert catalog.refresh() and [i for i, _ in catalog.top(3, set())] == ITEMS[:3]
    assert not catalog.refresh()  # unchanged: not read again
    path = tmp_path / "marts" / "item_features.parquet"
    path.write_bytes(b"PAR1 torn")
    assert not catalog.refresh() and "item_features" in catalog.error
    assert [i for i, _ in catalog.top(3, set())] == ITEMS[:3]
    write_marts(tmp_path, popular=ITEMS[::-1])
    assert catalog.refresh() and catalog.error is None
    assert [i for i, _ in catalog.top(3, {"i29"})] == ["i28", "i27", "i26"]


# -- the heap a worker keeps out of the collector's full passes ---------------------------------


def collected(obj) -> bool:
    """True when `obj` is in the collector's generations (not frozen out of them)."""
    return any(o is obj for o in gc.get_objects())


def test_the_served_state_stays_out_of_full_collections_and_a_swapped_out_one_is_freed(
    tmp_path, monkeypatch, good_model
):
    data = make_site(tmp_path, monkeypatch)
    registry = Registry(data / "models")
    registry.promote(add_version(data, good_model, "v1"))
    for version in ("v2", "v3"):
        add_version(data, good_model, version)
    app = create_app(get_settings().model_copy(update={"serving_tick_seconds": 0.05}))
    try:
        with TestClient(app) as client:
            state = app.state

            def planted(model):
                """A weak reference to `model`, given a reference cycle only a collection frees."""
                model.self_reference = model
                return weakref.ref(model)

            def settled(gone, version):
                served = state.models.recommender
                return gone() is None and served.version == version and not collected(served)

            assert state.models.recommender.version == "v1"
            assert not collected(state.models.recommender) and not collected(state.catalog.current)
            gone = planted(state.models.recommender)
            registry.promote("v2")  # the watcher swaps, then settles on its next tick
            settle(lambda: settled(gone, "v2"), times=1)
            assert client.get("/v1/recommendations/someone").json()["model_version"] == "v2"

            Experiments(get_settings().experiments_dir, registry).start("v2", "v3", 0.5)
            settle(lambda: state.models.running is not None and not collected(state.models.running), times=1)
            gone = planted(state.models.running.models["v3"])
            Experiments(
                get_settings().experiments_dir, registry
            ).stop()  # no winner: v3 is dropped, nothing replaces it
            settle(lambda: state.models.running is None and gone() is None, times=1)
    finally:
        gc.unfreeze()


def test_a_worker_loads_its_libraries_with_the_collector_off_and_serves_with_it_on(tmp_path, monkeypatch):
    make_site(tmp_path, monkeypatch)
    script = (
        "import gc, serving.worker\n"
        "assert not gc.isenabled()\n"
        "from fastapi.testclient import TestClient\n"
        "with TestClient(serving.worker.create_app()) as client:\n"
        "    assert client.get('/healthz').status_code == 200 and gc.isenabled()\n"
        "    assert gc.get_freeze_count() > 100_000\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


# -- the registry after a power loss -----------------------------------------------------------


def test_the_registry_fsyncs_versions_and_the_pointer_before_renaming_them(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd):
        calls.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst, *args, **kwargs):
        calls.append(("rename", os.path.realpath(src), os.path.realpath(dst)))
        real_rename(src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        calls.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    root = tmp_path.resolve() / "models"
    registry = Registry(root)

    def write(directory):
        (directory / "weights.pt").write_bytes(b"w" * 1000)
        (directory / "config.json").write_text("{}")
        (directory / "extra").mkdir()
        (directory / "extra" / "vocab.json").write_text("{}")

    version = registry.create(write)
    (move,) = [n for n, c in enumerate(calls) if c[0] == "rename"]
    staging = calls[move][1]
    synced_before = {c[1] for c in calls[:move] if c[0] == "fsync"}
    for name in ("weights.pt", "config.json", "extra/vocab.json", "extra", ""):
        assert os.path.normpath(os.path.join(staging, name)) in synced_before, f"{name or 'the version dir'}"
    assert str(root / "versions") in synced_before
    assert ("fsync", str(root / "versions")) in calls[move + 1 :]  # the rename itself

    calls.clear()
    registry.promote(version)
    (switch,) = [n for n, c in enumerate(calls) if c[0] == "replace"]
    pointer_tmp = calls[switch][1]
    assert calls[switch][2] == str(root / "CURRENT")
    assert ("fsync", pointer_tmp) in calls[:switch]
    assert ("fsync", str(root)) in calls[switch + 1 :]
    assert registry.current() == version


# -- faults cost an online update, not a request; no user id in logs or metrics -----------------


@pytest.fixture
def app_client(tmp_path, monkeypatch, good_model):
    data = make_site(tmp_path, monkeypatch)
    Registry(data / "models").promote(add_version(data, good_model, "v-good"))
    # the watcher's tick (which also finishes pending deletions) is left to the tests that want it
    with TestClient(create_app(get_settings().model_copy(update={"serving_tick_seconds": 3600}))) as client:
        yield client


def sample(name, **labels):
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_busy_user_lock_costs_an_online_update_not_the_request(app_client):
    settings = get_settings()
    user = f"locked-{uuid.uuid4().hex[:6]}"
    other_worker = UserLocks(settings.feast_dir / "locks")
    failures = sample("rtrec_online_write_failures_total")
    with other_worker.hold(user):
        started = time.perf_counter()
        reply = app_client.post(
            "/v1/events", json={"user_id": user, "item_id": "i1", "event_type": "view"}, headers=AUTH
        )
        assert reply.status_code == 202 and time.perf_counter() - started < 3
    assert sample("rtrec_online_write_failures_total") == failures + 1
    assert [e["item_id"] for e in logged_events(settings.data_dir, user)] == ["i1"]  # durable all the same
    assert app_client.app.state.user_state.breaker.state == "closed"


def test_no_user_id_in_logs_or_metrics(app_client, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    secret = f"secret-user-{uuid.uuid4().hex}"
    state = app_client.app.state
    events = [{"user_id": secret, "item_id": i, "event_type": "view"} for i in ("i1", "i2", "i3")]
    assert app_client.post("/v1/events", json={"events": events}, headers=AUTH).status_code == 202
    body = app_client.get(f"/v1/recommendations/{secret}").json()
    assert not body["cold_start"] and body["model_version"] == "v-good"
    assert app_client.get(f"/v1/recommendations/{secret}-new").json()["cold_start"]
    assert app_client.get(f"/v1/users/{secret}/history").status_code == 200

    def broken(*args, **kwargs):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(state.models.recommender, "recommend_batch", broken)  # the model fails
    assert app_client.get(f"/v1/recommendations/{secret}").json()["fallback"]

    def down(*args, **kwargs):
        raise ConnectionError("online store down")

    monkeypatch.setattr(state.user_state.provider, "online_read", down)  # then the store
    assert app_client.get(f"/v1/recommendations/{secret}").json()["fallback"]
    assert app_client.post("/v1/events", json=events[0] | {"item_id": "i4"}, headers=AUTH).status_code == 202
    assert app_client.delete(f"/v1/users/{secret}", headers=AUTH).json()["online_state_cleared"] is False
    monkeypatch.undo()
    state.user_state.breaker.cooldown = 0
    assert app_client.delete(f"/v1/users/{secret}", headers=AUTH).json()["online_state_cleared"] is True
    assert app_client.get("/healthz").json()["status"] == "ok"

    text = app_client.get("/metrics").text
    assert "rtrec_online_store_breaker_state" in text and secret not in text
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any("popular fallback" in r.getMessage() for r in server_side)  # the faults were logged...
    for record in server_side:  # ...without naming the user
        assert secret not in record.getMessage(), record.getMessage()
    assert secret not in "".join(logging.Formatter().formatException(r.exc_info) for r in server_side if r.exc_info)


def test_a_delete_while_the_store_is_down_is_done_and_stays_done(app_client, monkeypatch):
    """The log forgets at once (200); until the store takes the tombstone the user reads as
    forgotten, a new event starts a new history, and the tombstone lands once the store is back."""
    state = app_client.app.state
    old, fresh = f"old-{uuid.uuid4().hex[:6]}", f"fresh-{uuid.uuid4().hex[:6]}"
    for user in (old, fresh):
        events = [{"user_id": user, "item_id": i, "event_type": "view"} for i in ("i1", "i2", "i3")]
        assert app_client.post("/v1/events", json={"events": events}, headers=AUTH).status_code == 202
        assert not app_client.get(f"/v1/recommendations/{user}").json()["cold_start"]

    def down(*args, **kwargs):
        raise ConnectionError("online store down")

    with monkeypatch.context() as outage:
        outage.setattr(state.user_state.provider, "online_read", down)
        outage.setattr(state.user_state.provider, "online_write_batch", down)
        for user in (old, fresh):
            reply = app_client.delete(f"/v1/users/{user}", headers=AUTH)
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"user_id": user, "feedback_events_removed": 3, "online_state_cleared": False}
    state.user_state.breaker.cooldown = 0
    settings = get_settings()
    assert logged_events(settings.data_dir, old) == []
    assert read_online(open_store(settings), old)[0].recent_items == ["i1", "i2", "i3"]  # the store still has it...
    for user in (old, fresh):  # ...but nothing reads it
        assert app_client.get(f"/v1/recommendations/{user}").json()["cold_start"]
        assert app_client.get(f"/v1/users/{user}/history").json()["recent_items"] == []
    new_event = {"user_id": fresh, "item_id": "i9", "event_type": "click"}
    assert app_client.post("/v1/events", json=new_event, headers=AUTH).status_code == 202
    assert app_client.get(f"/v1/users/{fresh}/history").json()["recent_items"] == ["i9"]  # a new history
    assert [u for u, _ in state.feedback.pending_forgets()] == [old]

    assert finish_pending(state.user_state, state.locks, state.feedback) == 1  # the watcher's tick
    assert state.feedback.pending_forgets() == []
    stored = {u: read_online(open_store(settings), u)[0].recent_items for u in (old, fresh)}
    assert stored == {old: [], fresh: ["i9"]}


@pytest.mark.parametrize("repeatable", [[], ["purchase"]])
def test_seen_items_stay_out_unless_the_deployment_lets_their_event_type_repeat(
    tmp_path, monkeypatch, good_model, repeatable
):
    """A purchase and a view, then a long history pushing both out of the recent list: neither is
    recommended again, unless purchases may repeat (a shop of consumables)."""
    data = make_site(tmp_path, monkeypatch)
    Registry(data / "models").promote(add_version(data, good_model, "v-good"))
    settings = get_settings().model_copy(update={"max_recent_items": 5, "repeatable_event_types": repeatable})
    events = [
        {"user_id": "u", "item_id": "i1", "event_type": "purchase"},
        {"user_id": "u", "item_id": "i2", "event_type": "view"},
        *({"user_id": "u", "item_id": f"i{n}", "event_type": "view"} for n in range(3, 10)),
    ]
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/events", json={"events": events}, headers=AUTH).status_code == 202
        assert client.get("/v1/users/u/history").json()["recent_items"] == [f"i{n}" for n in range(5, 10)]
        shown = {i["item_id"] for i in client.get("/v1/recommendations/u", params={"k": 100}).json()["items"]}
    assert shown == set(ITEMS) - {e["item_id"] for e in events} | ({"i1"} if repeatable else set())
