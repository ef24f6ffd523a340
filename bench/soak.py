"""Soak: mixed GET/POST/DELETE traffic against 2 API workers on Redis while faults happen, then every promise checked.

    python bench/soak.py [--seconds 600] [--rate 200] [--clients 8]

During the traffic a nightly run executes, one API worker is SIGKILLed (uvicorn starts a new one),
and redis-server is stopped for 30 s and started again (append-only file, fsync always, so it
comes back with its data). After the traffic a final nightly run brings the warehouse up to date,
and the script reports: requests answered, 5xx, acknowledged events missing from the warehouse,
events counted twice, deleted users that privacy-audit still finds, users whose online state
differs from the warehouse's replay of their events, and GET p99 during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb
import httpx
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from bench.common import percentiles, start_api, use_data_dir
from rtrec import redis_server
from rtrec.generate import ShopConfig, generate
from rtrec.settings import get_settings

TOKEN = "soak-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RTREC = str(Path(sys.executable).with_name("rtrec"))
AUDITED_USERS = 20


@dataclass
class Ledger:
    """What the clients saw: every acknowledged event and deletion with the times around them."""

    answered: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    get_latencies: list[float] = field(default_factory=list)
    acked: dict[str, tuple[str, float, float]] = field(default_factory=dict)  # event_id -> (user, sent, acked)
    # user -> [(sent, answered, done)]: done when the answer was a 200; a DELETE whose answer never
    # came (a worker killed under it) may or may not have happened
    deletions: dict[str, list[tuple[float, float, bool]]] = field(default_factory=dict)

    def expected(self) -> tuple[set[str], set[str]]:
        """(events that must be in the warehouse, events that must be gone); events whose POST and a
        DELETE of their user overlapped in time, or came before a DELETE of unknown outcome, may be
        either, and are in neither set."""
        present, gone = set(), set()
        for event_id, (user, sent, acked) in self.acked.items():
            windows = self.deletions.get(user, [])
            if any(done and deleted_sent > acked for deleted_sent, _, done in windows):
                gone.add(event_id)
            elif all(sent > answered for _, answered, _ in windows):
                present.add(event_id)
        return present, gone

    def forgotten(self) -> list[str]:
        """Users with a done DELETE sent after every acknowledgement of their events."""
        last_event: dict[str, float] = {}
        for user, _, acked in self.acked.values():
            last_event[user] = max(last_event.get(user, 0.0), acked)
        last_delete = {u: max((s for s, _, done in w if done), default=None) for u, w in self.deletions.items()}
        return sorted(u for u, s in last_delete.items() if s is not None and s > last_event.get(u, 0.0))


class Redis:
    """A redis-server with an append-only file, so a stop and a start keep its data."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port, self.proc = folder, redis_server.free_port(), None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = redis_server.launch(
            self.port, "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Nightly:
    """`rtrec pipeline` in the background, its log in a file (a pipe nobody reads would fill and stall it)."""

    def __init__(self, env: dict, name: str) -> None:
        self.log = Path(env["RTREC_DATA_DIR"]) / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [RTREC, "pipeline", "--preset", "tiny", "--epochs", "2"], env=env, stdout=out, stderr=out
            )

    def failure(self) -> str | None:
        """None once it finished well; the end of its log when it failed."""
        return None if self.proc.wait() == 0 else self.log.read_text(errors="replace")[-3000:]


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in out]


async def traffic(url: str, users: int, items: int, rate: float, seconds: float, clients: int, ledger: Ledger) -> None:
    rng = random.Random(7)
    limits = httpx.Limits(max_connections=clients * 4)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits, headers=AUTH) as client:

        async def one(kind: str) -> None:
            user = f"u{rng.randrange(users)}"
            sent = time.monotonic()
            try:
                if kind == "get":
                    reply = await client.get(f"/v1/recommendations/{user}")
                    ledger.get_latencies.append(time.monotonic() - sent)
                elif kind == "post":
                    events = [
                        {
                            "event_id": str(uuid.uuid4()),
                            "user_id": user,
                            "item_id": f"i{rng.randrange(items)}",
                            "event_type": rng.choice(("view", "click", "add_to_cart")),
                        }
                        for _ in range(rng.randint(1, 3))
                    ]
                    reply = await client.post("/v1/events", json={"events": events})
                    if reply.status_code == 202:
                        for event in events:
                            ledger.acked[event["event_id"]] = (user, sent, time.monotonic())
                else:
                    try:
                        reply = await client.delete(f"/v1/users/{user}")
                    except httpx.TransportError:
                        ledger.deletions.setdefault(user, []).append((sent, time.monotonic(), False))
                        raise
                    if reply.status_code == 200:
                        ledger.deletions.setdefault(user, []).append((sent, time.monotonic(), True))
            except httpx.TransportError:
                ledger.transport_errors += 1
                return
            ledger.answered += 1
            ledger.server_errors += reply.status_code >= 500

        tasks, begin = [], time.monotonic()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + n / rate - time.monotonic()))
            kind = rng.choices(("get", "post", "delete"), weights=(60, 38, 2))[0]
            tasks.append(asyncio.create_task(one(kind)))
        await asyncio.gather(*tasks)


def feedback_ids(feedback_dir: Path) -> list[str]:
    """The event id of every well-formed line of the API's feedback log."""
    ids = []
    for path in feedback_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                ids.append(json.loads(line)["event_id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return ids


def check(ledger: Ledger, env: dict) -> dict:
    from rtrec.feature_store import open_store
    from rtrec.online_state import UserStateTable

    settings = get_settings()
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        in_warehouse = [row[0] for row in con.execute("select event_id from stg_events").fetchall()]
    stored = set(in_warehouse)
    present, gone = ledger.expected()
    logged = feedback_ids(settings.feedback_dir)
    twice = (len(in_warehouse) - len(stored)) + (len(logged) - len(set(logged)))
    forgotten = ledger.forgotten()  # deleted and silent since: privacy-audit must find them nowhere
    audited = random.Random(0).sample(forgotten, min(AUDITED_USERS, len(forgotten)))  # one process each, ~3 s
    audit_hits = sum(
        subprocess.run([RTREC, "privacy-audit", user], env=env, capture_output=True).returncode != 0 for user in audited
    )
    marts = pq.read_table(settings.marts_dir / "user_features.parquet", columns=["user_id", "recent_items"])
    expected_state = dict(zip(marts.column("user_id").to_pylist(), marts.column("recent_items").to_pylist()))
    table = UserStateTable(open_store(settings))
    users = set(expected_state) | set(ledger.deletions)
    differ = sum(list(table.read(u).recent_items) != list(expected_state.get(u) or []) for u in users)
    return {
        "requests answered": ledger.answered,
        "5xx": ledger.server_errors,
        "transport errors": ledger.transport_errors,
        "events acknowledged": len(ledger.acked),
        "acknowledged events missing from the warehouse": len(present - stored),
        "forgotten events still in the warehouse": len(gone & stored),
        "events counted twice": twice,
        "users deleted (and silent since)": len(forgotten),
        "deleted users audited (a sample)": len(audited),
        "deleted users found by privacy-audit": audit_hits,
        "users checked online": len(users),
        "users whose online state differs from the warehouse": differ,
        "GET p99 ms": round(percentiles(ledger.get_latencies)["p99"], 1) if ledger.get_latencies else None,
    }


async def run_with_faults(url, env, api, redis, args, cfg, ledger, console) -> None:
    """The traffic, with a nightly run, a worker SIGKILL and a Redis outage at fixed points of it."""
    load = asyncio.create_task(traffic(url, cfg.users, cfg.items, args.rate, args.seconds, args.clients, ledger))
    await asyncio.sleep(args.seconds * 0.1)
    console.print("fault: a nightly run starts during the traffic")
    nightly = Nightly(env, "nightly-during-traffic")
    await asyncio.sleep(args.seconds * 0.2)
    victim = worker_pids(api.pid)[0]
    console.print(f"fault: SIGKILL API worker {victim}")
    os.kill(victim, signal.SIGKILL)
    await asyncio.sleep(args.seconds * 0.2)
    outage = min(30.0, args.seconds * 0.15)
    console.print(f"fault: redis-server stopped for {outage:.0f} s")
    redis.stop()
    await asyncio.sleep(outage)
    redis.start()
    console.print("redis-server is back")
    await load
    while nightly.proc.poll() is None:
        await asyncio.sleep(1)
    if failed := nightly.failure():
        console.print(f"[yellow]the nightly run during the traffic failed[/yellow]: {failed}")


def soak(args, data: Path, console: Console) -> dict:
    cfg = ShopConfig(users=args.users, items=500, events=args.events)
    redis = Redis(data)
    redis.start()
    settings_env = {"RTREC_ONLINE_STORE": "redis", "RTREC_REDIS_URL": redis.url, "RTREC_API_TOKEN": TOKEN}
    use_data_dir(data, **settings_env)
    env = {**os.environ, "RTREC_DATA_DIR": str(data), **settings_env}
    try:
        generate(cfg, get_settings().landing_dir)
        with console.status("first nightly run"):
            if failed := Nightly(env, "first-nightly").failure():
                raise RuntimeError(failed)
        port = redis_server.free_port()
        api = start_api(env, port, Path(env["RTREC_DATA_DIR"]) / "serve.log")
        ledger = Ledger()
        try:
            asyncio.run(run_with_faults(f"http://127.0.0.1:{port}", env, api, redis, args, cfg, ledger, console))
        finally:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(30)
        with console.status("final nightly run"):
            if failed := Nightly(env, "final-nightly").failure():
                raise RuntimeError(failed)
        return check(ledger, env)
    finally:
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--rate", type=float, default=200, help="requests per second, all clients together")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        report = soak(args, Path(tmp), console)
    table = Table("measure", "value", title=f"soak: {args.seconds:.0f} s at {args.rate:.0f} req/s, 2 workers, Redis")
    for name, value in report.items():
        table.add_row(name, str(value))
    console.print(table)
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
