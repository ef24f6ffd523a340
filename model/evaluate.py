"""One evaluation harness for every model: leave-last-out by time, full ranking over all items.

A scorer maps a batch of input sequences (item and event-type indices, and the time until the
target) to scores of every item;
each user's input items are masked unless `mask_history` is off. The metrics: HR@k, NDCG@k,
MRR@k over the evaluated users, and catalog coverage (share of items in any top-k list).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from model.data import SequenceData
from model.metrics import mask_items, rank_metrics, ranks

SCORES_PER_BATCH = 2**26  # float32 scores held at once (users x items): 256 MB

# (input items, input event types, gap buckets to the target) -> [B, V + 1] scores
Scorer = Callable[[list[np.ndarray], list[np.ndarray], np.ndarray], torch.Tensor]


def evaluate(
    scorer: Scorer,
    data: SequenceData,
    split: str = "test",
    k: int = 10,
    mask_history: bool = True,
    batch_size: int = 512,
) -> dict[str, float]:
    _, inputs, events, gaps, targets = data.holdout(split)
    batch_size = max(1, min(batch_size, SCORES_PER_BATCH // (data.vocab.n_items + 1)))
    all_ranks, recommended = [], set()
    for start in range(0, len(targets), batch_size):
        chunk = slice(start, start + batch_size)
        scores = scorer(inputs[chunk], events[chunk], gaps[chunk]).float().cpu()
        scores = mask_items(scores, inputs[chunk] if mask_history else [np.empty(0, np.int64)] * len(targets[chunk]))
        all_ranks.append(ranks(scores, torch.from_numpy(targets[chunk])).numpy())
        recommended.update(scores.topk(min(k, scores.shape[1]), dim=1).indices.flatten().tolist())
    metrics = rank_metrics(np.concatenate(all_ranks), k) if all_ranks else {}
    metrics["coverage"] = len(recommended - {0}) / data.vocab.n_items
    metrics["users"] = len(targets)
    return metrics
