"""Small sequence data sets with a known structure, built in memory."""

import numpy as np
import pandas as pd

from model.data import build_vocabulary, sequences_from_frame


def cyclic_frame(users=60, items=30, length=12, seed=0, step=1):
    """Each user walks the catalog in steps of `step` from a random start: the next item is
    fully determined by the last one, which popularity cannot know."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        start = int(rng.integers(items))
        for pos in range(length):
            split = "test" if pos == length - 1 else "validation" if pos == length - 2 else "train"
            rows.append(
                {
                    "user_id": f"u{u}",
                    "item_id": f"i{(start + pos * step) % items}",
                    "event_type": "view",
                    "position": pos + 1,
                    "split": split,
                    "ts": pd.Timestamp("2026-01-01") + pd.Timedelta(minutes=pos),
                }
            )
    return pd.DataFrame(rows)


def cyclic_data(**kwargs):
    frame = cyclic_frame(**kwargs)
    items = sorted(frame["item_id"].unique(), key=lambda s: (len(s), s))
    categories = pd.DataFrame(
        {
            "item_id": items,
            "category": ["a", "b"] * (len(items) // 2) + ["a"] * (len(items) % 2),
            "price": np.linspace(1, 100, len(items)),
        }
    )
    return sequences_from_frame(frame, build_vocabulary(items, categories))
