"""Sequences for training and evaluation, read from the dbt marts.

A data set holds, per user, the time-ordered interactions (item index, event-type index) and the
leave-last-out split from ``training_interactions``: the last interaction is the test target, the
one before it the validation target. Index 0 is padding everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from rtrec.content import CONTENT_FILE, content_matrix
from rtrec.events import EVENT_INDEX, EVENT_TYPES

PRICE_BUCKETS = 10
# Upper edges (seconds) of the buckets of time until the next interaction: same second, a minute,
# ten minutes, an hour, six hours, a day, a week, a month, later. Bucket 0 means unknown.
GAP_EDGES = np.array([1, 60, 600, 3_600, 21_600, 86_400, 604_800, 2_592_000])
GAP_BUCKETS = len(GAP_EDGES) + 1
# Where each held-out target sits, counted from the end of a user's sequence (leave-last-out).
HOLDOUT_OFFSETS = {"validation": 2, "test": 1}


def gap_bucket(seconds) -> np.ndarray:
    """Bucket (1..GAP_BUCKETS) of a time gap in seconds; NaN or None -> 0 (unknown)."""
    seconds = np.asarray(seconds, dtype=np.float64)
    return np.where(np.isnan(seconds), 0, np.searchsorted(GAP_EDGES, np.maximum(seconds, 0), side="right") + 1)


@dataclass(frozen=True)
class Vocabulary:
    """The model's own mapping from ids to indices; saved with every model version."""

    item_ids: list[str]  # position i holds the id of item index i + 1
    item_category: list[int]  # category index per item index (0 = unknown), [0] is padding
    item_price_bucket: list[int]
    categories: list[str]
    price_edges: list[float] = field(default_factory=list)  # upper edges of the price buckets (none: unknown)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_index(self) -> dict[str, int]:
        return {item: i + 1 for i, item in enumerate(self.item_ids)}

    def category_index(self, categories) -> np.ndarray:
        """Category indices of category names (0: unknown), e.g. of items the vocabulary lacks."""
        index = {c: i + 1 for i, c in enumerate(self.categories)}
        return np.array([index.get(c, 0) for c in categories], dtype=np.int64)

    def price_bucket(self, prices) -> np.ndarray:
        """Price buckets of prices by the vocabulary's edges (0: price or edges unknown)."""
        prices = pd.to_numeric(pd.Series(prices, dtype=object), errors="coerce").to_numpy(np.float64)
        if not self.price_edges:
            return np.zeros(len(prices), dtype=np.int64)
        buckets = np.searchsorted(np.asarray(self.price_edges), np.nan_to_num(prices)) + 1
        return np.where(np.isnan(prices), 0, buckets).astype(np.int64)

    def to_dict(self) -> dict:
        return {
            "item_ids": self.item_ids,
            "item_category": self.item_category,
            "item_price_bucket": self.item_price_bucket,
            "categories": self.categories,
            "price_edges": self.price_edges,
            "event_types": list(EVENT_TYPES),
        }

    @classmethod
    def from_dict(cls, payload: dict) -> Vocabulary:
        return cls(
            payload["item_ids"],
            payload["item_category"],
            payload["item_price_bucket"],
            payload["categories"],
            payload.get("price_edges", []),  # versions saved before the edges were kept
        )


@dataclass
class SequenceData:
    vocab: Vocabulary
    user_ids: list[str]
    items: list[np.ndarray]  # per user: item indices in time order (all splits)
    events: list[np.ndarray]  # per user: event-type indices (1-based), aligned with items
    times: list[np.ndarray]  # per user: interaction times (epoch seconds), aligned with items
    has_holdout: np.ndarray  # [U] bool: user has validation and test targets
    content: np.ndarray | None = None  # [V + 1, CONTENT_DIM] item text embeddings (zeros where none), if any

    def sample_users(self, n: int, seed: int) -> SequenceData:
        """The same data with at most `n` users evaluated (a fixed random sample: the same for a seed)."""
        evaluated = np.flatnonzero(self.has_holdout)
        if len(evaluated) <= n:
            return self
        mask = np.zeros_like(self.has_holdout)
        mask[np.random.default_rng(seed).choice(evaluated, n, replace=False)] = True
        return replace(self, has_holdout=mask)

    def holdout(self, split: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
        """(users, input items, input event types, gap buckets, targets) for the users evaluated on
        `split`. The gap is the time from the last input to the target: what a live request knows
        as the time since the user's last event."""
        cut = HOLDOUT_OFFSETS[split]
        users = np.flatnonzero(self.has_holdout)
        inputs = [self.items[u][:-cut] for u in users]
        events = [self.events[u][:-cut] for u in users]
        gaps = gap_bucket([self.times[u][-cut] - self.times[u][-cut - 1] for u in users])
        targets = np.array([self.items[u][-cut] for u in users], dtype=np.int64)
        return users, inputs, events, gaps, targets


def build_vocabulary(item_ids: list[str], item_features: pd.DataFrame | None) -> Vocabulary:
    """Index the items; category and a price decile come from item_features when present."""
    features = (
        item_features.set_index("item_id").reindex(item_ids)
        if item_features is not None
        else pd.DataFrame(index=item_ids, columns=["category", "price"])
    )
    categories = sorted(c for c in features["category"].dropna().unique())
    price = pd.to_numeric(features["price"], errors="coerce")
    edges = np.nanquantile(price, np.linspace(0, 1, PRICE_BUCKETS + 1)[1:-1]).tolist() if price.notna().any() else []
    vocab = Vocabulary(list(item_ids), [], [], categories, edges)
    category = vocab.category_index(features["category"])
    buckets = vocab.price_bucket(price)
    return replace(vocab, item_category=[0, *category.tolist()], item_price_bucket=[0, *buckets.tolist()])


def sequences_from_frame(frame: pd.DataFrame, vocab: Vocabulary) -> SequenceData:
    """frame: user_id, item_id, event_type, position, split and optionally ts (the training_interactions mart)."""
    index = vocab.item_index()
    frame = frame.sort_values(["user_id", "position"], kind="stable")
    item_idx = frame["item_id"].map(index).fillna(0).to_numpy(np.int64)
    event_idx = frame["event_type"].map(EVENT_INDEX).fillna(0).to_numpy(np.int64)
    times = (
        pd.to_datetime(frame["ts"]).astype("int64").to_numpy() / 1e9 if "ts" in frame else np.full(len(frame), np.nan)
    )
    users, starts = np.unique(frame["user_id"].to_numpy(), return_index=True)
    bounds = [*starts[1:], len(frame)]
    held = frame.groupby("user_id", sort=True)["split"].agg(lambda s: (s == "test").any())
    return SequenceData(
        vocab=vocab,
        user_ids=[str(u) for u in users],
        items=[item_idx[a:b] for a, b in zip(starts, bounds)],
        events=[event_idx[a:b] for a, b in zip(starts, bounds)],
        times=[times[a:b] for a, b in zip(starts, bounds)],
        has_holdout=held.reindex(users).to_numpy(bool),
    )


def load_marts(marts_dir: Path) -> SequenceData:
    """Read training_interactions and item_features written by `dbt build`, and the items' text
    embeddings when the embed step wrote them."""
    path = marts_dir / "training_interactions.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the etl flow (dbt build) first")
    frame = pd.read_parquet(path, columns=["user_id", "item_id", "event_type", "ts", "position", "split"])
    features_path = marts_dir / "item_features.parquet"
    features = (
        pd.read_parquet(features_path, columns=["item_id", "category", "price"]) if features_path.exists() else None
    )
    item_ids = sorted(frame["item_id"].unique(), key=lambda s: (len(s), s))
    data = sequences_from_frame(frame, build_vocabulary(item_ids, features))
    content_path = marts_dir / CONTENT_FILE  # written by the nightly flow's embed step
    return replace(data, content=content_matrix(item_ids, content_path)) if content_path.exists() else data


def pad_left(seqs: list[np.ndarray], length: int) -> np.ndarray:
    """[B, length] with each sequence's last `length` values right-aligned, 0 before them."""
    out = np.zeros((len(seqs), length), dtype=np.int64)
    if not len(seqs):
        return out
    for row, seq in enumerate(seqs):
        tail = seq[-length:]
        if len(tail):
            out[row, length - len(tail) :] = tail
    return out
