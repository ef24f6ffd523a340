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


def preset(name: str, **overrides) -> tuple[ModelConfig, TrainConfig]:
    """A named size, with TrainConfig fields overridden (e.g. epochs, device)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    model_cfg, train_cfg = PRESETS[name]
    return model_cfg, replace(train_cfg, **overrides)
