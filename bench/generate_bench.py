"""Time and peak memory of `rtrec generate` at scale (default: 10M events, 100k users, 10k items).

python bench/generate_bench.py [--events N]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rtrec.generate import ShopConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    cfg = ShopConfig(users=args.users, items=args.items, events=args.events)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = generate(cfg, Path(tmp) / "landing")
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in (Path(tmp) / "landing").rglob("*") if f.is_file())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = Table("events", "users", "items", "rows written", "seconds", "events/s", "peak RSS MiB", "MiB on disk")
    table.add_row(
        f"{cfg.events:,}",
        f"{cfg.users:,}",
        f"{cfg.items:,}",
        f"{manifest['total_rows']:,}",
        f"{seconds:.1f}",
        f"{cfg.events / seconds:,.0f}",
        f"{peak_mib:,.0f}",
        f"{size / 2**20:,.0f}",
    )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
