"""Full-ranking metrics for next-item prediction."""

from __future__ import annotations

import numpy as np
import torch


def mask_items(scores: torch.Tensor, rows: list[np.ndarray]) -> torch.Tensor:
    """Set scores[r, items] to -inf for each row's items, and column 0 (padding) everywhere."""
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    lengths = [len(r) for r in rows]
    if sum(lengths):
        row_idx = torch.from_numpy(np.repeat(np.arange(len(rows)), lengths))
        col_idx = torch.from_numpy(np.concatenate(rows).astype(np.int64))
        scores[row_idx.to(scores.device), col_idx.to(scores.device)] = float("-inf")
    return scores


def ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target among all items. Ties count against the target, so a scorer
    that cannot tell items apart gains nothing from it."""
    target = scores.gather(1, targets[:, None])  # [B, 1]
    rank = (scores >= target).sum(1)
    # a masked target (e.g. an item the user already had) is out of the ranking: never a hit
    return rank.masked_fill(target[:, 0] == float("-inf"), torch.iinfo(rank.dtype).max)


def rank_metrics(rank: np.ndarray, k: int = 10) -> dict[str, float]:
    rank = rank.astype(np.float64)
    hit = rank <= k
    return {
        f"hr@{k}": float(hit.mean()),
        f"ndcg@{k}": float((hit / np.log2(rank + 1)).mean()),
        f"mrr@{k}": float((hit / rank).mean()),
    }
