"""The `embed` step: every catalog item's text embedding (rtrec/content.py), encoded only for items
that are new or whose title, description or category changed, kept beside the item features."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from prefect import get_run_logger, task

from rtrec.content import CONTENT_FILE, update_content
from rtrec.settings import get_settings


def embed_catalog(marts: Path) -> dict:
    """Bring marts/item_content.parquet up to date with marts/item_features.parquet."""
    columns = ["item_id", "title", "description", "category", "price"]
    items = pq.read_table(marts / "item_features.parquet", columns=columns).to_pandas()
    return update_content(items, marts / CONTENT_FILE)


@task(name="embed-item-content")
def embed() -> dict:
    """The embed step. Text embeddings only help new items: a failure here is logged and the
    nightly run goes on with the last run's file (`{"failed": why}`), instead of leaving the
    online store and the model a day old."""
    try:
        done = embed_catalog(get_settings().marts_dir)
    except Exception as err:
        get_run_logger().exception("item text embeddings failed; keeping the last run's")
        return {"failed": f"{type(err).__name__}: {err}"[:300]}
    get_run_logger().info(
        "item text embeddings: %d encoded (new or changed), %d kept, %d removed",
        done["encoded"],
        done["items"] - done["encoded"],
        done["removed"],
    )
    return done
