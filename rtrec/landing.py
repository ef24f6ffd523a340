"""The landing zone: raw files exactly as they arrived, read by dbt's sources.

Layout under ``$RTREC_DATA_DIR/landing``: ``events/*.parquet`` (batch events), ``feedback/*.jsonl``
(events accepted by the API), ``items.parquet``, ``users.parquet``, ``manifest.json``.
Raw event columns are strings on purpose: a malformed timestamp must reach dbt's quarantine, not
be lost at write time.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rtrec.durable import fsync_dir

EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
        ("ts", pa.string()),
        ("value", pa.float64()),
        ("request_id", pa.string()),
    ]
)

ITEM_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("price", pa.float64()),
        ("description", pa.string()),
    ]
)

USER_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("segment", pa.string()),
        ("age", pa.int32()),
        ("gender", pa.string()),
        ("occupation", pa.string()),
    ]
)


def reset_batch_data(landing_dir: Path) -> None:
    """Remove the previous data set's batch files; the API's feedback log is kept."""
    shutil.rmtree(landing_dir / "events", ignore_errors=True)
    for name in ("items.parquet", "users.parquet", "manifest.json", "oracle.json"):
        (landing_dir / name).unlink(missing_ok=True)
    (landing_dir / "events").mkdir(parents=True, exist_ok=True)
    ensure_landing_zone(landing_dir)


def ensure_landing_zone(landing_dir: Path) -> None:
    """The landing zone's fixed files, which readers rely on before any event arrives: the feedback
    folder with an empty first file (it keeps dbt's ``feedback/*.jsonl`` source from matching
    nothing) and the user-deletion record."""
    feedback = landing_dir / "feedback"
    feedback.mkdir(parents=True, exist_ok=True)
    (feedback / "0-init.jsonl").touch()
    (landing_dir / "deletions.jsonl").touch()


def write_parquet_atomically(table: pa.Table, path: Path) -> None:
    """Write a landing file so that a reader sees the old file or the whole new one, never part of
    one, and a crash leaves one of the two: temporary file (its name ends in .tmp, so no source
    pattern matches it), fsync, rename over, fsync of the folder."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary file so readers never see half a manifest."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
