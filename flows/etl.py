"""The `etl` flow: clean the landing zone's events and rebuild the marts with dbt."""

from __future__ import annotations

from datetime import datetime

import duckdb
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.dbt_build import dbt_build
from flows.quality import last_run_quality, replaced_batches
from rtrec.settings import get_settings


@task(name="data-quality-report")
def data_quality_report() -> dict[str, int]:
    counts = last_run_quality(get_settings().warehouse_path)
    create_table_artifact(
        key="data-quality",
        table=[{"measure": k, "rows": v} for k, v in counts.items()],
        description="Events checked by this run: accepted, duplicates and quarantined rows by reason.",
    )
    return counts


@task(name="detect-replaced-data-set")
def detect_replaced_data_set() -> list[str]:
    """Batch files the warehouse took that are gone from the landing zone (a regenerated or
    re-imported data set, whatever the file names): the warehouse must be rebuilt from the landing
    zone, or the old data set's events would stay mixed with the new one's."""
    try:
        gone = replaced_batches(get_settings().warehouse_path)
    except duckdb.IOException as err:  # no batch file left at all: nothing the warehouse took is there
        gone = [f"(every batch file: {str(err).splitlines()[0]})"]
    if gone:
        shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
        get_run_logger().warning(
            "the landing zone no longer holds %d batch file(s) the warehouse took (%s): the data set "
            "was replaced; rebuilding the warehouse (dbt --full-refresh)",
            len(gone),
            shown,
        )
    return gone


# A failed dbt node cannot be retried on its own; the flow retries and runs `dbt retry` the second time.
@flow(name="etl", retries=1, retry_delay_seconds=5)
def etl(full_refresh: bool = False, run_started_at: datetime | None = None) -> dict[str, int]:
    """`run_started_at` overrides the run's wall-clock start (a replay as of a time); which rows a
    run takes never depends on it."""
    if not full_refresh and detect_replaced_data_set():
        full_refresh = True
    dbt_build(full_refresh=full_refresh, run_started_at=run_started_at)
    return data_quality_report()
