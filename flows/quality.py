"""What the flows read from the warehouse: the last run's data-quality counts, its cut, and whether
the landing zone still holds the batches the warehouse took."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb


def _connect(warehouse: Path) -> duckdb.DuckDBPyConnection:
    # same configuration as dbt-duckdb's in-process connection (DuckDB refuses a different one)
    return duckdb.connect(str(warehouse))


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {name for (name,) in con.execute("select table_name from information_schema.tables").fetchall()}


def last_run_quality(warehouse: Path) -> dict[str, int]:
    """Rows the last dbt run checked: total, accepted, and rejected by reason."""
    with _connect(warehouse) as con:
        rows = con.execute(
            """
            select coalesce(reason, 'accepted'), count(*)
            from stg_events_checked
            where run_seq = (select max(run_seq) from stg_runs)
            group by 1 order by 1
            """
        ).fetchall()
    counts = dict(rows)
    counts["events_in"] = sum(counts.values())
    return counts


def last_run_cut(warehouse: Path) -> datetime | None:
    """The cut of the last dbt run (stg_runs): the Feast event timestamp of its batch rows online.
    None before any run."""
    if not warehouse.exists():
        return None
    with _connect(warehouse) as con:
        if "stg_runs" not in _tables(con):
            return None
        (cut,) = con.execute("select max(cut) from stg_runs").fetchone()
    return cut.replace(tzinfo=UTC) if cut is not None else None


def replaced_batches(warehouse: Path) -> list[str]:
    """Batch files the warehouse took that the landing zone no longer holds (by content, whatever
    their names now): when there are any, the data set was replaced and the warehouse must be rebuilt
    from what the landing zone holds. A warehouse from before batches had fingerprints counts as
    replaced too."""
    if not warehouse.exists():
        return []
    with _connect(warehouse) as con:
        tables = _tables(con)
        if "stg_batch_files_checked" not in tables:
            return ["(a warehouse without batch fingerprints)"] if "stg_events_checked" in tables else []
        rows = con.execute(
            """
            select source_file
            from stg_batch_files_checked
            where fingerprint not in (select fingerprint from stg_batch_files)
            order by source_file
            """
        ).fetchall()
    return [name for (name,) in rows]
