"""EASE's item-to-item weights over everything a user has seen, blended into the served scores.

SASRec reads a user's last max_len interactions; a MovieLens user has rated twice that many on
average, and the older films still say what they like. EASE (Steck, 2019; model/baselines.py)
scores an item by the sum of its learned weights from every item the user has seen, order aside.
A version of a catalog of at most MAX_ITEMS items fits the weights on what its model trained on,
and training chooses their L2 and the blend's weight on the validation split after the successor
counts (weight 0 keeps EASE out, and nothing is saved). The weights are a dense [V + 1, V + 1]
matrix (100 MB at 5,000 items), which serving memory-maps: a host's workers share one copy. What a
user has seen is the whole seen set the online store keeps (rtrec/online_state.py), not only the
recent items the model reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from model.baselines import ease_weights, training_inputs
from model.data import SequenceData
from model.evaluate import Scorer, evaluate
from model.successors import FIT_USERS

MAX_ITEMS = 5_000  # a dense [V + 1, V + 1] float32 matrix: 100 MB here, and its inverse to fit
# tried on validation, weight 0 first; the first best is kept, so a tie keeps EASE out
L2S = (50.0, 200.0, 1000.0)
WEIGHTS = (0.0, 1.0, 2.0, 4.0)
FILE, CHOICE_FILE = "ease.npy", "ease.json"  # in a version's directory, when the blend is served


@dataclass
class Ease:
    weights: np.ndarray  # [V + 1, V + 1] float32, zero diagonal
    weight: float
    l2: float

    def add_to(self, scores: torch.Tensor, seen: Sequence[Sequence[int]]) -> torch.Tensor:
        """`scores` [B, >= V + 1] with each user's sum of the weights from the items of `seen` (item
        indices) added in place, times `weight`; items past the weights (added after training) give
        and get nothing."""
        n = len(self.weights)
        items = [np.unique(s[s < n]) for s in (np.asarray(s, dtype=np.int64) for s in seen)]
        if not sum(len(i) for i in items):
            return scores
        indptr = np.concatenate([[0], np.cumsum([len(i) for i in items])])
        who_saw_what = sp.csr_matrix((np.ones(indptr[-1], np.float32), np.concatenate(items), indptr), (len(items), n))
        # the product reads the mapped rows it needs in place: no [seen, V + 1] copy
        scores[:, :n] += self.weight * torch.from_numpy(who_saw_what @ self.weights).to(scores.device)
        return scores

    def blend(self, scorer: Scorer) -> Scorer:
        """`scorer` with the weights of everything in each input added: the model as served."""
        return lambda inputs, events, gaps: self.add_to(
            scorer(inputs, events, gaps).to(torch.float32, copy=True), inputs
        )

    def save(self, directory: Path) -> None:
        np.save(directory / FILE, self.weights)
        (directory / CHOICE_FILE).write_text(json.dumps({"weight": self.weight, "l2": self.l2}))

    @classmethod
    def load(cls, directory: Path) -> Ease | None:
        """The version's blend, memory-mapped; None for a version that serves none."""
        if not (directory / CHOICE_FILE).exists():
            return None
        return cls(np.load(directory / FILE, mmap_mode="r"), **json.loads((directory / CHOICE_FILE).read_text()))


def fit(scorer: Scorer, data: SequenceData) -> tuple[Ease | None, list[dict]]:
    """The weights fitted on what the model trained on (each user's items before the validation
    target), with the L2 and weight (L2S, WEIGHTS) that give `scorer` blended the best validation
    NDCG@10, or None when weight 0 does best or the catalog is past MAX_ITEMS; and every pair tried."""
    if data.vocab.n_items > MAX_ITEMS:
        return None, []
    judged = data.sample_users(FIT_USERS, seed=0)
    inputs = training_inputs(data, "validation")
    best_ndcg = evaluate(scorer, judged, "validation")["ndcg@10"]
    tried, best = [{"l2": None, "weight": 0.0, "validation_ndcg@10": best_ndcg}], None
    for l2 in L2S:
        weights = ease_weights(inputs, data.vocab.n_items, l2).numpy()
        for weight in WEIGHTS[1:]:
            ndcg = evaluate(Ease(weights, weight, l2).blend(scorer), judged, "validation")["ndcg@10"]
            tried.append({"l2": l2, "weight": weight, "validation_ndcg@10": ndcg})
            if ndcg > best_ndcg:  # strictly: the first best is kept
                best, best_ndcg = Ease(weights, weight, l2), ndcg
    return best, tried
