"""Failure handling of the nightly flow, and the deployments."""

import io
import logging
import sqlite3
from contextlib import closing

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.logging.handlers import PrefectConsoleHandler
from rich.console import Console

from flows.deploy import declared_deployments, deploy
from flows.embed import embed
from flows.nightly import NightlyStepFailed, done_line, nightly
from flows.progress import compact_console
from model.registry import Registry
from rtrec.content import CONTENT_FILE, read_content
from rtrec.generate import ShopConfig, generate
from rtrec.settings import get_settings

SMALL = ShopConfig(users=80, items=60, events=4_000, dirty_rate=0.0)


def test_a_failed_training_names_the_step_and_leaves_the_current_model(data_dir, prefect_harness, capsys):
    generate(SMALL, data_dir / "landing")
    screen = io.StringIO()
    with compact_console(data_dir / "logs", Console(file=screen, width=200)) as log_path:
        first = nightly(preset_name="tiny", epochs=2)
    # the compact view: a line per step and per epoch, the decision; dbt's node lines only in the file
    shown = screen.getvalue()
    for line in (
        "forget: ",
        "etl: 4,000 events checked, 4,000 accepted",
        "embed: 60 item text(s) encoded, 0 unchanged",
        "materialize: user_state ",
        "setting 1, epoch 1/2:",
    ):
        assert line in shown, shown
    assert f"train: model {first['train'].version} (setting 1 of 1), test NDCG@10" in shown and "promoted" in shown
    assert "stg_events" not in shown + capsys.readouterr().err  # neither here nor on Prefect's console
    full = log_path.read_text()
    assert "stg_events" in full and "epoch 1/2: loss" in full
    assert all(h.level == 0 for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler))
    content = read_content(data_dir / "marts" / CONTENT_FILE)
    assert sorted(content["item_id"]) == sorted(
        pq.read_table(data_dir / "landing" / "items.parquet")["item_id"].to_pylist()
    )
    with pytest.raises(
        NightlyStepFailed, match=r"(?s)step 'train' failed: unknown preset.*left unchanged: the current model"
    ):
        nightly(preset_name="no-such-preset")
    assert Registry(data_dir / "models").current() == first["train"].version
    # the second run's embed step found every text unchanged: no vector encoded or stamped again
    again = read_content(data_dir / "marts" / CONTENT_FILE)
    assert again["event_timestamp"].tolist() == content["event_timestamp"].tolist()


def online_rows(path) -> dict[str, list[tuple]]:
    """Every row of every table of the SQLite online store (a materialize rewrites created_ts at least)."""
    with closing(sqlite3.connect(path)) as con:
        tables = [name for (name,) in con.execute("select name from sqlite_master where type = 'table'")]
        return {table: sorted(con.execute(f'select * from "{table}"').fetchall(), key=repr) for table in tables}


def test_a_failed_dbt_test_stops_before_materialize(data_dir, prefect_harness):
    generate(SMALL, data_dir / "landing")
    first = nightly(preset_name="tiny", epochs=1)
    online = online_rows(data_dir / "feast" / "online.db")
    assert online  # the first run materialized something to compare against
    # the catalog loses an item that accepted events point at: dbt's relationships test fails
    items = pq.read_table(data_dir / "landing" / "items.parquet")
    pq.write_table(items.filter(pc.not_equal(items.column("item_id"), "i0")), data_dir / "landing" / "items.parquet")
    with pytest.raises(
        NightlyStepFailed,
        match=r"(?s)step 'etl' failed.*relationships_stg_events_item_id.*left unchanged: the online store",
    ):
        nightly(preset_name="tiny", epochs=1)
    assert online_rows(data_dir / "feast" / "online.db") == online
    assert Registry(data_dir / "models").current() == first["train"].version


def test_training_without_data_says_so(data_dir, prefect_harness):
    generate(SMALL, data_dir / "landing")
    # two users with one event each: nobody has the three interactions a split needs
    events = pq.read_table(data_dir / "landing" / "events").slice(0, 2)
    for path in (data_dir / "landing" / "events").glob("*.parquet"):
        path.unlink()
    pq.write_table(
        events.set_column(1, "user_id", pa.array(["a", "b"])), data_dir / "landing" / "events" / "events-00000.parquet"
    )
    with pytest.raises(NightlyStepFailed, match="step 'train' failed: no training data"):
        nightly(preset_name="tiny", epochs=1)


def test_deploy_registers_nightly_on_cpu_and_gpu_pools_with_the_schedule(data_dir, prefect_harness, monkeypatch):
    monkeypatch.setenv("RTREC_SCHEDULE_CRON", "30 3 * * *")
    monkeypatch.setenv("RTREC_SCHEDULE_TIMEZONE", "Europe/Berlin")
    get_settings.cache_clear()
    ids = deploy(get_settings())
    assert set(ids) == {"nightly-cpu", "nightly-gpu"}
    with get_client(sync_client=True) as client:
        for name, pool in (("nightly-cpu", "rtrec-cpu"), ("nightly-gpu", "rtrec-gpu")):
            deployment = client.read_deployment_by_name(f"nightly/{name}")
            assert deployment.work_pool_name == pool
            schedule = deployment.schedules[0].schedule
            assert (schedule.cron, schedule.timezone) == ("30 3 * * *", "Europe/Berlin")
        assert client.read_deployment_by_name("nightly/nightly-gpu").parameters["device"] == "cuda"
    assert deploy(get_settings()) == ids  # deploying again updates in place


def test_deploy_takes_the_schedule_that_prefect_yaml_declares_unless_overridden(data_dir, prefect_harness):
    declared = {spec["name"]: spec["schedules"][0] for spec in declared_deployments()}
    registered = deploy(get_settings(), gpu=False)
    assert set(registered) == {"nightly-cpu"}
    assert (registered["nightly-cpu"].cron, registered["nightly-cpu"].timezone) == (
        declared["nightly-cpu"]["cron"],
        declared["nightly-cpu"]["timezone"],
    )


def test_prefect_analytics_are_off_in_every_process_that_runs_the_flows():
    from prefect.settings import get_current_settings

    assert get_current_settings().server.analytics_enabled is False


def test_a_failed_embed_step_is_logged_and_the_nightly_goes_on(data_dir, prefect_harness):
    @flow
    def embed_only() -> dict:
        return embed()

    # no item_features mart to read: the step fails, says why, and returns instead of raising
    result = embed_only()
    assert "item_features.parquet" in result["failed"]
    assert done_line("embed", result).startswith("embed: failed (")
    assert not (data_dir / "marts" / CONTENT_FILE).exists()
