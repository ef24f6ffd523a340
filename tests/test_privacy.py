"""Forgetting a user: `rtrec forget`, the nightly run, and `rtrec privacy-audit` finding the id nowhere."""

import hashlib
import json
import os
import time
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import rtrec.landing
from cli.main import app
from flows.nightly import nightly
from rtrec.feature_store import open_store
from rtrec.generate import ShopConfig, generate
from rtrec.landing import EVENT_SCHEMA
from rtrec.online_state import UserLocks, UserStateTable, push_event, read_online
from rtrec.privacy import forgotten_users, redact_landing, stamps
from rtrec.settings import get_settings
from serving.feedback_log import FeedbackLog


def query(data_dir, sql):
    # same configuration as dbt-duckdb's own in-process connection, which DuckDB requires
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
        return con.execute(sql).fetchall()


def cli(*args):
    return CliRunner().invoke(app, list(args))


def places(output: str) -> set[str]:
    """The places a privacy audit printed as `found`."""
    return {line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("found ")}


def test_a_forgotten_user_is_found_nowhere_after_the_next_nightly_run(data_dir, prefect_harness):
    landing = data_dir / "landing"
    generate(ShopConfig(users=60, items=40, events=3_000, dirty_rate=0.03), landing)
    nightly(preset_name="tiny", epochs=1)
    settings = get_settings()
    # a user with accepted and quarantined rows, and another who comes back after the deletion
    gone, back = (
        user
        for (user,) in query(
            data_dir,
            "select distinct user_id from stg_events_quarantined "
            "where user_id in (select user_id from stg_events) order by user_id limit 2",
        )
    )
    table = UserStateTable(open_store(settings))
    locks = UserLocks(settings.feast_dir / "locks", wait=5)
    log = FeedbackLog(settings.feedback_dir)

    def send(user, event_id, item):
        event = {
            "event_id": event_id,
            "user_id": user,
            "item_id": item,
            "event_type": "click",
            "ts": "2026-09-01T00:00:00Z",
        }
        log.append([event])
        push_event(table, locks, user, item, "click", datetime(2026, 9, 1, tzinfo=UTC), settings.max_recent_items)

    send(gone, "gone-1", "i1")  # through the API too: in the feedback log and online
    assert cli("forget", gone).exit_code == 0
    assert cli("forget", back).exit_code == 0
    send(back, "back-1", "i2")  # after the deletion: a new history
    assert read_online(open_store(settings), gone)[0].history() == []

    before = cli("privacy-audit", gone)
    assert before.exit_code == 1, before.output
    assert {
        "landing/events/events-00000.parquet",
        "landing/users.parquet",
        "warehouse.duckdb",
        "marts/user_features.parquet",
        "marts/training_interactions.parquet",
        "feast/online.db",
    } <= places(before.output)
    assert "stg_events_quarantined" in before.output

    second = nightly(preset_name="tiny", epochs=1)
    after = cli("privacy-audit", gone)
    assert after.exit_code == 0, after.output
    assert f"{gone}: found nowhere" in after.output
    # the batch files rewritten without the users are no new batch: only the new event is checked
    assert second["forget"]["files_rewritten"] == ["events/events-00000.parquet", "users.parquet"]
    assert second["etl"]["events_in"] == 1

    # what arrived after the deletion is the user's history now, in the warehouse and online
    assert query(data_dir, f"select event_id from stg_events where user_id = '{back}'") == [("back-1",)]
    assert read_online(open_store(settings), back)[0].history() == [("i2", "click")]
    # the fingerprint a rewritten file is stamped with is the one dbt took the original file by
    landing_files = {stamps(path)[0] for path in (landing / "events").glob("*.parquet")}
    assert {f for (f,) in query(data_dir, "select fingerprint from stg_batch_files_checked")} == landing_files


def write_events(path, users):
    rows = [
        {
            "event_id": f"{path.stem}-{n}",
            "user_id": user,
            "item_id": "i1",
            "event_type": "view",
            "ts": "2026-06-01T00:00:00Z",
        }
        for n, user in enumerate(users)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA), path)


def test_the_landing_rewrite_is_atomic_and_keeps_a_new_history(tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    (landing / "events").mkdir(parents=True)
    old = landing / "events" / "events-00000.parquet"
    write_events(old, ["a", "b", "a", "c"])
    original = old.read_bytes()
    landed = datetime.fromtimestamp(old.stat().st_mtime, UTC)
    time.sleep(0.01)
    deleted_at = datetime.now(UTC)
    (landing / "deletions.jsonl").write_text(
        json.dumps({"user_id": "a", "deleted_at": deleted_at.isoformat()})
        + "\n"
        + '{"user_id": "c", "deleted_at": "2026-0'  # a torn record still forgets whom it names
    )
    time.sleep(0.01)
    new = landing / "events" / "events-00001.parquet"  # landed after the deletion: a's new history
    write_events(new, ["a", "b"])
    assert set(forgotten_users(landing)) == {"a", "c"}

    def crash(*_):
        raise OSError("crash before the rename")

    monkeypatch.setattr(rtrec.landing.os, "replace", crash)
    with pytest.raises(OSError, match="crash"):
        redact_landing(landing)
    assert old.read_bytes() == original  # as it was, and no other file the source pattern reads
    assert sorted(p.name for p in (landing / "events").glob("*.parquet")) == [old.name, new.name]
    monkeypatch.undo()

    done = redact_landing(landing)
    assert (done.files_rewritten, done.rows_removed) == (["events/events-00000.parquet"], 3)
    assert pq.read_table(old).column("user_id").to_pylist() == ["b"]
    assert pq.read_table(new).column("user_id").to_pylist() == ["a", "b"]
    assert stamps(old) == (hashlib.md5(original).hexdigest(), landed)  # still the batch it was
    # a rewrite of a rewritten file keeps the first file's stamps
    os.utime(old, (time.time() + 60, time.time() + 60))
    with open(landing / "deletions.jsonl", "a") as record:
        record.write("\n" + json.dumps({"user_id": "b", "deleted_at": (deleted_at + timedelta(seconds=1)).isoformat()}))
    redact_landing(landing)
    assert pq.read_table(old).num_rows == 0
    assert pq.read_table(new).column("user_id").to_pylist() == ["a"]
    assert stamps(old) == (hashlib.md5(original).hexdigest(), landed)
