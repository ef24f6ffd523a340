"""Training in several processes under torchrun: DistributedDataParallel over gloo on CPUs, NCCL on GPUs.

The train flow starts it when RTREC_TRAIN_PROCESSES > 1 (`command` builds the line); on a cluster the
same module runs under torchrun's multi-node options. Every rank reads the same marts and runs
`model.train.train`, which shares each batch out and averages gradients (see there). Rank 0 then
evaluates, registers and applies the promotion gate as a single process does, printing one
`EPOCH {json}` line per epoch and writing the report as JSON for the flow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from model.config import alternatives, preset
from model.data import load_marts
from model.lifecycle import train_and_register
from model.registry import Registry
from model.tuning import choose

EPOCH_LINE = "EPOCH "


def command(processes: int, preset_name: str, marts: Path, models: Path, report: Path, **train: object) -> list[str]:
    """The torchrun command line for one machine with `processes` ranks (run it with `environment`);
    `train`: epochs, device, budget_seconds (TrainConfig fields the preset's are replaced with)."""
    line = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    line += ["-m", "model.distributed", "--preset", preset_name, "--marts", str(marts), "--models", str(models)]
    line += ["--report", str(report)]
    return line + [f"--{name.replace('_', '-')}={value}" for name, value in train.items() if value is not None]


def environment(processes: int) -> dict[str, str]:
    """The environment for `command`: the cores shared out between the ranks (torchrun's own default
    is one thread each), unless OMP_NUM_THREADS is set already."""
    threads = max(1, (os.cpu_count() or 1) // processes)
    return {"OMP_NUM_THREADS": str(threads), **os.environ}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budget-seconds", type=float)
    parser.add_argument("--marts", type=Path, required=True)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)

    cuda = args.device != "cpu" and torch.cuda.is_available()
    if cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if local_rank >= torch.cuda.device_count():
            raise SystemExit(f"rank {local_rank} has no GPU: {torch.cuda.device_count()} on this host, one per process")
        torch.cuda.set_device(local_rank)  # "cuda" then means this rank's GPU
    # the other ranks wait in a collective while rank 0 evaluates: allow for a long evaluation
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
    try:
        data = load_marts(args.marts)
        changed = {"device": args.device, "epochs": args.epochs, "budget_seconds": args.budget_seconds}
        changed = {name: value for name, value in changed.items() if value is not None}
        model_cfg, train_cfg = preset(args.preset, **changed)
        others = alternatives(args.preset, **changed)
        checkpoint = args.models / "checkpoint.pt"
        if dist.get_rank() != 0:
            choose(data, [(model_cfg, train_cfg), *others], checkpoint=checkpoint, progress=False)
            return

        def on_epoch(record: dict) -> None:
            print(EPOCH_LINE + json.dumps(record), flush=True)

        report = train_and_register(
            data,
            Registry(args.models),
            model_cfg,
            train_cfg,
            checkpoint=checkpoint,
            progress=False,
            on_epoch=on_epoch,
            alternatives=others,
        )
        args.report.write_text(json.dumps(asdict(report) | {"processes": dist.get_world_size()}))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
