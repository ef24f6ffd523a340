"""Small sequence data sets with a known structure, built in memory."""

import numpy as np
import pandas as pd

from model.data import build_vocabulary, sequences_from_frame


def interactions(sequences: list[list[int]]) -> pd.DataFrame:
    """The training_interactions mart of one user per sequence of item numbers, a minute apart; the
    last two are each user's validation and test targets."""
    rows = []
    for u, sequence in enumerate(sequences):
        for pos, item in enumerate(sequence):
            split = "test" if pos == len(sequence) - 1 else "validation" if pos == len(sequence) - 2 else "train"
            rows.append(
                {
                    "user_id": f"u{u}",
                    "item_id": f"i{item}",
                    "event_type": "view",
                    "position": pos + 1,
                    "split": split,
                    "ts": pd.Timestamp("2026-01-01") + pd.Timedelta(minutes=pos),
                }
            )
    return pd.DataFrame(rows)


def cyclic_frame(users=60, items=30, length=12, seed=0, step=1):
    """Each user walks the catalog in steps of `step` from a random start: the next item is
    fully determined by the last one, which popularity cannot know."""
    rng = np.random.default_rng(seed)
    starts = [int(rng.integers(items)) for _ in range(users)]
    return interactions([[(start + pos * step) % items for pos in range(length)] for start in starts])


def data_from_frame(frame):
    items = sorted(frame["item_id"].unique(), key=lambda s: (len(s), s))
    categories = pd.DataFrame(
        {
            "item_id": items,
            "category": ["a", "b"] * (len(items) // 2) + ["a"] * (len(items) % 2),
            "price": np.linspace(1, 100, len(items)),
        }
    )
    return sequences_from_frame(frame, build_vocabulary(items, categories))


def cyclic_data(**kwargs):
    return data_from_frame(cyclic_frame(**kwargs))


def taste_data(users=120, groups=3, per_group=50, length=40, seed=0):
    """Each user sees `length` of their group's items in random order: what comes next is any of the
    group's items not seen yet, which the whole seen set tells better than the last few items."""
    rng = np.random.default_rng(seed)
    return data_from_frame(
        interactions([(u % groups * per_group + rng.permutation(per_group)[:length]).tolist() for u in range(users)])
    )


def int8_error_bound(model, items, events, gaps, table):
    """[B, V]: how far the compressed form's scores (query and table rounded to int8 steps of their
    own scales, model/export.py) may be from the float model's: half a step of one factor times the
    other's L1 norm, for each factor, plus the product of the half steps, and float rounding."""
    import torch

    query = model.next_query(items, events, gaps, table)  # [B, D]
    query_step = query.abs().amax(1, keepdim=True) / 127  # [B, 1]
    table_step = table.abs().amax(1) / 127  # [V]
    return (
        query_step / 2 * table.abs().sum(1)
        + table_step / 2 * query.abs().sum(1, keepdim=True)
        + table.shape[1] * query_step * table_step / 4
        + 1e-5 * torch.ones(len(table))
    )
