"""The `etl` flow: clean the landing zone's events and rebuild the marts with dbt."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact

from flows.dbt_build import dbt_build
from flows.quality import last_run_quality
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


# A failed dbt node cannot be retried on its own; the flow retries and runs `dbt retry` the second time.
@flow(name="etl", retries=1, retry_delay_seconds=5)
def etl(full_refresh: bool = False) -> dict[str, int]:
    dbt_build(full_refresh=full_refresh)
    return data_quality_report()
