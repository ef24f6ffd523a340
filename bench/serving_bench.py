"""End-to-end HTTP latency and throughput of `rtrec serve` on loopback.

    python bench/serving_bench.py [--items 10000] [--rate 200] [--seconds 10] [--workers 2]

Fixed-rate (open-loop) GET and POST runs, then closed-loop saturation runs. The load generator
shares this machine's cores with the server, so saturation figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from rich.console import Console
from rich.table import Table

from bench.common import percentiles, prepare
from rtrec.generate import ShopConfig
from rtrec.redis_server import free_port


def get(client, users):
    return client.get(f"/v1/recommendations/u{uuid.uuid4().int % users}")


def post(client, users):
    body = {"user_id": f"u{uuid.uuid4().int % users}", "item_id": f"i{uuid.uuid4().int % 10_000}", "event_type": "view"}
    return client.post("/v1/events", json=body)


async def succeeded(request) -> bool:
    try:
        return (await request).status_code < 400
    except httpx.TransportError:
        return False


async def fixed_rate(url, call, users, rate, seconds):
    latencies, errors = [], 0
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=200)) as client:

        async def one():
            nonlocal errors
            start = time.perf_counter()
            errors += not await succeeded(call(client, users))
            latencies.append(time.perf_counter() - start)

        tasks, begin = [], time.perf_counter()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin
    return latencies, errors, len(latencies) / elapsed


async def saturate(url, call, users, concurrency, seconds):
    latencies, errors = [], 0
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=concurrency)) as client:
        stop = time.perf_counter() + seconds

        async def loop():
            nonlocal errors
            while time.perf_counter() < stop:
                start = time.perf_counter()
                errors += not await succeeded(call(client, users))
                latencies.append(time.perf_counter() - start)

        begin = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - begin
    return latencies, errors, len(latencies) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    cfg = ShopConfig(users=20_000, items=args.items, events=1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        prepare(data, cfg, train_preset="cpu", epochs=1)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        rtrec = str(Path(sys.executable).with_name("rtrec"))
        server = subprocess.Popen(
            [rtrec, "serve", "--port", str(port), "--workers", str(args.workers)],
            env={**os.environ, "RTREC_DATA_DIR": str(data)},
            start_new_session=True,
        )
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            asyncio.run(fixed_rate(url, get, cfg.users, 50, 2))  # warm-up
            table = Table(
                "run",
                "requests/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "errors",
                title=f"rtrec serve, {args.workers} workers, {cfg.items:,}-item catalog, loopback",
            )
            runs = [
                (f"GET at {args.rate}/s", fixed_rate(url, get, cfg.users, args.rate, args.seconds)),
                (f"POST at {args.rate}/s", fixed_rate(url, post, cfg.users, args.rate, args.seconds)),
                (
                    f"GET saturated ({args.concurrency} clients)",
                    saturate(url, get, cfg.users, args.concurrency, args.seconds),
                ),
                (
                    f"POST saturated ({args.concurrency} clients)",
                    saturate(url, post, cfg.users, args.concurrency, args.seconds),
                ),
            ]
            for name, run in runs:
                latencies, errors, throughput = asyncio.run(run)
                p = percentiles(latencies)
                table.add_row(
                    name, f"{throughput:,.0f}", f"{p['p50']:.2f}", f"{p['p90']:.2f}", f"{p['p99']:.2f}", str(errors)
                )
            Console(width=140).print(table)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


if __name__ == "__main__":
    main()
