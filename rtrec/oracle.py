"""The oracle ceiling: expected ranking metrics of a recommender that knows the true next-item law.

Ranking items by their true probability maximises every metric whose gain falls with rank, so the
expectation of NDCG@k / HR@k / MRR@k under that ranking is the best any model can reach on average.
"""

from __future__ import annotations

import numpy as np


def expected_metrics(probs: np.ndarray, seen: np.ndarray | None = None, k: int = 10) -> dict[str, float]:
    """Mean expected HR@k, NDCG@k and MRR@k of the Bayes-optimal ranking.

    probs: [U, M] true probability of each item being the user's next one (rows sum to 1).
    seen:  [U, M] items the evaluation masks (the user's history); they cannot be ranked, so
           probability mass on them is lost to every model, the oracle included.
    """
    p = np.where(seen, 0.0, probs) if seen is not None else probs
    k = min(k, p.shape[1])
    top = -np.sort(np.partition(-p, k - 1, axis=1)[:, :k], axis=1)  # [U, k] descending
    ranks = np.arange(1, k + 1)
    return {
        f"hr@{k}": float(top.sum(axis=1).mean()),
        f"ndcg@{k}": float((top / np.log2(ranks + 1)).sum(axis=1).mean()),
        f"mrr@{k}": float((top / ranks).sum(axis=1).mean()),
    }
