"""Health and Prometheus metrics."""

import os

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from serving.deps import ModelsDep

router = APIRouter()


@router.get("/healthz")
def healthz(models: ModelsDep) -> dict:
    return {"status": "ok", "model_version": models.version}


@router.get("/metrics")
def prometheus() -> Response:
    # `rtrec serve --workers N` sets the directory where the worker processes' counters are summed
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
