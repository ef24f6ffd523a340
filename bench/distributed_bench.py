"""Training time per epoch with one process against torchrun with several (DDP, gloo on CPUs), on
the same marts, the same preset and the same number of optimizer steps.

    python bench/distributed_bench.py [--dataset movielens|generated] [--epochs 3] [--processes 2]

Prints, per setup, the median seconds of an epoch's training (evaluation excluded: rank 0 does it
alone), optimizer steps per epoch, the speedup over one process, and the best validation NDCG@10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from rich.console import Console
from rich.table import Table

from bench.quality import load
from model.config import preset
from model.distributed import command, environment
from model.train import train
from rtrec.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="movielens", choices=["movielens", "generated"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    console = Console(width=120)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = load(args.dataset, root / "data", root / "cache")
        marts = get_settings().marts_dir
        # every epoch runs: no early stop, so each setup takes the same steps
        overrides = {"epochs": args.epochs, "patience": args.epochs, "device": "cpu"}
        rows = []
        for threads in (torch.get_num_threads(), 1):
            torch.set_num_threads(threads)
            console.print(f"one process, {threads} thread(s)")
            result = train(data, *preset("cpu", **overrides), progress=True)
            rows.append((f"1 process, {threads} thread(s)", result.history))
        console.print(f"torchrun, {args.processes} processes")
        report = root / "report.json"
        line = command(args.processes, "cpu", marts, root / "models", report, epochs=args.epochs, device="cpu")
        subprocess.run(line, check=True, env=environment(args.processes), stdout=subprocess.DEVNULL)
        rows.append((f"torchrun, {args.processes} processes", json.loads(report.read_text())["history"]))

    table = Table(title=f"Training per epoch, {args.dataset}, preset cpu, {args.epochs} epochs")
    for column in ("setup", "s / epoch (median)", "steps / epoch", "speedup", "best val NDCG@10"):
        table.add_column(column, justify="right" if column != "setup" else "left")
    base = statistics.median(h["seconds"] for h in rows[0][1])
    for name, history in rows:
        seconds = statistics.median(h["seconds"] for h in history)
        best = max(h["val_ndcg@10"] for h in history)
        table.add_row(name, f"{seconds:.1f}", str(history[0]["steps"]), f"{base / seconds:.2f}x", f"{best:.4f}")
    console.print(table)


if __name__ == "__main__":
    main()
