"""Non-neural baselines scored by the same harness: MostPop and EASE (Steck, 2019)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from model.data import HOLDOUT_OFFSETS, SequenceData
from model.evaluate import Scorer, evaluate


def _interaction_matrix(inputs: list[np.ndarray], n_items: int) -> torch.Tensor:
    x = torch.zeros(len(inputs), n_items + 1)
    for row, seq in enumerate(inputs):
        x[row, torch.from_numpy(seq)] = 1.0
    x[:, 0] = 0.0
    return x


def training_inputs(data: SequenceData, split: str) -> list[np.ndarray]:
    """What a model may learn from when it is evaluated on `split`: every user's items before it."""
    cut = HOLDOUT_OFFSETS[split]
    return [s[:-cut] if held else s for s, held in zip(data.items, data.has_holdout)]


def most_popular(data: SequenceData, split: str) -> Scorer:
    counts = np.zeros(data.vocab.n_items + 1)
    for seq in training_inputs(data, split):
        np.add.at(counts, seq, 1)
    scores = torch.from_numpy(counts).float()
    return lambda inputs, events, gaps: scores.expand(len(inputs), -1)


def ease_weights(inputs: list[np.ndarray], n_items: int, l2: float) -> torch.Tensor:
    """EASE's [V + 1, V + 1] item-to-item weights (zero diagonal; row and column 0, padding, zero)
    fitted on the histories `inputs`; the Gram matrix is summed sparse, so the users' count costs no memory."""
    n = n_items + 1
    rows = np.repeat(np.arange(len(inputs)), [len(seq) for seq in inputs])
    x = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(inputs))), shape=(len(inputs), n))
    x.data[:] = 1.0  # an item seen twice is seen
    gram = torch.from_numpy((x.T @ x).toarray())
    gram[0], gram[:, 0] = 0.0, 0.0
    gram.diagonal().add_(l2)
    p = torch.linalg.inv(gram)
    b = (-p / p.diagonal()).float()
    b.fill_diagonal_(0.0)
    return b


def ease(data: SequenceData, split: str, l2: float) -> Scorer:
    b = ease_weights(training_inputs(data, split), data.vocab.n_items, l2)
    n = data.vocab.n_items
    return lambda inputs, events, gaps: _interaction_matrix(inputs, n) @ b


def tuned_ease(data: SequenceData, split: str, grid=(50.0, 200.0, 500.0, 1000.0)) -> tuple[Scorer, float]:
    """EASE with its L2 weight chosen on the validation split."""
    best = max(grid, key=lambda l2: evaluate(ease(data, "validation", l2), data, "validation")["ndcg@10"])
    return ease(data, split, best), best
