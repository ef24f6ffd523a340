"""The batch path under the faults it must survive: a damaged feedback line, a replaced or renamed
batch, a clock set back, real-time writes racing the nightly run, two nightly runs at once."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow.parquet as pq
import pytest

import flows.nightly
from flows.etl import etl
from flows.materialize import materialize
from rtrec.feature_store import open_store
from rtrec.generate import ShopConfig, generate
from rtrec.online_state import UserLocks, UserStateTable, forget_user, push_event, read_online
from rtrec.settings import get_settings
from serving.feedback_log import FeedbackLog

pytestmark = pytest.mark.usefixtures("prefect_harness")

SMALL = ShopConfig(users=60, items=40, events=3_000, dirty_rate=0.0)


def query(data_dir, sql):
    # same configuration as dbt-duckdb's own in-process connection, which DuckDB requires
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as con:
        return con.execute(sql).fetchall()


def mart(data_dir, name, order_by):
    frame = pq.read_table(data_dir / "marts" / f"{name}.parquet").to_pandas()
    return frame.sort_values(order_by).reset_index(drop=True)


MARTS = {"training_interactions": ["user_id", "position"], "user_features": ["user_id"], "item_features": ["item_id"]}


def feedback_line(event_id, user, item, ts, seq, event_type="click"):
    record = {
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "event_type": event_type,
        "ts": ts,
        "value": None,
        "request_id": None,
        "received_at": datetime.now(UTC).isoformat(),
        "seq": seq,
    }
    return json.dumps(record).encode() + b"\n"


# -- 1. a damaged line in the API's feedback log ------------------------------------------------


def test_a_damaged_feedback_line_is_quarantined_and_the_rest_of_the_log_loads(data_dir):
    generate(SMALL, data_dir / "landing")
    torn = feedback_line("fb-2", "u7", "i2", "2026-06-20T10:00:00Z", 2)[:37]  # a write cut short by a crash
    (data_dir / "landing" / "feedback" / "api-torn.jsonl").write_bytes(
        feedback_line("fb-1", "u5", "i1", "2026-06-20T09:00:00Z", 1)
        + torn
        + b"\n"
        + b"\xff\xfe\x00garbage that is not even UTF-8\n"
        + feedback_line("fb-3", "u6", "i3", "2026-06-20T11:00:00Z", 3)
    )
    etl()
    quarantined = query(
        data_dir,
        "select reason, source_file, user_id from stg_events_quarantined where source_file = 'api-torn.jsonl' "
        "order by user_id nulls last",
    )
    # the torn line still says whose it was, so forgetting that user reaches it too
    assert quarantined == [("malformed_line", "api-torn.jsonl", "u7"), ("malformed_line", "api-torn.jsonl", None)]
    assert query(
        data_dir, "select event_id, user_id from stg_events where source_file = 'api-torn.jsonl' order by 1"
    ) == [("fb-1", "u5"), ("fb-3", "u6")]

    second = etl()  # the damaged lines are known by their text: never quarantined twice
    assert second["events_in"] == 0
    assert query(data_dir, "select count(*) from stg_events_quarantined where reason = 'malformed_line'") == [(2,)]

    FeedbackLog(data_dir / "landing" / "feedback").forget_user("u7")
    etl()  # the torn line does not say when it arrived: forgetting its user forgets it too
    assert query(data_dir, "select count(*) from stg_events_quarantined where user_id = 'u7'") == [(0,)]


# -- 2. batches known by content, not by file name ----------------------------------------------


def test_a_regenerated_data_set_gives_the_marts_of_a_full_refresh(data_dir):
    landing = data_dir / "landing"
    generate(ShopConfig(users=80, items=50, events=3_000, seed=1, dirty_rate=0.01), landing)
    etl()
    # the same file names, other events (the same event ids, too)
    manifest = generate(ShopConfig(users=80, items=50, events=2_500, seed=2, dirty_rate=0.01), landing)
    etl()
    assert query(data_dir, "select count(*) from stg_events") == [(manifest["clean_events"],)]
    assert dict(query(data_dir, "select reason, count(*) from stg_events_quarantined group by 1")) == {
        reason: count for reason, count in manifest["dirty"].items() if count
    }
    incremental = {name: mart(data_dir, name, order) for name, order in MARTS.items()}

    etl(full_refresh=True)
    for name, order in MARTS.items():
        assert incremental[name].equals(mart(data_dir, name, order)), name


def test_a_new_batch_file_is_checked_once_and_a_renamed_one_never_again(data_dir):
    landing = data_dir / "landing"
    generate(SMALL, landing)
    events = pq.read_table(landing / "events")
    (landing / "events" / "events-00000.parquet").unlink()
    cut = int(events.num_rows * 0.6)
    pq.write_table(events.slice(0, cut), landing / "events" / "first.parquet")
    assert etl()["events_in"] == cut

    pq.write_table(events.slice(cut), landing / "events" / "second.parquet")
    assert etl()["events_in"] == events.num_rows - cut  # only the new file's rows

    (landing / "events" / "first.parquet").rename(landing / "events" / "2026-06-01-export.parquet")
    (landing / "events" / "second.parquet").rename(landing / "events" / "2026-06-02-export.parquet")
    assert etl()["events_in"] == 0  # the same batches under new names: nothing taken twice
    assert query(data_dir, "select count(*), count(distinct event_id) from stg_events") == [
        (events.num_rows, events.num_rows)
    ]
    assert query(data_dir, "select max(run_seq) from stg_runs") == [(3,)]  # and no rebuild either


# -- 3. the incremental watermark only grows ------------------------------------------------------


def test_a_run_whose_clock_is_set_back_still_takes_the_new_rows(data_dir):
    landing = data_dir / "landing"
    generate(SMALL, landing)
    etl()
    (landing / "feedback" / "api-late.jsonl").write_bytes(
        feedback_line("late-1", "u3", "i4", "2026-06-20T09:00:00Z", 1)
    )
    # the host's clock stepped back two days between the runs
    second = etl(run_started_at=datetime.now(UTC) - timedelta(days=2))
    assert second == {"accepted": 1, "events_in": 1}
    assert query(data_dir, "select count(*) from stg_events where event_id = 'late-1'") == [(1,)]
    assert query(data_dir, "select run_seq from stg_runs order by started_at") == [(2,), (1,)]
    assert query(data_dir, "select run_seq from stg_runs order by cut") == [(1,), (2,)]  # the cut only grows


# -- 4. the online state after a nightly run --------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def online_store(request, data_dir, monkeypatch):
    monkeypatch.setenv("RTREC_ONLINE_STORE", request.param)
    if request.param == "redis":
        import redis

        # the session's Redis server, on a database of this test's own: the online keys of other
        # tests' users (u1, u2, ...) must not meet these
        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/3"
        redis.Redis.from_url(url).flushdb()
        monkeypatch.setenv("RTREC_REDIS_URL", url)
    get_settings.cache_clear()
    return request.param


def online_history(settings, user):
    return read_online(open_store(settings), user)[0].history()


def mart_history(settings, user):
    frame = pq.read_table(settings.marts_dir / "user_features.parquet").to_pandas().set_index("user_id")
    return list(zip(frame.loc[user].recent_items, frame.loc[user].recent_event_types))


def test_the_nightly_batch_never_takes_the_online_state_back_and_repairs_the_rest(data_dir, online_store):
    generate(SMALL, data_dir / "landing")
    etl()
    materialize()
    settings = get_settings()
    table = UserStateTable(open_store(settings))
    redis_url = settings.redis_url if online_store == "redis" else None
    locks = UserLocks(settings.feast_dir / "locks", redis_url, wait=5)
    log = FeedbackLog(settings.feedback_dir)
    features = pq.read_table(settings.marts_dir / "user_features.parquet").to_pandas().set_index("user_id")
    late, failed, pushed, deleted = features.index[:4]
    data_end = features.last_event_ts.max().tz_localize(UTC).to_pydatetime()

    def new_items(user, n):
        """Items that are not the user's recent ones: each event is a new interaction."""
        return [item for item in (f"i{k}" for k in range(40)) if item not in features.loc[user].recent_items][:n]

    def accept(user, item, ts):
        """An event through the API's path: durable in the log, then the online update."""
        event = {"event_id": f"{user}-{item}", "user_id": user, "item_id": item, "event_type": "click"}
        log.append([{**event, "ts": ts.isoformat(), "value": None, "request_id": None}])
        push_event(table, locks, user, item, "click", ts, settings.max_recent_items)

    # out of order: the later event arrives first
    first, second = new_items(late, 2)
    accept(late, second, data_end + timedelta(hours=2))
    accept(late, first, data_end + timedelta(hours=1))
    assert online_history(settings, late)[-2:] == [(second, "click"), (first, "click")]
    # an online update that failed: the event is only in the log
    (lost,) = new_items(failed, 1)
    log.append(
        [
            {
                "event_id": "lost",
                "user_id": failed,
                "item_id": lost,
                "event_type": "view",
                "ts": (data_end + timedelta(hours=3)).isoformat(),
            }
        ]
    )
    # two users active just now, so that their batch rows are recent too
    before, after = new_items(pushed, 2)
    accept(pushed, before, datetime.now(UTC))
    accept(deleted, new_items(deleted, 1)[0], datetime.now(UTC))

    # A real-time write stamped in the second the dbt step starts, or later, wins over the batch row:
    # it may come after dbt read the log. The user's logical clock ran a second ahead for `late`.
    time.sleep(3)
    etl()  # the nightly run's dbt step reads the log
    accept(pushed, after, datetime.now(UTC))  # between the dbt step and the materialize step
    forget_user(table, locks, deleted, log.forget_user(deleted).deleted_at)  # so is this DELETE
    materialize()

    assert online_history(settings, late)[-2:] == [(first, "click"), (second, "click")]  # event-time order
    assert online_history(settings, failed)[-1] == (lost, "view")  # repaired from the log
    window = settings.max_recent_items
    assert online_history(settings, pushed) == [*mart_history(settings, pushed), (after, "click")][-window:]
    assert online_history(settings, deleted) == []  # the DELETE stays
    for user in set(features.index) - {pushed, deleted}:  # everyone else: what the warehouse says
        assert online_history(settings, user) == mart_history(settings, user), user


# -- 5. one nightly run per data directory ------------------------------------------------------


def test_two_nightly_runs_on_one_data_directory_never_overlap(data_dir, monkeypatch):
    started, release = threading.Event(), threading.Event()
    ran = []

    def slow_etl():  # the first run's dbt step takes a while
        ran.append("etl")
        if len(ran) == 1:
            started.set()
            assert release.wait(60)
        return {"events_in": 0}

    monkeypatch.setattr(flows.nightly, "forget_in_landing", lambda: {}, raising=False)
    monkeypatch.setattr(flows.nightly, "etl", slow_etl)
    monkeypatch.setattr(flows.nightly, "materialize", lambda: {})
    monkeypatch.setattr(flows.nightly, "train", lambda **_: "trained")
    first = {}
    runner = threading.Thread(target=lambda: first.update(flows.nightly.nightly(preset_name="tiny")))
    runner.start()
    try:
        assert started.wait(60)
        second = flows.nightly.nightly(preset_name="tiny")  # the GPU deployment, same schedule, same data
    finally:
        release.set()
        runner.join(60)
    assert set(second) == {"skipped"}
    assert f"another nightly run holds {data_dir / 'nightly.lock'} (pid" in second["skipped"]
    assert first["train"] == "trained" and ran == ["etl"]
    assert flows.nightly.nightly(preset_name="tiny")["train"] == "trained"  # the lock went with the run
