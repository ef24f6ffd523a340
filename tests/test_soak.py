"""bench/soak.py, short: mixed GET/POST/DELETE traffic against 2 API workers on Redis while a nightly
run executes, a worker is SIGKILLed and redis-server stops and starts again; then the next nightly
run, and every promise checked against what the clients were told."""

import argparse

from rich.console import Console

from bench.soak import soak
from rtrec.settings import get_settings


def test_a_short_soak_with_faults_breaks_no_promise(tmp_path, monkeypatch):
    for key in ("RTREC_DATA_DIR", "RTREC_ONLINE_STORE", "RTREC_REDIS_URL", "RTREC_API_TOKEN"):
        monkeypatch.setenv(key, "")  # the soak sets them for itself; the test's environment comes back after
    args = argparse.Namespace(seconds=30, rate=40, clients=4, users=100, events=5_000)
    try:
        report = soak(args, tmp_path, Console(quiet=True))
    finally:
        get_settings.cache_clear()
    assert report["requests answered"] + report["transport errors"] == 30 * 40
    assert report["events acknowledged"] > 100 and report["users deleted (and silent since)"] > 0
    assert report["5xx"] == 0
    assert report["acknowledged events missing from the warehouse"] == 0
    assert report["forgotten events still in the warehouse"] == 0
    assert report["events counted twice"] == 0
    assert report["deleted users found by privacy-audit"] == 0
    assert report["users whose online state differs from the warehouse"] == 0
