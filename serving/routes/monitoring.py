"""Health and Prometheus metrics.

`/healthz` answers 200 whenever the process serves: `status` is "ok", or "degraded" when answers
are popular lists only (no model could be loaded: `model_error` says why) or not from the model
the registry names, or when this worker fails online-store calls fast (`online_store` is its
circuit breaker's state: "closed", "open", or "half-open" when the next call is a trial)."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from serving.deps import CatalogDep, ModelsDep, SettingsDep, UserStateDep
from serving.metrics import workers_dir
from serving.online_ctr import ctr_family

router = APIRouter()


@router.get("/healthz")
async def healthz(models: ModelsDep, catalog: CatalogDep, user_state: UserStateDep) -> dict:
    store = user_state.breaker.state
    degraded = models.degraded or store == "open"
    return {
        "status": "degraded" if degraded else "ok",
        "model_version": models.version,
        "model_form": recommender.form if (recommender := models.recommender) else None,
        "model_error": models.error,
        "online_store": store,
        "catalog_items": len(catalog.current.sellable),
        "catalog_error": catalog.error,
        "experiment": running.experiment.id if (running := models.running) else None,
        "experiment_error": models.experiment_error,
    }


class _Collected:
    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self) -> list:
        return self.families


@router.get("/metrics")
def prometheus(settings: SettingsDep) -> Response:
    directory = workers_dir(settings.prometheus_dir)  # set by `rtrec serve --workers N`: sum the workers
    if directory is not None:
        families = list(multiprocess.MultiProcessCollector(None, str(directory)).collect())
    else:
        families = list(REGISTRY.collect())
    out = CollectorRegistry(auto_describe=False)
    out.register(_Collected([*families, ctr_family(families)]))
    return Response(generate_latest(out), media_type=CONTENT_TYPE_LATEST)
