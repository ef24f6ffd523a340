"""Feast apply, the nightly write of the marts to the online store, and the `materialize` flow.

Every night rewrites every row of the online views' batch sources (the marts), each stamped with
the cut of the dbt run that built them (stg_runs: the run's start, to the second). The online
stores keep the newer row (Redis by itself, SQLite through rtrec/sqlite_online_store.py), so:
- a user whose state changed online after dbt read the event log (a push, a DELETE) keeps it: the
  real-time write is stamped later than the cut;
- every other user gets what the warehouse says, whatever happened online before: an online update
  that failed, events that arrived out of order (the warehouse has them in event-time order).
Feast's own `materialize` stamps a row with its source's event timestamp instead (for user_state,
the user's last event), which would leave late or out-of-order events out of the online state.

Then users forgotten since (landing/deletions.jsonl) lose their online rows, tombstones included,
unless they started a new history online after the cut.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task

from flows.quality import last_run_cut
from rtrec.feature_store import definitions, open_store
from rtrec.online_state import UserLocks, UserStateTable, remove_user_keys, user_lock
from rtrec.privacy import forgotten_users
from rtrec.settings import get_settings

BATCH_ROWS = 10_000


@task(name="feast-apply", retries=2, retry_delay_seconds=5)
def feast_apply() -> list[str]:
    """Register feature_repo's definitions; applying the same definitions again changes nothing."""
    store = open_store(get_settings())
    objects = definitions()
    store.apply(objects)
    names = sorted(getattr(o, "name", "") for o in objects)
    get_run_logger().info("feast apply: %d objects (%s)", len(objects), ", ".join(names))
    return names


def write_stamped(store, view, cut: datetime) -> int:
    """Write every row of the view's batch source to the online store, stamped with `cut`."""
    source = view.batch_source
    table = pq.read_table(source.path)
    stamp = pd.Timestamp(cut)
    for start in range(0, table.num_rows, BATCH_ROWS):
        frame = table.slice(start, BATCH_ROWS).to_pandas()
        frame[source.timestamp_field] = stamp
        store.write_to_online_store(view.name, frame)
    return table.num_rows


@task(name="feast-materialize", retries=2, retry_delay_seconds=5)
def feast_materialize(cut: datetime | None = None) -> dict[str, int]:
    """Load the marts into the online store, every row stamped with `cut` (default: the last dbt
    run's, from the warehouse). A row older than the one stored is skipped by the store."""
    settings = get_settings()
    cut = cut or last_run_cut(settings.warehouse_path)
    if cut is None:
        raise RuntimeError(f"no dbt run on record in {settings.warehouse_path}: run the etl flow first")
    store = open_store(settings)
    logger = get_run_logger()
    written = {}
    for view in store.list_feature_views():
        if not view.online:
            continue
        written[view.name] = write_stamped(store, view, cut)
        logger.info("materialized %s: %d rows of its batch source, stamped %s", view.name, written[view.name], cut)
    return written


@task(name="remove-forgotten-users-online", retries=2, retry_delay_seconds=5)
def remove_forgotten_online() -> int:
    """Remove the online rows (tombstones included) of forgotten users the warehouse no longer holds.

    A user keeps their row only when it holds a new history: events pushed after the tombstone of
    their last deletion (the next night's batch carries them). A row without that tombstone (the
    DELETE could not reach the online store) goes whatever it holds. Returns the users removed."""
    settings = get_settings()
    forgotten = forgotten_users(settings.landing_dir)
    if not forgotten:
        return 0
    marts = settings.marts_dir / "user_features.parquet"
    in_warehouse = set(pq.read_table(marts, columns=["user_id"]).column("user_id").to_pylist())
    table = UserStateTable(open_store(settings))
    redis_url = settings.redis_url if settings.online_store == "redis" else None
    locks = UserLocks(settings.feast_dir / "locks", redis_url, settings.redis_timeout_seconds, wait=10)
    removed = 0
    for user in sorted(set(forgotten) - in_warehouse):
        if table.read(user).stored_at is None:
            continue  # no row
        with user_lock(table, locks, user):  # a push for the user now sees the row, or none
            state = table.read(user)
            tombstoned = state.forgotten_at is not None and state.forgotten_at >= forgotten[user]
            if state.known and tombstoned:
                continue
            removed += remove_user_keys(table, [user])
    get_run_logger().info("removed the online rows of %d forgotten user(s)", removed)
    return removed


@flow(name="materialize")
def materialize(cut: datetime | None = None) -> dict[str, int]:
    feast_apply()
    written = feast_materialize(cut)
    remove_forgotten_online()
    return written
