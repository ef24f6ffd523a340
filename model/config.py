"""Training settings and the named sizes (presets) that pair them with a network shape."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from model.sasrec import ModelConfig


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
    eval_users: int = 20_000  # early stopping validates on a fixed sample of at most this many users
    budget_seconds: float | None = None  # no epoch is started that would, at the run's mean pace, end past this

    def to_dict(self) -> dict:
        return asdict(self)


# items whose id embedding a training batch leaves out: the model learns to score an item from its
# text, category and price alone, as it must for a new item (README: New items)
ID_DROPOUT = 0.1

PRESETS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    # seconds, for tests
    "tiny": (
        ModelConfig(max_len=20, dim=32, layers=1, heads=1, dropout=0.1),
        TrainConfig(epochs=8, batch_size=64, patience=3),
    ),
    # the default on a laptop-class CPU
    "cpu": (
        ModelConfig(max_len=50, dim=64, layers=2, heads=2, dropout=0.2, content=True, id_dropout=ID_DROPOUT),
        TrainConfig(epochs=100, lr=2e-3, patience=10),
    ),
    # long MovieLens-style histories
    "cpu-long": (
        ModelConfig(max_len=200, dim=64, layers=2, heads=2, dropout=0.2, content=True, id_dropout=ID_DROPOUT),
        TrainConfig(epochs=200, patience=20),
    ),
    # a GPU host: larger network, bigger batches (bf16 autocast is switched on for CUDA)
    "gpu-large": (
        ModelConfig(max_len=200, dim=256, layers=4, heads=4, dropout=0.2, content=True, id_dropout=ID_DROPOUT),
        TrainConfig(epochs=200, batch_size=1024, lr=2e-3, patience=10),
    ),
}


# What a training run also tries after its preset's own settings, keeping the best on validation
# (model/tuning.py): each changes these ModelConfig or TrainConfig fields.
REGULARISED = {"dropout": 0.5, "patience": 15}  # long, sparse histories (MovieLens)
ALTERNATIVES: dict[str, tuple[dict, ...]] = dict.fromkeys(("cpu", "cpu-long", "gpu-large"), (REGULARISED,))


# a softmax over every item at every position does not fit a training step for a catalog larger than
# this: such catalogs train on a sampled softmax unless the settings name a number of negatives
FULL_SOFTMAX_MAX_ITEMS = 200_000
SAMPLED_NEGATIVES = 2048


def for_catalog(train_cfg: TrainConfig, n_items: int) -> TrainConfig:
    """`train_cfg` as a catalog of `n_items` needs it: a sampled softmax past FULL_SOFTMAX_MAX_ITEMS."""
    if train_cfg.negatives == 0 and n_items > FULL_SOFTMAX_MAX_ITEMS:
        return replace(train_cfg, negatives=SAMPLED_NEGATIVES)
    return train_cfg


def preset(name: str, **overrides) -> tuple[ModelConfig, TrainConfig]:
    """A named size, with TrainConfig fields overridden (e.g. epochs, device)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    model_cfg, train_cfg = PRESETS[name]
    return model_cfg, replace(train_cfg, **overrides)


def alternatives(name: str, **overrides) -> list[tuple[ModelConfig, TrainConfig]]:
    """The preset's alternative settings, with the same TrainConfig `overrides` as `preset`."""
    model_cfg, train_cfg = preset(name, **overrides)
    settings = []
    for change in ALTERNATIVES.get(name, ()):
        model_fields = {k: v for k, v in change.items() if k in model_cfg.to_dict()}
        train_fields = {k: v for k, v in change.items() if k not in model_fields}
        settings.append((replace(model_cfg, **model_fields), replace(train_cfg, **(train_fields | overrides))))
    return settings
