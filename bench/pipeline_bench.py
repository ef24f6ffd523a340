"""Time per step of the nightly flow versus data size (a Prefect temporary server runs it).

    python bench/pipeline_bench.py [--events 100000 1000000 10000000] [--epochs N]
Training is the nightly's: the cpu preset, early stopping, and RTREC_TRAIN_BUDGET_SECONDS (1200 by
default); --epochs caps it too. The table gives the epochs run and the model's validation NDCG@10.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from bench.common import use_data_dir
from rtrec.generate import ShopConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    from flows.etl import etl
    from flows.materialize import materialize
    from flows.train import train

    table = Table(
        "events",
        "generate s",
        "etl (dbt) s",
        "materialize s",
        "train s",
        "total s",
        "epochs",
        "val NDCG@10",
        title="nightly flow, time per step",
    )
    for events in args.events:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            use_data_dir(data)
            times = []
            shop = ShopConfig(users=max(1_000, events // 100), items=10_000, events=events)
            for step, kwargs in (
                (generate, {"cfg": shop, "landing": data / "landing"}),
                (etl, {}),
                (materialize, {}),
                (train, {"preset_name": "cpu", "epochs": args.epochs}),
            ):
                start = time.perf_counter()
                result = step(**kwargs)
                times.append(time.perf_counter() - start)
        table.add_row(
            f"{events:,}",
            *(f"{t:.1f}" for t in times),
            f"{sum(times):.1f}",
            str(len(result.history)),
            f"{result.metrics['validation_ndcg@10']:.4f}",
        )
        Console(width=140).print(table)


if __name__ == "__main__":
    main()
