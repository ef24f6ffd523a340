"""Settings chosen on the validation split: a training run tries its preset's settings and then each
of the preset's alternatives (model/config.py), every one early-stopped, and keeps the model whose
best validation NDCG@10 is highest. The right regularisation differs by data set (a dense shop
wants little dropout, MovieLens' long, sparse histories strong dropout), so the defaults find it
themselves.

The run's time budget covers the whole search: each setting gets what the earlier ones left, and
one is started only if it is likely to end within it at the pace of those before it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from model.config import TrainConfig, for_catalog
from model.data import SequenceData
from model.sasrec import ModelConfig
from model.train import TrainResult, train

Setting = tuple[ModelConfig, TrainConfig]


@dataclass
class Choice:
    result: TrainResult  # the chosen setting's model and its training history
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    tried: list[dict]  # per setting tried: what it changed, its best validation NDCG@10, seconds
    index: int  # the chosen setting's

    @property
    def changes(self) -> dict:
        """What the chosen setting changed in the first one (empty: the first)."""
        return self.tried[self.index]["changes"]


def changes(setting: Setting, base: Setting) -> dict:
    """The fields in which `setting` differs from `base`."""
    return {
        name: value
        for cfg, origin in zip(setting, base)
        for name, value in cfg.to_dict().items()
        if origin.to_dict()[name] != value
    }


def checkpoint_of(checkpoint: Path | None, index: int) -> Path | None:
    """Setting `index`'s checkpoint: the run's own for the first, one beside it for each other."""
    if checkpoint is None or index == 0:
        return checkpoint
    return checkpoint.with_name(f"{checkpoint.stem}-{index}{checkpoint.suffix}")


def leader_says(go: bool) -> bool:
    """Under torch.distributed, rank 0's decision on every rank (they must train the same settings)."""
    if not dist.is_initialized():
        return go
    flag = torch.tensor([float(go)], device="cuda" if dist.get_backend() == "nccl" else "cpu")  # NCCL: GPU only
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def choose(
    data: SequenceData,
    settings: Sequence[Setting],
    checkpoint: Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> Choice:
    """Train each setting in turn (the first always) and keep the best on validation NDCG@10.
    `checkpoint` makes each setting resumable (see `checkpoint_of`); `on_epoch` gets every epoch's
    record with `setting`, the number (from 1) of the setting it belongs to."""
    settings = [(model_cfg, for_catalog(train_cfg, data.vocab.n_items)) for model_cfg, train_cfg in settings]
    budget = settings[0][1].budget_seconds
    started = time.perf_counter()
    best: Choice | None = None
    tried: list[dict] = []
    for index, (model_cfg, train_cfg) in enumerate(settings):
        spent = time.perf_counter() - started
        if index and not leader_says(budget is None or spent + spent / index <= budget):
            break
        result = train(
            data,
            model_cfg,
            train_cfg if budget is None else replace(train_cfg, budget_seconds=budget - spent),
            checkpoint=checkpoint_of(checkpoint, index),
            progress=progress,
            on_epoch=None if on_epoch is None else lambda record, i=index: on_epoch(record | {"setting": i + 1}),
        )
        score = result.best.get("val_ndcg@10", float("-inf"))
        tried.append(
            {
                "changes": changes((model_cfg, train_cfg), settings[0]),
                "val_ndcg@10": score,
                "epochs": len(result.history),
                "seconds": result.seconds,
            }
        )
        if best is None or score > best.result.best.get("val_ndcg@10", float("-inf")):
            best = Choice(result, result.model.cfg, train_cfg, tried, index)  # the model's: content may be off
    best.result.seconds = time.perf_counter() - started
    return best
