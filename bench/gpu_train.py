"""Train the gpu-large preset on the marts and report throughput (used by bench/gpu_train.sh)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from model.config import preset
from model.data import load_marts
from model.train import train
from model.windows import training_windows
from rtrec.settings import get_settings


def main() -> None:
    data = load_marts(get_settings().marts_dir)
    model_cfg, train_cfg = preset("gpu-large", epochs=10, patience=10)
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu (no CUDA)'}")
    inputs = training_windows(data, model_cfg.max_len)[0]  # the training windows, overlapping
    result = train(data, model_cfg, train_cfg, progress=True)
    losses = [h["loss"] for h in result.history]
    epochs = len(result.history)
    tokens = int((inputs > 0).sum()) * epochs  # what the encoder reads, padding left out
    # forward + backward ~ 6 FLOP per parameter per token, plus attention and the catalog softmax
    params = sum(p.numel() for p in result.model.parameters())
    d, n, v = model_cfg.dim, model_cfg.max_len, data.vocab.n_items
    flops = tokens * (6 * params + 6 * model_cfg.layers * n * d + 6 * d * v)
    print(f"loss by epoch: {[round(x, 3) for x in losses]}")
    print(f"loss went down: {losses[-1] < losses[0]}")
    rate = len(inputs) * epochs / result.seconds
    print(f"sequences/s: {rate:,.0f}   achieved TFLOP/s: {flops / result.seconds / 1e12:.2f}")
    print(f"best validation NDCG@10: {result.best.get('val_ndcg@10', 0):.4f} in {result.seconds:.0f} s")


if __name__ == "__main__":
    main()
