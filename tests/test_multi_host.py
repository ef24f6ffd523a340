"""Two API hosts behind one redis-server: each its own data directory, both writing the shared
feedback log. Clients send every event to both, one host is SIGKILLed mid-traffic, and after the
nightly run the warehouse holds each acknowledged event exactly once."""

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest
import redis

import flows.nightly
from rtrec.generate import ShopConfig, generate
from rtrec.settings import get_settings
from rtrec.shared_log import EVENTS
from tests.http_server import AUTH, Server
from tests.sites import make_site

pytestmark = pytest.mark.usefixtures("prefect_harness")

SMALL = ShopConfig(users=60, items=40, events=3_000, dirty_rate=0.0)
EVENTS_SENT, BATCH = 400, 5


def post(host, batch):
    """The ids the host acknowledged (202), or none when it did not answer."""
    try:
        response = httpx.post(f"{host.url}/v1/events", json={"events": batch}, headers=AUTH, timeout=10)
    except httpx.TransportError:
        return []
    return [e["event_id"] for e in batch] if response.status_code == 202 else []


def test_two_hosts_one_killed_and_the_warehouse_holds_each_acknowledged_event_once(
    tmp_path, monkeypatch, durable_redis
):
    url = durable_redis["url"]
    monkeypatch.setenv("RTREC_FEEDBACK_LOG", "redis")
    sites = [make_site(tmp_path / name, monkeypatch, online_store="redis", redis_url=url) for name in ("a", "b")]
    hosts = [Server(site, workers=1) for site in sites]

    nightly_dir = tmp_path / "nightly" / "data"
    monkeypatch.setenv("RTREC_DATA_DIR", str(nightly_dir))
    monkeypatch.setenv("RTREC_ONLINE_STORE", "sqlite")
    get_settings.cache_clear()
    generate(SMALL, nightly_dir / "landing")
    batch_events = pq.read_table(nightly_dir / "landing" / "events").to_pylist()
    now = datetime.now(UTC).isoformat()
    events = [
        {"event_id": f"mh-{n}", "user_id": row["user_id"], "item_id": row["item_id"], "event_type": "click", "ts": now}
        for n, row in enumerate(batch_events[:EVENTS_SENT])
    ]
    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]

    acknowledged: set[str] = set()
    halfway = threading.Event()
    try:
        with ThreadPoolExecutor(4) as pool:
            killer = pool.submit(lambda: halfway.wait(60) and hosts[0].kill(signal.SIGKILL))
            for n, batch in enumerate(batches):
                # the same events to both hosts at once, as a client retrying through a load balancer does
                for answered in pool.map(post, hosts, [batch, batch]):
                    acknowledged.update(answered)
                if n == len(batches) // 2:
                    halfway.set()
            killer.result()
        assert hosts[0].proc.poll() is not None  # host a died mid-traffic
        missed = [e for e in events if e["event_id"] not in acknowledged]
        if missed:  # retried on the host that lives
            acknowledged.update(post(hosts[1], missed))
    finally:
        for host in hosts:
            if host.proc.poll() is None:
                host.kill()
    assert acknowledged == {e["event_id"] for e in events}
    assert redis.Redis.from_url(url).xlen(EVENTS) == EVENTS_SENT  # each event logged once across hosts

    # the nightly run on a third machine's data directory: only collect and dbt matter here
    monkeypatch.setattr(flows.nightly, "materialize", lambda: {})
    monkeypatch.setattr(flows.nightly, "train", lambda **_: {})
    monkeypatch.setenv("RTREC_REDIS_URL", url)
    get_settings.cache_clear()
    results = flows.nightly.nightly()
    assert results["collect"]["events"] == EVENTS_SENT
    with duckdb.connect(str(nightly_dir / "warehouse.duckdb")) as con:
        checked = con.execute(
            "select event_id, count(*), count(reason) from stg_events_checked where event_id like 'mh-%' group by 1"
        ).fetchall()
        clean = con.execute("select count(*) from stg_events where event_id like 'mh-%'").fetchone()[0]
    assert len(checked) == EVENTS_SENT and all(rows == 1 and rejected == 0 for _, rows, rejected in checked)
    assert clean == EVENTS_SENT
