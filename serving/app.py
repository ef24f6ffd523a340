"""The FastAPI app: real-time recommendations and the feedback write path.

`create_app` is the app factory (for uvicorn through `serving.worker`, and for the CLI). The
settings live on `app.state`, not in a module global, so apps built with different settings in one
process stay apart; the lifespan puts there the long-lived objects the routes get through `deps`.
"""

import threading
from contextlib import asynccontextmanager
from functools import partial

import torch
from fastapi import FastAPI

from model.experiments import Experiments
from model.registry import Registry
from rtrec.content import CONTENT_FILE
from rtrec.feature_store import open_store
from rtrec.landing import ensure_landing_zone
from rtrec.online_state import CircuitBreaker, UserLocks, UserStateTable
from rtrec.settings import Settings, get_settings
from serving import metrics
from serving.batcher import Batcher
from serving.catalog import Catalog
from serving.event_writer import EventWriter
from serving.feedback_log import open_feedback_log
from serving.forgetting import finish_pending
from serving.heap import Heap
from serving.impressions import ImpressionLog
from serving.middleware import Observe
from serving.model_holder import ModelHolder, watch
from serving.online_ctr import SlidingWindow
from serving.routes import demo, events, history, items, monitoring, recommendations, users
from serving.state_reader import StateReader


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    # one intra-op thread per worker: requests are small, and workers already use every core
    torch.set_num_threads(1)
    ensure_landing_zone(settings.landing_dir)
    # one breaker per worker process: a store that is down costs one timeout, then calls fail fast
    breaker = CircuitBreaker(on_change=metrics.breaker_state, on_reject=metrics.breaker_rejected)
    metrics.ONLINE_STORE_BREAKER.set(metrics.BREAKER_STATES[breaker.state])
    app.state.user_state = UserStateTable(open_store(settings), breaker)
    redis_url = settings.redis_url if settings.online_store == "redis" else None
    app.state.locks = UserLocks(settings.feast_dir / "locks", redis_url, settings.redis_timeout_seconds)
    app.state.feedback = open_feedback_log(settings)
    app.state.writer = EventWriter(app.state.feedback, app.state.user_state, app.state.locks, settings)
    # serving state: neither a missing mart nor a missing or damaged model stops the worker
    app.state.catalog = Catalog(settings.marts_dir)
    registry = Registry(settings.models_dir)
    app.state.experiments = Experiments(settings.experiments_dir, registry)
    app.state.models = ModelHolder(registry, app.state.experiments, content_path=settings.marts_dir / CONTENT_FILE)
    app.state.impressions = ImpressionLog()
    app.state.batcher = Batcher()
    app.state.reader = StateReader(app.state.user_state, app.state.feedback)
    app.state.ctr_window = SlidingWindow(settings.ctr_window_seconds)
    stop = threading.Event()
    state = app.state
    state.heap = Heap(lambda: (state.models.recommender, state.models.running, state.catalog.current))
    state.heap.settle(wait=False)
    refreshers = (
        state.models.refresh,
        state.catalog.refresh,
        partial(finish_pending, state.user_state, state.locks, state.feedback),
        state.ctr_window.publish,
        partial(metrics.forget_dead_workers, metrics.workers_dir(settings.prometheus_dir)),
        state.heap.settle,  # after the swaps above
    )
    watcher = threading.Thread(target=watch, args=(stop, settings.serving_tick_seconds, *refreshers), daemon=True)
    watcher.start()
    yield
    stop.set()
    await state.writer.close()
    state.impressions.close()
    metrics.forget_dead_workers(metrics.workers_dir(settings.prometheus_dir), own_too=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="rtrec",
        version="0.1.0",
        lifespan=lifespan,
        description="Real-time personalized recommendations and the feedback write path.",
    )
    app.state.settings = settings or get_settings()
    app.add_middleware(Observe)
    for resource in (recommendations, events, users, history, items, monitoring, demo):
        app.include_router(resource.router)
    return app
