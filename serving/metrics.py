"""Prometheus metrics of the API (multiprocess-safe when PROMETHEUS_MULTIPROC_DIR is set)."""

from prometheus_client import Counter, Gauge, Histogram

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


def serving_version(new: str, old: str | None) -> None:
    if old:
        MODEL_VERSION.labels(old).set(0)
    MODEL_VERSION.labels(new).set(1)
