"""Prometheus metrics of the API (summed over the workers of `rtrec serve --workers N`).

No label ever holds a user id: endpoints are route templates, and the rest are fixed vocabularies."""

import os
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, multiprocess

REQUESTS = Counter("rtrec_http_requests_total", "HTTP requests.", ["method", "endpoint", "status"])
LATENCY = Histogram(
    "rtrec_http_request_seconds",
    "HTTP request latency.",
    ["method", "endpoint"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
EVENTS = Counter("rtrec_events_total", "Events received, by outcome.", ["outcome"])
FALLBACKS = Counter(
    "rtrec_fallbacks_total", "Recommendations answered with the popular list because the online store failed."
)
COLD_STARTS = Counter("rtrec_cold_starts_total", "Recommendations for users the model knows nothing about.")
ONLINE_WRITE_FAILURES = Counter("rtrec_online_write_failures_total", "Accepted events whose online update failed.")
MODEL_VERSION = Gauge(
    "rtrec_model_version_info", "1 for the model version being served.", ["version"], multiprocess_mode="livemax"
)
MODEL_LOAD_FAILURES = Counter(
    "rtrec_model_load_failures_total", "Model versions the registry named that could not be loaded (not served)."
)
MODEL_ERRORS = Counter(
    "rtrec_model_errors_total", "Recommendations answered with the popular list because the model failed."
)
CATALOG_LOAD_FAILURES = Counter(
    "rtrec_catalog_load_failures_total", "Item marts that could not be read (the previous catalog stays)."
)
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
ONLINE_STORE_BREAKER = Gauge(
    "rtrec_online_store_breaker_state",
    "Online-store circuit breaker of a worker: 0 closed, 1 half-open (one trial call), 2 open (calls fail fast).",
    multiprocess_mode="livemax",
)
ONLINE_STORE_BREAKER_CHANGES = Counter(
    "rtrec_online_store_breaker_changes_total", "Online-store circuit breaker state changes, by new state.", ["state"]
)
ONLINE_STORE_REJECTED = Counter(
    "rtrec_online_store_rejected_total", "Online-store calls failed fast, without waiting, by the open breaker."
)


IMPRESSIONS = Counter(
    "rtrec_impressions_total",
    "Recommendation lists served, by the version that answered (popular: the popularity list) and experiment arm "
    "(none outside an experiment).",
    ["version", "arm"],
)
ATTRIBUTED_EVENTS = Counter(
    "rtrec_attributed_events_total",
    "Accepted events that carry the request id of a list this API served, by that list's version and arm.",
    ["version", "arm", "event_type"],
)
WINDOW_IMPRESSIONS = Gauge(
    "rtrec_window_impressions",
    "Lists served within the online CTR window (RTREC_CTR_WINDOW_SECONDS), all workers.",
    ["version", "arm"],
    multiprocess_mode="livesum",
)
WINDOW_CLICKS = Gauge(
    "rtrec_window_clicks",
    "Attributed clicks within the online CTR window, all workers.",
    ["version", "arm"],
    multiprocess_mode="livesum",
)
SHADOW_ERRORS = Counter(
    "rtrec_shadow_errors_total", "Shadow-mode treatment lists that could not be scored (the user's list was served)."
)
ONLINE_CTR = "rtrec_online_ctr"  # window clicks / window lists, computed when /metrics is scraped


def serving_version(new: str, old: str | None) -> None:
    if old:
        MODEL_VERSION.labels(old).set(0)
    MODEL_VERSION.labels(new).set(1)


def breaker_state(state: str) -> None:
    ONLINE_STORE_BREAKER.set(BREAKER_STATES[state])
    ONLINE_STORE_BREAKER_CHANGES.labels(state).inc()


def breaker_rejected() -> None:
    ONLINE_STORE_REJECTED.inc()


def workers_dir(prometheus_dir: Path) -> Path | None:
    """`prometheus_dir` when `rtrec serve` runs several workers that sum their values there, else None.

    Not merely "PROMETHEUS_MULTIPROC_DIR is set": importing Feast sets it to a temporary folder of
    its own in every process, and this worker's values would then be read from the wrong place."""
    return prometheus_dir if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == str(prometheus_dir) else None


def forget_dead_workers(directory: Path | None, own_too: bool = False) -> None:
    """Drop the live gauges of worker processes that are gone (and this one's when `own_too`, at
    shutdown): a worker killed by a signal never says so, and its last window counts and model
    version would stay in every sum. `directory`: see `workers_dir` (None: one process, nothing to do)."""
    if directory is None:
        return
    pids = {int(path.stem.rsplit("_", 1)[1]) for path in Path(directory).glob("gauge_live*_*.db")}
    for pid in pids:
        if (own_too and pid == os.getpid()) or not _alive(pid):
            multiprocess.mark_process_dead(pid, str(directory))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
