"""Data directories an API can start on, for the serving tests: landing zone, Feast repo, marts
and registry versions copied from a trained model."""

import os
import shutil
import time

import pandas as pd

from rtrec.feature_store import definitions, open_store
from rtrec.landing import ensure_landing_zone
from rtrec.settings import get_settings

ITEMS = [f"i{n}" for n in range(30)]  # the catalog of tests.model_fixtures.cyclic_data


def add_version(data, source, name, damage=False):
    """Put a copy of the version directory `source` in data's registry as `name`; `damage` truncates its weights."""
    target = data / "models" / "versions" / name
    shutil.copytree(source, target)
    if damage:
        weights = (target / "weights.pt").read_bytes()
        (target / "weights.pt").write_bytes(weights[: len(weights) // 3])
    return name


def write_marts(data, popular=ITEMS):
    """item_features with `popular` most popular first; written aside and renamed, as dbt's output lands."""
    marts = data / "marts"
    marts.mkdir(parents=True, exist_ok=True)
    n = len(popular)
    frame = pd.DataFrame(
        {"item_id": popular, "popularity_7d": range(n, 0, -1), "popularity_all": range(10 * n, 0, -10)}
    )
    frame.to_parquet(marts / "item_features.parquet.tmp")
    os.replace(marts / "item_features.parquet.tmp", marts / "item_features.parquet")


def make_site(tmp_path, monkeypatch, online_store="sqlite", redis_url=None, marts=True):
    """A data directory a server can start on: landing zone, applied Feast repo, optionally the marts."""
    data = tmp_path / "data"
    monkeypatch.setenv("RTREC_DATA_DIR", str(data))
    monkeypatch.setenv("RTREC_ONLINE_STORE", online_store)
    if redis_url:
        monkeypatch.setenv("RTREC_REDIS_URL", redis_url)
    get_settings.cache_clear()
    ensure_landing_zone(data / "landing")
    open_store(get_settings()).apply(definitions())
    (data / "models").mkdir(parents=True)
    if marts:
        write_marts(data)
    return data


def settle(check, seconds=30, times=8):
    """Call `check()` until it is true `times` times in a row (requests spread over the workers)."""
    deadline, streak, last = time.monotonic() + seconds, 0, None
    while streak < times:
        last = check()
        streak = streak + 1 if last else 0
        assert time.monotonic() < deadline, f"not settled: last answer {last!r}"
        time.sleep(0.05 if streak else 0.2)
