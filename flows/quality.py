"""Data-quality counts of the last dbt run, read from the warehouse."""

from __future__ import annotations

from pathlib import Path

import duckdb


def last_run_quality(warehouse: Path) -> dict[str, int]:
    """Rows the last dbt run checked: total, accepted, and rejected by reason."""
    # same configuration as dbt-duckdb's in-process connection (DuckDB refuses a different one)
    with duckdb.connect(str(warehouse)) as con:
        rows = con.execute(
            """
            select coalesce(reason, 'accepted'), count(*)
            from stg_events_checked
            where checked_at = (select max(checked_at) from stg_events_checked)
            group by 1 order by 1
            """
        ).fetchall()
    counts = dict(rows)
    counts["events_in"] = sum(counts.values())
    return counts
