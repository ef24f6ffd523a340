"""Cold start: how well items that appear after the training cut are recommended before the model
has seen one interaction with them.

The cut is the first interaction of the item at the (1 - share) quantile of first interactions:
the later `share` of the catalog is new. Models learn from every interaction before the cut. Each
later interaction whose target is a new item is a case, with everything the user did before it as
input (the live state), ranked over every item with the input's items masked, as by the harness.
A content-aware SASRec scores new items as serving does (Recommender.with_new_items): from their
category and text embedding, without an id embedding; popularity before the cut has never seen
them; random ranks every item alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from model.data import SequenceData, Vocabulary, gap_bucket
from model.evaluate import Scorer
from model.inference import Recommender
from model.replay import MIN_PREFIX, case_metrics
from model.sasrec import SASRec
from model.scorer import recommender_scorer
from model.train import train
from model.tuning import Setting
from rtrec.content import CONTENT_DIM


def first_seen(data: SequenceData) -> np.ndarray:
    """[V + 1] time of each item's first interaction (inf: none; row 0 padding)."""
    first = np.full(data.vocab.n_items + 1, np.inf)
    for items, times in zip(data.items, data.times):
        np.minimum.at(first, items, times)
    return first


def new_item_split(data: SequenceData, share: float = 0.1) -> tuple[SequenceData, np.ndarray, tuple]:
    """(the data before the cut, indexed by a vocabulary of the items seen before it; [V + 1] bool:
    new items; the cases (inputs, event inputs, gap buckets, targets) in `data`'s indices)."""
    first = first_seen(data)
    seen = np.sort(first[np.isfinite(first)])
    cut = seen[min(int(len(seen) * (1 - share)), len(seen) - 1)]
    new = first >= cut
    new[0] = False
    keep = [int(np.searchsorted(times, cut, side="left")) for times in data.times]  # times are sorted
    old = np.flatnonzero(~new)  # 0 (padding) first
    to_old = np.zeros(len(new), dtype=np.int64)
    to_old[old] = np.arange(len(old))
    vocab = data.vocab
    before = SequenceData(
        vocab=Vocabulary(
            [vocab.item_ids[i - 1] for i in old[1:]],
            [vocab.item_category[i] for i in old],
            [vocab.item_price_bucket[i] for i in old],
            vocab.categories,
            vocab.price_edges,
        ),
        user_ids=data.user_ids,
        items=[to_old[s[:k]] for s, k in zip(data.items, keep)],
        events=[s[:k] for s, k in zip(data.events, keep)],
        times=[s[:k] for s, k in zip(data.times, keep)],
        has_holdout=np.array([k >= MIN_PREFIX for k in keep], dtype=bool),
        content=None if data.content is None else data.content[old],
    )
    inputs, kinds, gaps, targets = [], [], [], []
    for items, events, times, k in zip(data.items, data.events, data.times, keep):
        for j in range(max(k, 1), len(items)):
            if new[items[j]]:
                inputs.append(items[:j])
                kinds.append(events[:j])
                gaps.append(times[j] - times[j - 1])
                targets.append(items[j])
    return before, new, (inputs, kinds, gap_bucket(gaps), np.array(targets, dtype=np.int64))


def new_items_frame(data: SequenceData, new: np.ndarray) -> pd.DataFrame:
    """The new items as serving reads them from the content file (item_id, category, price,
    content_embedding). The data keeps price buckets, not prices: each item's price is one its
    bucket holds (the bucket's upper edge; past the last edge, one more)."""
    index = np.flatnonzero(new)
    vocab = data.vocab
    content = data.content if data.content is not None else np.zeros((len(new), CONTENT_DIM), np.float32)
    edges = [*vocab.price_edges, (vocab.price_edges[-1] + 1) if vocab.price_edges else np.nan]
    bucket = np.asarray(vocab.item_price_bucket)[index]
    return pd.DataFrame(
        {
            "item_id": [vocab.item_ids[i - 1] for i in index],
            "category": [
                vocab.categories[vocab.item_category[i] - 1] if vocab.item_category[i] else None for i in index
            ],
            "price": [edges[b - 1] if b else np.nan for b in bucket],
            "content_embedding": list(content[index]),
        }
    )


def content_scorer(model: SASRec, before: SequenceData, data: SequenceData, new: np.ndarray) -> Scorer:
    """A model trained on `before`, scoring `data`'s items as serving does: the new ones from their
    category and text embedding (Recommender.with_new_items), the rest as trained."""
    recommender = Recommender(model.cpu(), before.vocab, "cold-start").with_new_items(new_items_frame(data, new))
    return recommender_scorer(recommender, data)


def random_scorer(n_items: int, seed: int = 0) -> Scorer:
    generator = torch.Generator().manual_seed(seed)
    return lambda inputs, events, gaps: torch.rand(len(inputs), n_items + 1, generator=generator)


def popularity_before(before: SequenceData, new: np.ndarray) -> Scorer:
    """MostPop over the data before the cut, in the full data's indices (new items: never seen)."""
    old = np.flatnonzero(~new)  # before's index i is the full data's old[i]
    counts = np.zeros(len(new))
    for items in before.items:
        np.add.at(counts, old[items], 1)
    scores = torch.from_numpy(counts).float()
    return lambda inputs, events, gaps: scores.expand(len(inputs), -1)


def cold_start_table(data: SequenceData, setting: Setting, share: float = 0.1, progress: bool = True) -> list[dict]:
    """HR/NDCG@10 on the interactions that target items first seen after the cut: the SASRec of
    `setting` trained before the cut (content-aware when its ModelConfig says so), MostPop and random."""
    before, new, cases = new_item_split(data, share)
    result = train(before, *setting, progress=progress)
    scorers = {
        f"SASRec ({'content' if setting[0].content else 'no content'})": content_scorer(
            result.model, before, data, new
        ),
        "MostPop": popularity_before(before, new),
        "random": random_scorer(data.vocab.n_items),
    }
    return [
        {"model": name, "new items": int(new.sum()), **case_metrics(scorer, cases)} for name, scorer in scorers.items()
    ]
