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


def int8_reference(model, items, events, gaps, table):
    """The compressed form's scores as its scheme defines them (model/export.py), from the float
    model's query: ([B, V] scores, [B, 1] one step of a query coordinate times the largest table
    entry, by which the graph may differ where ONNX Runtime's float encoder rounds a coordinate
    to the other side of a half step)."""
    import torch

    from model.export import QUERY_STEPS, TABLE_STEPS

    with torch.inference_mode():
        query = model.next_query(items, events, gaps, table).numpy().astype(np.float64)  # [B, D]
    table = table.numpy()  # rounded in float32, as serving rounds it
    table_scale = np.abs(table).max(1) / TABLE_STEPS
    table_scale[table_scale == 0] = 1.0
    table_steps = np.rint(table / table_scale[:, None]).astype(np.float64)
    query_scale = np.maximum(np.abs(query).max(1, keepdims=True) / QUERY_STEPS, 1e-30)
    steps = np.rint(query / query_scale) @ table_steps.T
    return steps * query_scale * table_scale.astype(np.float64), query_scale * np.abs(table).max()
