"""Training: loss at every position, early stopping on validation NDCG@10, resumable checkpoints."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from model.data import GAP_BUCKETS, PRICE_BUCKETS, SequenceData, gap_bucket, pad_left
from model.evaluate import Scorer, evaluate
from model.sasrec import ModelConfig, SASRec
from rtrec.events import EVENT_TYPES


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10  # evaluations without a better validation NDCG@10 before stopping
    negatives: int = 0  # 0: full softmax over the catalog; >0: sampled softmax with that many negatives
    seed: int = 0
    device: str = "auto"
    all_windows: bool = True  # train on every max_len window of a long history, not only the last

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    # seconds, for tests
    "tiny": (
        ModelConfig(max_len=20, dim=32, layers=1, heads=1, dropout=0.1),
        TrainConfig(epochs=8, batch_size=64, patience=3),
    ),
    # the default on a laptop-class CPU
    "cpu": (ModelConfig(max_len=50, dim=64, layers=2, heads=2, dropout=0.2), TrainConfig(epochs=100, patience=8)),
    # long MovieLens-style histories
    "cpu-long": (
        ModelConfig(max_len=200, dim=64, layers=2, heads=2, dropout=0.2),
        TrainConfig(epochs=200, patience=20),
    ),
    # a GPU host: larger network, bigger batches (bf16 autocast is switched on for CUDA)
    "gpu-large": (
        ModelConfig(max_len=200, dim=256, layers=4, heads=4, dropout=0.2),
        TrainConfig(epochs=200, batch_size=1024, lr=2e-3, patience=10),
    ),
}


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


def build_model(model_cfg: ModelConfig, data: SequenceData) -> SASRec:
    vocab = data.vocab
    return SASRec(
        model_cfg,
        vocab.n_items,
        len(vocab.categories),
        vocab.item_category,
        vocab.item_price_bucket,
        n_event_types=len(EVENT_TYPES),
        n_price_buckets=PRICE_BUCKETS,
        n_gap_buckets=GAP_BUCKETS,
    )


def sasrec_scorer(model: SASRec, device: torch.device) -> Scorer:
    length = model.cfg.max_len

    @torch.inference_mode()
    def score(inputs: list[np.ndarray], events: list[np.ndarray], gaps: np.ndarray) -> torch.Tensor:
        model.eval()
        items = torch.from_numpy(pad_left(inputs, length)).to(device)
        kinds = torch.from_numpy(pad_left(events, length)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return model.scores(items, kinds, torch.from_numpy(np.asarray(gaps, dtype=np.int64)).to(device))

    return score


def training_windows(
    data: SequenceData, max_len: int, all_windows: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, event types, targets, gap buckets), each [W, max_len]: every user's training
    sequence shifted by one (position t predicts item t + 1, knowing the time until it), cut from
    the end into windows of max_len so that every training interaction is a target once.
    Validation and test targets are never included."""
    seqs, kinds, nexts, gaps = [], [], [], []
    for items, events, times, held in zip(data.items, data.events, data.times, data.has_holdout):
        end = len(items) - 2 if held else len(items)
        for stop in range(end, 1, -max_len):
            start = max(0, stop - max_len - 1)
            seqs.append(items[start : stop - 1])
            kinds.append(events[start : stop - 1])
            nexts.append(items[start + 1 : stop])
            gaps.append(gap_bucket(np.diff(times[start:stop])))
            if not all_windows:
                break
    return tuple(pad_left(x, max_len) for x in (seqs, kinds, nexts, gaps))


def length_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Batches of sequences of similar length (less padding), in random order, shuffled within ties."""
    noise = torch.rand(len(lengths), generator=generator)
    order = torch.argsort(lengths.double() + noise)
    batches = list(order.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(
    data: SequenceData,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    checkpoint: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train on the training part of every sequence; keep the weights of the best validation epoch.

    With `checkpoint`, the state after every epoch is saved there and a run that finds one resumes."""
    seed_everything(train_cfg.seed)
    device = resolve_device(train_cfg.device)
    model = build_model(model_cfg, data).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    windows = training_windows(data, model_cfg.max_len, train_cfg.all_windows)
    if not len(windows[0]) or not data.has_holdout.any():
        raise ValueError(
            f"no training data: {len(windows[0])} training sequences, {int(data.has_holdout.sum())} users with a "
            "validation and test interaction (a user needs at least 3 interactions)"
        )
    inputs, events, targets, gaps = (torch.from_numpy(a) for a in windows)
    lengths = (inputs > 0).sum(1)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    result = TrainResult(model=model, device=str(device))
    best_state, start_epoch, stale = None, 0, 0
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        result.history, result.best, best_state = saved["history"], saved["best"], saved["best_state"]
        start_epoch, stale = saved["epoch"] + 1, saved["stale"]

    started = time.perf_counter()
    bar = tqdm(
        range(start_epoch, train_cfg.epochs),
        desc="training",
        disable=not progress,
        initial=start_epoch,
        total=train_cfg.epochs,
    )
    for epoch in bar:
        model.train()
        total, batches = 0.0, 0
        for batch in length_batches(lengths, train_cfg.batch_size, generator):
            width = int(lengths[batch].max())  # sequences are left-padded: keep only the columns in use
            x, e, y, g = (t[batch, -width:].to(device) for t in (inputs, events, targets, gaps))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model.loss(x, e, y, g, train_cfg.negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        metrics = evaluate(sasrec_scorer(model, device), data, "validation")
        record = {"epoch": epoch, "loss": total / max(batches, 1), **{f"val_{k}": v for k, v in metrics.items()}}
        result.history.append(record)
        if not result.best or metrics["ndcg@10"] > result.best["val_ndcg@10"]:
            result.best, stale = record, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        bar.set_postfix(
            loss=f"{record['loss']:.3f}", val_ndcg=f"{metrics['ndcg@10']:.4f}", best=f"{result.best['val_ndcg@10']:.4f}"
        )
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": result.history,
                "best": result.best,
                "best_state": best_state,
                "epoch": epoch,
                "stale": stale,
            }
            torch.save(state, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
        if stale >= train_cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - started
    return result


def save_curve(history: list[dict], path: Path) -> None:
    """Training loss and validation NDCG@10 per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, loss_ax = plt.subplots(figsize=(7, 4))
    loss_ax.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss", color="tab:blue")
    ndcg_ax = loss_ax.twinx()
    ndcg_ax.plot(epochs, [h["val_ndcg@10"] for h in history], color="tab:orange", label="validation NDCG@10")
    ndcg_ax.set_ylabel("validation NDCG@10", color="tab:orange")
    fig.suptitle("rtrec training curve")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def preset(name: str, **overrides) -> tuple[ModelConfig, TrainConfig]:
    """A named size, with TrainConfig fields overridden (e.g. epochs, device)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    model_cfg, train_cfg = PRESETS[name]
    return model_cfg, replace(train_cfg, **overrides)


def dump_json(payload: dict, path: Path) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
