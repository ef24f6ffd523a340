"""`dbt build` as a Prefect task through prefect-dbt: every dbt node shows up as a task run."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.runtime import flow_run
from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings

from flows.paths import DBT_PROJECT_DIR, dbt_env
from rtrec.landing import ensure_landing_zone
from rtrec.settings import Settings, get_settings

FAILED = {"fail", "error", "runtime error"}


class DbtBuildFailed(RuntimeError):
    """dbt build failed; the message names each failing node and, for tests, its failing row count."""


def describe_failures(results) -> list[str]:
    lines = []
    for result in results:
        if str(result.status).lower() not in FAILED:
            continue
        node = result.node
        rows = f" ({result.failures} failing rows)" if getattr(result, "failures", None) else ""
        message = (result.message or "").strip().splitlines()
        lines.append(f"{node.resource_type} {node.name} {result.status}{rows}: {message[0] if message else ''}")
    return lines


def dbt_vars(settings: Settings, run_started_at: datetime | None) -> list[str]:
    """dbt's `--vars`: the lengths of the online user state's lists from the settings, and the
    run's wall-clock start when one is given (a replay, or a clock set back)."""
    values: dict[str, object] = {"recent_items": settings.max_recent_items, "seen_items": settings.max_seen_items}
    if run_started_at is not None:
        utc = run_started_at.replace(tzinfo=UTC) if run_started_at.tzinfo is None else run_started_at.astimezone(UTC)
        values["run_started_at"] = utc.isoformat()
    return ["--vars", json.dumps(values)]


@task(name="dbt-build")
def dbt_build(full_refresh: bool = False, run_started_at: datetime | None = None) -> dict[str, int]:
    """Run `dbt build`; on a retried flow run, `dbt retry` re-runs only what failed or was skipped
    (with the first attempt's flags and vars).

    Returns the count of nodes by status; raises DbtBuildFailed naming every failed node."""
    settings = get_settings()
    ensure_landing_zone(settings.landing_dir)
    settings.marts_dir.mkdir(parents=True, exist_ok=True)
    # dbt's profile and sources read the data location from the environment.
    os.environ.update(dbt_env(settings.data_dir))
    retrying = (flow_run.run_count or 1) > 1 and not full_refresh
    args = (
        ["retry"]
        if retrying
        else ["build", *(["--full-refresh"] if full_refresh else []), *dbt_vars(settings, run_started_at)]
    )
    runner = PrefectDbtRunner(
        settings=PrefectDbtSettings(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR),
        raise_on_failure=False,
    )
    result = runner.invoke(args)
    results = result.result.results if result.result is not None and hasattr(result.result, "results") else []
    failures = describe_failures(results)
    if failures or not result.success:
        raise DbtBuildFailed(f"dbt {' '.join(args)} failed:\n" + "\n".join(failures or [str(result.exception)]))
    counts: dict[str, int] = {}
    for node in results:
        counts[str(node.status)] = counts.get(str(node.status), 0) + 1
    get_run_logger().info("dbt %s: %s", " ".join(args), counts)
    return counts
