"""Which items follow which, blended into the model's scores.

SASRec learns smooth patterns and forgets exact pairs; counts remember them. The generated shop's
next item is often one of a few fixed successors, and MovieLens users rate films of one kind in
bursts, so counts of "b came soon after a" added to the model's scores lift both (README: quality).

Counting: every pair (a, b) of a training sequence with b at most SPAN interactions after a adds
SPAN_FADE ** (distance - 1). Scoring: each of the history's last `recent` items adds, for every item
that followed it, log(1 + count), faded by RECENT_FADE per step back, times `weight`. Training
chooses both on the validation split (weight 0 when the counts do not help): the shop's next item
follows the last one alone (recent 1), a MovieLens burst follows the last few (recent 5). An item
that followed nothing the user saw gets nothing, so the model alone orders the rest of the catalog.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from model.baselines import training_inputs
from model.data import SequenceData
from model.evaluate import Scorer, evaluate

SPAN = 3
SPAN_FADE = 0.5
RECENT_FADE = 0.7
# tried on validation, weight 0 first and then each `recent` with each weight; the first best is
# kept, so a tie keeps the counts out or the smaller weight
RECENTS = (1, 5)
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
FIT_USERS = 5_000  # the validation users the choice is judged on (a fixed sample where there are more)
DIRECTORY = "successors"  # in a version's directory: the counts' CSR arrays (.npy) and choice.json
PARTS = ("indptr", "indices", "data")


# one history's boost: the items it boosts (sorted, unique) and what each gets
Boost = tuple[np.ndarray, np.ndarray]


@dataclass
class Successors:
    follows: sp.csr_matrix  # [V + 1, V + 1] log(1 + faded count of column after row), float32, sorted indices
    weight: float = 0.0
    recent: int = 1  # how many of the history's newest items boost what followed them

    @classmethod
    def count(cls, sequences: Sequence[np.ndarray], n_items: int) -> Successors:
        n = n_items + 1
        counts = sp.csr_matrix((n, n), dtype=np.float32)
        for distance in range(1, SPAN + 1):
            pairs = [(s[:-distance], s[distance:]) for s in sequences if len(s) > distance]
            if pairs:
                before = np.concatenate([a for a, _ in pairs]).astype(np.int32)
                after = np.concatenate([b for _, b in pairs]).astype(np.int32)
                amount = np.full(len(before), SPAN_FADE ** (distance - 1), dtype=np.float32)
                counts = counts + sp.csr_matrix((amount, (before, after)), shape=(n, n))  # duplicates summed
        counts.data = np.log1p(counts.data)
        counts.sort_indices()
        return cls(counts)

    def boost(self, inputs: Sequence[np.ndarray]) -> list[Boost]:
        """Per history, what its recent items add to the scores, weight included: the rows of the
        counts sliced and summed (a sparse product would clear catalog-wide work arrays per call)."""
        if self.weight == 0:
            return [(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in inputs]
        indptr, indices, data = self.follows.indptr, self.follows.indices, self.follows.data
        out = []
        for history in inputs:
            recent = np.asarray(history[-self.recent :], dtype=np.int64)[::-1]  # newest first
            parts = [
                (indices[indptr[item] : indptr[item + 1]], data[indptr[item] : indptr[item + 1]] * fade)
                for item, fade in zip(recent, self.weight * RECENT_FADE ** np.arange(len(recent)))
                if item < len(indptr) - 1  # an item added after training (a row past the counts) followed nothing
            ]
            if not parts:
                out.append((np.empty(0, np.int64), np.empty(0, np.float32)))
                continue
            items, where = np.unique(np.concatenate([c for c, _ in parts]), return_inverse=True)
            out.append(
                (items.astype(np.int64), np.bincount(where, np.concatenate([v for _, v in parts])).astype(np.float32))
            )
        return out

    def add_to(self, scores: torch.Tensor, inputs: Sequence[np.ndarray]) -> torch.Tensor:
        """`scores` [B, >= V + 1] with each history's boost added in place (columns past V + 1, items
        the counts never saw, are left alone)."""
        boosts = self.boost(inputs)
        sizes = [len(items) for items, _ in boosts]
        if sum(sizes):
            rows = torch.from_numpy(np.repeat(np.arange(len(boosts)), sizes)).to(scores.device)
            items = torch.from_numpy(np.concatenate([items for items, _ in boosts])).to(scores.device)
            scores[rows, items] += torch.from_numpy(np.concatenate([v for _, v in boosts])).to(scores)
        return scores

    @staticmethod
    def at(boosts: list[Boost], rows: np.ndarray) -> torch.Tensor:
        """[B, C] each history's boost (`boost`) at its candidate `rows` [B, C]."""
        out = np.zeros(rows.shape, dtype=np.float32)
        for row, (items, values) in enumerate(boosts):
            if len(items):
                where = np.minimum(np.searchsorted(items, rows[row]), len(items) - 1)
                out[row] = np.where(items[where] == rows[row], values[where], 0.0)
        return torch.from_numpy(out)

    @staticmethod
    def best(boosts: list[Boost], n: int) -> np.ndarray:
        """[B, n] the items each history's boost (`boost`) favours most, 0 where it has fewer than n."""
        out = np.zeros((len(boosts), n), dtype=np.int64)
        for row, (items, values) in enumerate(boosts):
            top = np.argpartition(-values, n)[:n] if len(items) > n else np.arange(len(items))
            out[row, : len(top)] = items[top[np.argsort(-values[top], kind="stable")]]
        return out

    def blend(self, scorer: Scorer) -> Scorer:
        """`scorer` with the boost added: the model as served."""
        return lambda inputs, events, gaps: self.add_to(
            scorer(inputs, events, gaps).to(torch.float32, copy=True), inputs
        )

    def save(self, directory: Path) -> None:
        directory.mkdir()
        for part in PARTS:
            np.save(directory / f"{part}.npy", getattr(self.follows, part))
        (directory / "choice.json").write_text(json.dumps({"weight": self.weight, "recent": self.recent}))

    @classmethod
    def load(cls, directory: Path) -> Successors:
        """Memory-mapped: the workers of a host share one copy of the counts through the page cache."""
        parts = {part: np.load(directory / f"{part}.npy", mmap_mode="r") for part in PARTS}
        n = len(parts["indptr"]) - 1
        follows = sp.csr_matrix((parts["data"], parts["indices"], parts["indptr"]), shape=(n, n), copy=False)
        return cls(follows, **json.loads((directory / "choice.json").read_text()))


def served_successors(version_dir: Path) -> Successors | None:
    """The counts a registered version serves: none for one saved before them or whose weight is 0."""
    path = version_dir / DIRECTORY
    return as_served(Successors.load(path)) if path.exists() else None


def as_served(successors: Successors) -> Successors | None:
    """The counts as serving uses them: none when their weight is 0."""
    return successors if successors.weight else None


def fit(scorer: Scorer, data: SequenceData) -> tuple[Successors, list[dict]]:
    """Counts of what the model trained on (each user's items before the validation target), with
    the `recent` and weight (RECENTS, WEIGHTS) that give `scorer` blended the best validation
    NDCG@10; and every pair tried with its figure."""
    successors = Successors.count(training_inputs(data, "validation"), data.vocab.n_items)
    judged = data.sample_users(FIT_USERS, seed=0)
    tried = []
    for recent in RECENTS:
        for weight in WEIGHTS if recent == RECENTS[0] else WEIGHTS[1:]:  # weight 0 is the same for every `recent`
            successors.recent, successors.weight = recent, weight
            ndcg = evaluate(successors.blend(scorer), judged, "validation")["ndcg@10"]
            tried.append({"recent": recent, "weight": weight, "validation_ndcg@10": ndcg})
    best = max(tried, key=lambda t: t["validation_ndcg@10"])  # the first best
    successors.recent, successors.weight = best["recent"], best["weight"]
    return successors, tried
