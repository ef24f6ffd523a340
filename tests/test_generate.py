import json

import duckdb
import pytest
from typer.testing import CliRunner

from cli.main import app
from rtrec.generate import DIRTY_KINDS, ShopConfig, generate

SMALL = ShopConfig(users=300, items=120, events=20_000, seed=7, dirty_rate=0.05)


def landing_bytes(landing):
    return {p.relative_to(landing): p.read_bytes() for p in sorted(landing.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    generate(SMALL, tmp_path / "a")
    generate(SMALL, tmp_path / "b")
    assert landing_bytes(tmp_path / "a") == landing_bytes(tmp_path / "b")


def test_another_seed_gives_other_events(tmp_path):
    generate(SMALL, tmp_path / "a")
    generate(ShopConfig(**{**SMALL.__dict__, "seed": 8}), tmp_path / "b")
    a, b = landing_bytes(tmp_path / "a"), landing_bytes(tmp_path / "b")
    assert a.keys() == b.keys() and a != b


COUNT_BY_KIND = """
with raw as (
    select *, row_number() over () as arrival from read_parquet('{events}/*.parquet')
), items as (select item_id from read_parquet('{items}'))
select
    count(*) filter (where event_id is not null) - count(distinct event_id) as duplicate_event_id,
    count(*) filter (where event_id is null or user_id is null or item_id is null) as null_id,
    count(*) filter (where event_type not in ('view', 'click', 'add_to_cart', 'purchase')) as unknown_event_type,
    count(*) filter (where try_strptime(ts, '%Y-%m-%dT%H:%M:%S.%gZ') is null) as malformed_ts,
    count(*) filter (where try_strptime(ts, '%Y-%m-%dT%H:%M:%S.%gZ') > timestamp '2030-01-01') as future_ts,
    count(*) filter (where item_id is not null and item_id not in (select item_id from items)) as unknown_item,
    count(*) as total_rows
from raw
"""


def test_manifest_counts_every_injected_dirty_row_exactly(tmp_path):
    manifest = generate(SMALL, tmp_path)
    query = COUNT_BY_KIND.format(events=tmp_path / "events", items=tmp_path / "items.parquet")
    row = duckdb.connect().execute(query).fetchone()
    counted = dict(zip([*DIRTY_KINDS, "total_rows"], row))
    assert all(manifest["dirty"][kind] > 0 for kind in DIRTY_KINDS)
    assert {kind: counted[kind] for kind in DIRTY_KINDS} == manifest["dirty"]
    assert counted["total_rows"] == manifest["total_rows"] == SMALL.events + sum(manifest["dirty"].values())
    assert manifest["clean_events"] == SMALL.events


def test_clean_events_follow_the_contract_and_time_order(tmp_path):
    generate(ShopConfig(users=200, items=100, events=5_000, dirty_rate=0.0), tmp_path)
    con = duckdb.connect()
    con.execute(f"create view ev as select * from read_parquet('{tmp_path}/events/*.parquet')")
    ts = [r[0] for r in con.execute("select ts from ev").fetchall()]
    assert ts == sorted(ts)
    kinds = "('view', 'click', 'add_to_cart', 'purchase')"
    funnel = con.execute(
        f"select count(distinct event_id), count(*), bool_and(event_type in {kinds}) from ev"
    ).fetchone()
    assert funnel == (5_000, 5_000, True)
    # purchases carry the item's price as value, other events none
    assert con.execute("select count(*) from ev where (event_type = 'purchase') != (value is not null)").fetchone() == (
        0,
    )


def test_oracle_ceiling_is_written_and_below_one(tmp_path):
    generate(SMALL, tmp_path)
    oracle = json.loads((tmp_path / "oracle.json").read_text())
    assert oracle["users"] > 0
    for mode in ("masked", "unmasked"):
        assert 0 < oracle[mode]["ndcg@10"] < oracle[mode]["hr@10"] < 1


def test_invalid_settings_name_the_field():
    with pytest.raises(ValueError, match="dirty_rate"):
        ShopConfig(dirty_rate=1.5)


def test_cli_generate_writes_the_landing_zone(data_dir):
    result = CliRunner().invoke(app, ["generate", "--users", "50", "--items", "40", "--events", "2000"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((data_dir / "landing" / "manifest.json").read_text())
    assert manifest["clean_events"] == 2000
    assert "oracle ceiling" in result.output
