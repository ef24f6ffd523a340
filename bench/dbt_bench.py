"""`dbt build` time versus data size: a full build, then an incremental build after 10% more events.

python bench/dbt_bench.py [--events 1000000 10000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from bench.common import dbt
from rtrec.generate import ShopConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    table = Table(
        "events", "full build s", "incremental build s (+10%)", "full / incremental", title="dbt build on DuckDB"
    )
    for events in args.events:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            generate(ShopConfig(users=max(1000, events // 100), items=10_000, events=events), data / "landing")
            files = sorted((data / "landing" / "events").glob("*.parquet"))
            whole = pq.read_table(files)
            for f in files:
                f.unlink()
            cut = int(whole.num_rows / 1.1)
            pq.write_table(whole.slice(0, cut), data / "landing" / "events" / "events-00000.parquet")
            full = dbt(data, "build")
            pq.write_table(whole.slice(cut), data / "landing" / "events" / "events-00001.parquet")
            incremental = dbt(data, "build")
        table.add_row(f"{events:,}", f"{full:.1f}", f"{incremental:.1f}", f"{full / incremental:.2f}")
        Console(width=140).print(table)


if __name__ == "__main__":
    main()
