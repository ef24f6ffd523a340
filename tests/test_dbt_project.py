"""The dbt project, run for real through the `etl` Prefect flow (prefect-dbt) on DuckDB."""

import json

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from flows.dbt_build import DbtBuildFailed
from flows.etl import etl
from rtrec.generate import ShopConfig, generate
from rtrec.movielens import import_movielens

pytestmark = pytest.mark.usefixtures("prefect_harness")

SAMPLE = ShopConfig(users=400, items=300, events=30_000, seed=3, dirty_rate=0.03)


def query(data_dir, sql):
    # same configuration as dbt-duckdb's own in-process connection, which DuckDB requires
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
        return con.execute(sql).fetchall()


def mart(data_dir, name, order_by):
    return (
        pq.read_table(data_dir / "marts" / f"{name}.parquet").to_pandas().sort_values(order_by).reset_index(drop=True)
    )


def test_quarantine_counts_by_reason_equal_the_generator_manifest(data_dir):
    manifest = generate(SAMPLE, data_dir / "landing")
    etl()
    quarantined = dict(query(data_dir, "select reason, count(*) from stg_events_quarantined group by reason"))
    assert quarantined == manifest["dirty"]
    assert query(data_dir, "select count(*) from stg_events") == [(manifest["clean_events"],)]


def test_incremental_run_processes_only_new_rows_and_matches_a_full_refresh(data_dir):
    landing = data_dir / "landing"
    generate(SAMPLE, landing)
    events = pq.read_table(landing / "events")
    (landing / "events" / "events-00000.parquet").unlink()
    cut = int(events.num_rows * 0.7)
    pq.write_table(events.slice(0, cut), landing / "events" / "events-00000.parquet")
    etl()

    pq.write_table(events.slice(cut), landing / "events" / "events-00001.parquet")
    # the API's feedback log: one new event and a replay of an event already accepted in batch
    first = events.slice(0, 1).to_pylist()[0]
    feedback = [
        {**first, "event_id": "fb-1", "ts": "2026-08-01T00:00:00Z", "received_at": "2026-08-01T00:00:01Z", "seq": 1},
        {**first, "received_at": "2026-08-01T00:00:02Z", "seq": 2},
    ]
    (landing / "feedback" / "api-1.jsonl").write_text("".join(json.dumps(e) + "\n" for e in feedback))
    etl()
    checked_per_run = [
        n for (n,) in query(data_dir, "select count(*) from stg_events_checked group by checked_at order by checked_at")
    ]
    assert checked_per_run == [cut, events.num_rows - cut + len(feedback)]
    assert query(
        data_dir, "select reason from stg_events_checked where source_file = 'api-1.jsonl' order by source_row"
    ) == [(None,), ("duplicate_event_id",)]
    incremental = {
        "training_interactions": mart(data_dir, "training_interactions", ["user_id", "position"]),
        "user_features": mart(data_dir, "user_features", ["user_id"]),
        "item_features": mart(data_dir, "item_features", ["item_id"]),
    }
    counts = query(data_dir, "select (select count(*) from stg_events), (select count(*) from stg_events_quarantined)")

    etl(full_refresh=True)
    assert (
        query(data_dir, "select (select count(*) from stg_events), (select count(*) from stg_events_quarantined)")
        == counts
    )
    for name, frame in incremental.items():
        full = mart(data_dir, name, list(frame.columns[:1]) + (["position"] if name == "training_interactions" else []))
        assert frame.equals(full), name


def test_build_passes_on_movielens_100k(data_dir, movielens_100k):
    import_movielens(movielens_100k, data_dir / "landing")
    etl()
    splits = dict(
        query(
            data_dir,
            "select split, count(*) from read_parquet('{}') group by split".format(
                data_dir / "marts" / "training_interactions.parquet"
            ),
        )
    )
    assert splits["test"] == splits["validation"] == 943
    assert sum(splits.values()) == 100_000
    assert query(data_dir, "select count(*) from stg_events_quarantined") == [(0,)]


def test_a_failing_dbt_test_is_reported_by_name_and_row_count(data_dir):
    landing = data_dir / "landing"
    generate(ShopConfig(users=50, items=40, events=2_000, dirty_rate=0.0), landing)
    etl()
    # the catalog shrinks: accepted events now point at an item that no longer exists
    items = pq.read_table(landing / "items.parquet")
    gone = query(data_dir, "select item_id, count(*) from stg_events group by 1 order by 2 desc limit 1")[0]
    pq.write_table(items.filter(pc.not_equal(items.column("item_id"), gone[0])), landing / "items.parquet")
    with pytest.raises(DbtBuildFailed, match=rf"relationships_stg_events_item_id.* fail \({gone[1]} failing rows\)"):
        etl()
