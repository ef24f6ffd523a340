"""Training: loss at every position, early stopping on validation NDCG@10, resumable checkpoints.

Under torchrun (model/distributed.py starts it) the same `train` runs in every process: every rank
draws the same length-sorted batches (one generator seed) and takes its share of each one (rows
rank, rank + N, ...), and DistributedDataParallel averages the gradients, so an epoch takes as many
optimizer steps as with one process. Rank 0 alone evaluates, keeps the best weights and writes the
checkpoint, and tells the others when to stop."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from model.checkpoint import TrainState
from model.config import TrainConfig
from model.data import SequenceData
from model.evaluate import evaluate
from model.sasrec import ModelConfig, SASRec
from model.scorer import sasrec_scorer
from model.windows import length_batches, training_windows

log = logging.getLogger("rtrec.train")


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


class Loss(torch.nn.Module):
    """The model's loss as a module's forward, which is what DistributedDataParallel wraps."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, *batch: torch.Tensor, negatives: int = 0) -> torch.Tensor:
        return self.model.loss(*batch, negatives)


def train_epoch(
    state: TrainState,
    windows: tuple[torch.Tensor, ...],
    train_cfg: TrainConfig,
    device: torch.device,
    loss_of: torch.nn.Module,
) -> tuple[float, int]:
    """One pass over the windows in length-sorted batches: (the mean batch loss, optimizer steps).
    Under torch.distributed, this rank's share of each batch, through `loss_of` (DDP)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    inputs = windows[0]
    lengths = (inputs > 0).sum(1)
    state.model.train()
    total, batches = 0.0, 0
    for batch in length_batches(lengths, train_cfg.batch_size, state.generator):
        if len(batch) < world:  # every rank must step together; all of them skip this one
            continue
        batch = batch[rank::world]
        width = int(lengths[batch].max())  # sequences are left-padded: keep only the columns in use
        x, e, y, g = (t[batch, -width:].to(device) for t in windows)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_of(x, e, y, g, negatives=train_cfg.negatives)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        total, batches = total + loss.item(), batches + 1
    return total / max(batches, 1), batches


def fingerprint(data: SequenceData, model_cfg: ModelConfig, train_cfg: TrainConfig) -> str:
    """What a checkpoint must match to be resumed: the data (its size and last interaction) and
    the settings, but for those a resumed run may change (more epochs, another budget or device)."""
    settings = {k: v for k, v in train_cfg.to_dict().items() if k not in ("epochs", "budget_seconds", "device")}
    last = max((float(t[-1]) for t in data.times if len(t)), default=0.0)
    shape = [data.vocab.n_items, len(data.user_ids), sum(len(s) for s in data.items), last]
    payload = json.dumps([model_cfg.to_dict(), settings, shape], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def same_on_every_rank(value, what: str) -> None:
    """Raise on every rank unless `value` is the same on all of them."""
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"the training processes {what}: {values}")


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
    """Train on the training part of every sequence; keep the weights of the best validation epoch
    (judged on a fixed sample of at most `eval_users` users). Stops after `patience` epochs without
    a better one, or before an epoch that would end past `budget_seconds`.

    With `checkpoint`, the state after every epoch is saved there and a run that finds one resumes.
    `on_epoch` gets each epoch's record (epoch, loss, validation metrics) with `epochs` (the limit)
    and `best` (the best validation NDCG@10 so far), e.g. to log a line per epoch."""
    if model_cfg.content and data.content is None:
        # no embed step ran: a projection of zeros learns nothing, and would score new items at random
        log.warning("no item text embeddings (marts/item_content.parquet): training without content")
        model_cfg = replace(model_cfg, content=False, id_dropout=0.0)
    seed_everything(train_cfg.seed)
    device = resolve_device(train_cfg.device)
    model = SASRec.from_vocab(model_cfg, data.vocab, data.content if model_cfg.content else None).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    windows = window_tensors(data, model_cfg, train_cfg)
    state = TrainState(model, optimizer, torch.Generator().manual_seed(train_cfg.seed))
    state.fingerprint = fingerprint(data, model_cfg, train_cfg)
    if checkpoint is not None and checkpoint.exists() and not state.resume(checkpoint):
        log.warning("%s is of other data or settings: training from the start", checkpoint)
    distributed = dist.is_initialized()
    lead = not distributed or dist.get_rank() == 0
    if distributed:
        same_on_every_rank(state.epoch, "resumed from different checkpoints (nodes need one shared models directory)")
    # DDP broadcasts rank 0's weights and buffers when it wraps the model, and averages gradients on
    # backward; the buffers (item features and text embeddings) never change, so not at every step
    loss_of = DistributedDataParallel(Loss(model), broadcast_buffers=False) if distributed else Loss(model)
    early = data.sample_users(train_cfg.eval_users, train_cfg.seed)  # what each epoch is judged on
    started, first = time.perf_counter(), state.epoch + 1
    epochs = tqdm(
        range(first, first if state.finished else train_cfg.epochs),  # a finished run stays finished
        desc="training",
        total=train_cfg.epochs,
        initial=first,
        disable=not (progress and lead),
    )
    for epoch in epochs:
        epoch_started = time.perf_counter()
        loss, steps = train_epoch(state, windows, train_cfg, device, loss_of)
        stop = torch.zeros(1, device=device)  # NCCL broadcasts GPU tensors only
        if lead:
            seconds = time.perf_counter() - epoch_started
            metrics = evaluate(sasrec_scorer(model, device), early, "validation")
            record = {"epoch": epoch, "loss": loss, "steps": steps, "seconds": seconds}
            keep_best(state, record | {f"val_{k}": v for k, v in metrics.items()})
            best = state.best["val_ndcg@10"]
            if on_epoch is not None:
                on_epoch({**state.history[-1], "epochs": train_cfg.epochs, "best": best})
            epochs.set_postfix(loss=f"{loss:.3f}", val_ndcg=f"{metrics['ndcg@10']:.4f}", best=f"{best:.4f}")
            # another epoch at this run's mean pace (evaluation included) would end past the budget
            spent, done = time.perf_counter() - started, epoch + 1 - first
            out_of_time = train_cfg.budget_seconds is not None and spent + spent / done > train_cfg.budget_seconds
            state.finished = state.stale >= train_cfg.patience or out_of_time
            stop[0] = float(state.finished)
            if checkpoint is not None:
                state.save(checkpoint)
        if distributed:
            dist.broadcast(stop, src=0)
        if stop.item():
            break
    if distributed:  # gradients were averaged on every step: the ranks hold the same weights
        same_on_every_rank(weights_digest(model), "ended with different weights: gradients were not averaged")
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    return TrainResult(model, state.history, state.best, time.perf_counter() - started, str(device))
