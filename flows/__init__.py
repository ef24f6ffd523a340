"""Prefect flows that run dbt, Feast materialization and training."""

import os

# Prefect's server sends an analytics heartbeat, and an offline host logs "Failed to send telemetry"
# as an ERROR every ten minutes of a run. Every process that runs rtrec's flows (the CLI, workers,
# tests) has it off unless its environment says otherwise.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
