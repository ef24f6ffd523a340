"""HTTP throughput and latency of `rtrec serve` on loopback, each beside `/healthz` from the same run.

    python bench/serving_bench.py [--items 10000] [--store sqlite|redis|both] [--rate 200] [--seconds 10]
                                  [--profile DIR]

Machines here differ by about 3x from one day to the next, so the figures that matter are ratios
against the same server's `/healthz` (the cost of the HTTP stack itself): saturated GET and POST
throughput over saturated `/healthz`, and GET/POST p99 at a fixed rate over `/healthz` p99 at that
rate. The load comes from wrk (`bench/wrk.py`), a C load generator on the same two cores. A POST's
online update that fails (a locked SQLite, a Redis timeout) is counted from the server's own
`rtrec_online_write_failures_total`, even though the event itself was durable. With `--profile`,
py-spy then samples the workers under each saturating load, on the same server: flame graphs in
DIR and a table of where the workers' time goes (`bench/worker_profile.py`; uvicorn's workers: under
granian the HTTP work runs in native threads py-spy does not name). `RTREC_API_SERVER=granian`
measures granian instead of uvicorn.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from rich.console import Console
from rich.table import Table

from bench import worker_profile, wrk
from bench.common import prepare, start_api
from rtrec import redis_server
from rtrec.generate import ShopConfig
from rtrec.redis_server import free_port
from rtrec.settings import Settings


def online_write_failures(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(v) for v in re.findall(r"^rtrec_online_write_failures_total(?:\{[^}]*\})? (\S+)$", text, re.M))


def measure(url: str, args, cfg: ShopConfig) -> dict[str, wrk.Result]:
    def one(kind: str, rate: float | None) -> wrk.Result:
        connections = args.connections if rate is None else args.paced_connections
        return wrk.run(url, kind, args.seconds, connections, cfg.users, cfg.items, rate=rate)

    one("get", None)  # warm-up: first model calls, SQLite pages, connection pools
    results = {}
    for kind in ("healthz", "get", "post"):
        results[f"{kind} saturated"] = one(kind, None)
        results[f"{kind} at {args.rate}/s"] = one(kind, args.rate)
    return results


def report(store: str, results: dict[str, wrk.Result], failures: float, args, cfg: ShopConfig) -> None:
    title = (
        f"rtrec serve ({Settings().api_server}), {args.workers} workers, {cfg.items:,}-item catalog, "
        f"{store} online store, loopback, "
        f"wrk {args.connections} connections saturated / {args.paced_connections} paced"
    )
    columns = ("run", "requests/s", "p50 ms", "p90 ms", "p99 ms", "non-2xx", "socket errors", "vs /healthz")
    table = Table(*columns, title=title)
    paced = f"at {args.rate}/s"
    for name, r in results.items():
        base = results[f"healthz {'saturated' if 'saturated' in name else paced}"]
        ratio = r.rate / base.rate if "saturated" in name else r.p99_ms / base.p99_ms
        kind = "throughput" if "saturated" in name else "p99"
        table.add_row(
            name,
            f"{r.rate:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p90_ms:.2f}",
            f"{r.p99_ms:.2f}",
            str(r.non_2xx),
            str(r.socket_errors),
            "" if name.startswith("healthz") else f"{ratio:.2f}x {kind}",
        )
    console = Console(width=160)
    console.print(table)
    console.print(f"online updates that failed during the POST runs ({store}): {failures:.0f}")


def where_time_goes(supervisor: int, url: str, store: str, args, cfg: ShopConfig) -> None:
    """Flame graphs of the workers under each saturating load, and the share of their samples per part."""
    args.profile.mkdir(parents=True, exist_ok=True)
    kinds = ("healthz", "get", "post")
    counts = {
        kind: worker_profile.record(
            supervisor,
            url,
            kind,
            args.seconds,
            args.connections,
            cfg.users,
            cfg.items,
            args.profile / f"{store}-{kind}",
        )
        for kind in kinds
    }
    table = Table("part", *(f"{kind} saturated" for kind in kinds), title=f"where the workers' time goes ({store})")
    parts = [name for name, _ in worker_profile.PARTS] + [worker_profile.HTTP, worker_profile.OTHER]
    for part in parts:
        table.add_row(part, *(f"{counts[k][part] / max(sum(counts[k].values()), 1):.0%}" for k in kinds))
    table.add_row("samples (busy threads)", *(f"{sum(counts[k].values()):,}" for k in kinds))
    Console(width=160).print(table)
    print(f"flame graphs and collapsed stacks: {args.profile}/{store}-<kind>.svg, .txt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--store", choices=("sqlite", "redis", "both"), default="both")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--paced-connections", type=int, default=20)
    parser.add_argument("--profile", type=Path, help="also write py-spy flame graphs of the workers here")
    args = parser.parse_args()
    wrk.require_wrk()
    if args.profile:
        worker_profile.require_py_spy()
    cfg = ShopConfig(users=args.users, items=args.items, events=args.events)
    stores = ("sqlite", "redis") if args.store == "both" else (args.store,)
    for store in stores:
        with tempfile.TemporaryDirectory() as tmp, redis_server.running() as redis_url:
            env = {"RTREC_ONLINE_STORE": store, "RTREC_REDIS_URL": redis_url}
            os.environ.update(env)
            prepare(Path(tmp), cfg, train_preset="cpu", epochs=1)
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env |= {"RTREC_DATA_DIR": tmp}
            server = start_api({**os.environ, **env}, port, Path(tmp) / "serve.log", args.workers)
            try:
                before = online_write_failures(url)
                results = measure(url, args, cfg)
                report(store, results, online_write_failures(url) - before, args, cfg)
                if args.profile:
                    where_time_goes(server.pid, url, store, args, cfg)
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(30)


if __name__ == "__main__":
    main()
