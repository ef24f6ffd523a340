"""Feast apply and incremental materialization as Prefect tasks, and the `materialize` flow."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger, task

from rtrec.feature_store import definitions, open_store
from rtrec.settings import get_settings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@task(name="feast-apply", retries=2, retry_delay_seconds=5)
def feast_apply() -> list[str]:
    """Register feature_repo's definitions; applying the same definitions again changes nothing."""
    store = open_store(get_settings())
    objects = definitions()
    store.apply(objects)
    names = sorted(getattr(o, "name", "") for o in objects)
    get_run_logger().info("feast apply: %d objects (%s)", len(objects), ", ".join(names))
    return names


@task(name="feast-materialize", retries=2, retry_delay_seconds=5)
def feast_materialize(end: datetime | None = None) -> dict[str, int]:
    """Load the marts' newest rows into the online store.

    A view materialized before continues from where it stopped (incremental); a new one starts at
    the epoch, because replayed or imported histories (MovieLens is from 1998) are older than any TTL."""
    store = open_store(get_settings())
    end = end or datetime.now(UTC)
    logger = get_run_logger()
    written = {}
    for view in store.list_feature_views():
        if not view.online:
            continue
        if view.materialization_intervals:
            store.materialize_incremental(end_date=end, feature_views=[view.name])
        else:
            store.materialize(start_date=EPOCH, end_date=end, feature_views=[view.name])
        written[view.name] = _rows_in_source(view)
        logger.info("materialized %s: %d rows in its batch source", view.name, written[view.name])
    return written


def _rows_in_source(view) -> int:
    import pyarrow.parquet as pq

    source = view.batch_source
    return pq.ParquetFile(source.path).metadata.num_rows


@flow(name="materialize")
def materialize(end: datetime | None = None) -> dict[str, int]:
    feast_apply()
    return feast_materialize(end)
