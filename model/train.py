"""Training: loss at every position, early stopping on validation NDCG@10, resumable checkpoints."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from model.checkpoint import TrainState
from model.config import TrainConfig
from model.data import SequenceData
from model.evaluate import evaluate
from model.sasrec import ModelConfig, SASRec
from model.scorer import sasrec_scorer
from model.windows import length_batches, training_windows


@dataclass
class TrainResult:
    model: SASRec
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def window_tensors(data: SequenceData, model_cfg: ModelConfig, train_cfg: TrainConfig) -> tuple[torch.Tensor, ...]:
    """(inputs, event types, targets, gap buckets) of every training window; fails when there is nothing to learn."""
    windows = training_windows(data, model_cfg.max_len, train_cfg.all_windows)
    if not len(windows[0]) or not data.has_holdout.any():
        raise ValueError(
            f"no training data: {len(windows[0])} training sequences, {int(data.has_holdout.sum())} users with a "
            "validation and test interaction (a user needs at least 3 interactions)"
        )
    return tuple(torch.from_numpy(a) for a in windows)


def train_epoch(
    state: TrainState, windows: tuple[torch.Tensor, ...], train_cfg: TrainConfig, device: torch.device
) -> float:
    """One pass over the windows in length-sorted batches; the mean batch loss."""
    inputs = windows[0]
    lengths = (inputs > 0).sum(1)
    state.model.train()
    total, batches = 0.0, 0
    for batch in length_batches(lengths, train_cfg.batch_size, state.generator):
        width = int(lengths[batch].max())  # sequences are left-padded: keep only the columns in use
        x, e, y, g = (t[batch, -width:].to(device) for t in windows)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = state.model.loss(x, e, y, g, train_cfg.negatives)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        total, batches = total + loss.item(), batches + 1
    return total / max(batches, 1)


def keep_best(state: TrainState, record: dict) -> None:
    """Add an epoch's record; copy its weights if its validation NDCG@10 is the best so far, else count it stale."""
    state.history.append(record)
    state.epoch = record["epoch"]
    if not state.best or record["val_ndcg@10"] > state.best["val_ndcg@10"]:
        state.best, state.stale = record, 0
        state.best_state = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
    else:
        state.stale += 1


def train(
    data: SequenceData,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    checkpoint: Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train on the training part of every sequence; keep the weights of the best validation epoch.

    With `checkpoint`, the state after every epoch is saved there and a run that finds one resumes.
    `on_epoch` gets each epoch's record (epoch, loss, validation metrics) with `epochs` (the limit)
    and `best` (the best validation NDCG@10 so far), e.g. to log a line per epoch."""
    seed_everything(train_cfg.seed)
    device = resolve_device(train_cfg.device)
    model = SASRec.from_vocab(model_cfg, data.vocab).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    windows = window_tensors(data, model_cfg, train_cfg)
    state = TrainState(model, optimizer, torch.Generator().manual_seed(train_cfg.seed))
    if checkpoint is not None and checkpoint.exists():
        state.resume(checkpoint)
    started, first = time.perf_counter(), state.epoch + 1
    epochs = tqdm(
        range(first, train_cfg.epochs), desc="training", total=train_cfg.epochs, initial=first, disable=not progress
    )
    for epoch in epochs:
        loss = train_epoch(state, windows, train_cfg, device)
        metrics = evaluate(sasrec_scorer(model, device), data, "validation")
        record = {"epoch": epoch, "loss": loss, **{f"val_{k}": v for k, v in metrics.items()}}
        keep_best(state, record)
        best = state.best["val_ndcg@10"]
        if on_epoch is not None:
            on_epoch({**record, "epochs": train_cfg.epochs, "best": best})
        epochs.set_postfix(loss=f"{loss:.3f}", val_ndcg=f"{metrics['ndcg@10']:.4f}", best=f"{best:.4f}")
        if checkpoint is not None:
            state.save(checkpoint)
        if state.stale >= train_cfg.patience:
            break
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    return TrainResult(model, state.history, state.best, time.perf_counter() - started, str(device))
