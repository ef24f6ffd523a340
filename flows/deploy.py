"""Registering the nightly flow's deployments, as prefect.yaml declares them.

prefect.yaml is the one declaration (name, entrypoint, work pool, parameters, tags, schedule), so
`prefect deploy --all` and `rtrec deploy` register the same deployments. `rtrec deploy` also creates
the work pools, and takes the schedule from RTREC_SCHEDULE_CRON / RTREC_SCHEDULE_TIMEZONE when set."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron

from flows.nightly import nightly
from flows.paths import REPO_ROOT
from rtrec.settings import Settings

PREFECT_YAML = REPO_ROOT / "prefect.yaml"


@dataclass(frozen=True)
class Registered:
    deployment_id: str
    cron: str
    timezone: str


def declared_deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def ensure_work_pool(name: str) -> None:
    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def deploy(settings: Settings, gpu: bool = True) -> dict[str, Registered]:
    """Create or update the declared deployments (the GPU one only when `gpu`); returns them by name."""
    registered = {}
    for spec in declared_deployments():
        if spec["parameters"].get("device") == "cuda" and not gpu:
            continue
        pool = spec["work_pool"]["name"]
        ensure_work_pool(pool)
        declared = spec["schedules"][0]
        cron = settings.schedule_cron or declared["cron"]
        timezone = settings.schedule_timezone or declared["timezone"]
        flow = nightly.from_source(source=str(REPO_ROOT), entrypoint=spec["entrypoint"])
        deployment_id = flow.deploy(
            name=spec["name"],
            work_pool_name=pool,
            build=False,
            push=False,
            print_next_steps=False,
            schedule=Cron(cron, timezone=timezone),
            parameters=spec["parameters"],
            tags=spec.get("tags", []),
            job_variables={"env": {"RTREC_DATA_DIR": str(settings.data_dir.resolve())}},
        )
        registered[spec["name"]] = Registered(str(deployment_id), cron, timezone)
    return registered
