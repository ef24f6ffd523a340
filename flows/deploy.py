"""Registering the nightly flow as Prefect deployments: one on a CPU work pool, one on a GPU pool."""

from __future__ import annotations

from contextlib import suppress

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron

from flows.nightly import nightly
from flows.paths import REPO_ROOT
from rtrec.settings import Settings

DEPLOYMENTS = {
    # name: (work pool, parameters)
    "nightly-cpu": ("rtrec-cpu", {"preset_name": "cpu", "device": "cpu"}),
    "nightly-gpu": ("rtrec-gpu", {"preset_name": "gpu-large", "device": "cuda"}),
}


def ensure_work_pool(name: str) -> None:
    with get_client(sync_client=True) as client, suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def deploy(settings: Settings, gpu: bool = True) -> dict[str, str]:
    """Create or update the deployments with the schedule from the settings; returns name -> id."""
    ids = {}
    for name, (pool, parameters) in DEPLOYMENTS.items():
        if name.endswith("gpu") and not gpu:
            continue
        ensure_work_pool(pool)
        flow = nightly.from_source(source=str(REPO_ROOT), entrypoint="flows/nightly.py:nightly")
        ids[name] = str(
            flow.deploy(
                name=name,
                work_pool_name=pool,
                build=False,
                push=False,
                print_next_steps=False,
                schedule=Cron(settings.schedule_cron, timezone=settings.schedule_timezone),
                parameters=parameters,
                tags=["rtrec"],
                job_variables={"env": {"RTREC_DATA_DIR": str(settings.data_dir.resolve())}},
            )
        )
    return ids
