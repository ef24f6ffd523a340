"""The `etl` flow: clean the landing zone's events and rebuild the marts with dbt."""

from __future__ import annotations

from prefect import flow

from flows.dbt_build import dbt_build


# A failed dbt node cannot be retried on its own; the flow retries and runs `dbt retry` the second time.
@flow(name="etl", retries=1, retry_delay_seconds=5)
def etl(full_refresh: bool = False) -> dict[str, int]:
    return dbt_build(full_refresh=full_refresh)
