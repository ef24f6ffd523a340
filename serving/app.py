"""The FastAPI app: real-time recommendations and the feedback write path."""

import logging
import os
import threading
import time
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import pyarrow.parquet as pq
import torch
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from model.inference import Recommender
from model.registry import Registry
from rtrec.feature_store import open_store
from rtrec.landing import ensure_landing_zone
from rtrec.online_state import UserLocks, UserStateTable, forget_user, push_event, read_online
from rtrec.settings import Settings, get_settings
from serving import metrics
from serving.feedback_log import FeedbackLog
from serving.schemas import Accepted, Event, EventBatch, Forgotten, Recommendations, ScoredItem

log = logging.getLogger("rtrec.serving")
MAX_BODY_BYTES = 1_000_000
MAX_BATCH = 500
RELOAD_SECONDS = 1.0
BEARER = HTTPBearer(auto_error=False)


class ModelHolder:
    """The current model, swapped for a new one when the registry's pointer changes.

    Requests take the reference they find; a switch replaces it in one assignment, so a request
    runs entirely on the old model or entirely on the new one."""

    def __init__(self, registry: Registry) -> None:
        self.registry, self.recommender, self.version = registry, None, None
        self.refresh()

    def refresh(self) -> None:
        current = self.registry.current()
        if current and current != self.version:
            self.recommender = Recommender.load(self.registry.path(current))
            metrics.serving_version(current, self.version)
            self.version = current
            log.info("serving model %s", current)

    def watch(self, stop: threading.Event) -> None:
        while not stop.wait(RELOAD_SECONDS):
            try:
                self.refresh()
            except Exception:  # a half-written registry must not kill the watcher; retry next tick
                log.exception("model reload failed; still serving %s", self.version)


class Catalog:
    """Popular items for cold start and fallback, and the sellable item ids, from item_features."""

    def __init__(self, marts_dir: Path) -> None:
        path = marts_dir / "item_features.parquet"
        self.popular: list[tuple[str, float]] = []
        self.sellable: set[str] = set()
        if path.exists():
            frame = pq.read_table(path, columns=["item_id", "popularity_7d", "popularity_all"]).to_pandas()
            frame = frame.sort_values(["popularity_7d", "popularity_all", "item_id"], ascending=[False, False, True])
            self.sellable = set(frame["item_id"])
            top = frame.head(200)
            self.popular = list(zip(top["item_id"], (top["popularity_7d"] + top["popularity_all"] / 1e6).astype(float)))

    def top(self, k: int, exclude: set[str]) -> list[tuple[str, float]]:
        return [(i, s) for i, s in self.popular if i not in exclude][:k]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # one intra-op thread per worker: requests are small, and workers already use every core
        torch.set_num_threads(1)
        ensure_landing_zone(settings.landing_dir)
        app.state.store = open_store(settings)
        app.state.user_state = UserStateTable(app.state.store)
        redis_url = settings.redis_url if settings.online_store == "redis" else None
        app.state.locks = UserLocks(settings.feast_dir / "locks", redis_url, settings.redis_timeout_seconds)
        app.state.feedback = FeedbackLog(settings.feedback_dir)
        app.state.catalog = Catalog(settings.marts_dir)
        app.state.models = ModelHolder(Registry(settings.models_dir))
        stop = threading.Event()
        watcher = threading.Thread(target=app.state.models.watch, args=(stop,), daemon=True)
        watcher.start()
        yield
        stop.set()

    app = FastAPI(
        title="rtrec",
        version="0.1.0",
        lifespan=lifespan,
        description="Real-time personalized recommendations and the feedback write path.",
    )

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        if settings.api_token is None:
            return
        if credentials is None or credentials.credentials != settings.api_token.get_secret_value():
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def observe(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        metrics.REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        metrics.LATENCY.labels(request.method, endpoint).observe(time.perf_counter() - started)
        return response

    @app.get("/v1/recommendations/{user_id}", response_model=Recommendations)
    def recommendations(
        request: Request,
        user_id: Annotated[str, PathParam(min_length=1, max_length=128)],
        k: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> Recommendations:
        request_id = str(uuid.uuid4())
        state = request.app.state
        recommender, version = state.models.recommender, state.models.version
        try:
            user, _ = read_online(state.store, user_id)
        except Exception as err:  # the store is down: degrade to the popular list, never fail
            metrics.FALLBACKS.inc()
            log.warning("request %s: online store unreadable (%s); popular fallback", request_id, err)
            items = state.catalog.top(k, set())
            return Recommendations(
                user_id=user_id,
                items=[ScoredItem(item_id=i, score=s) for i, s in items],
                model_version=version,
                request_id=request_id,
                fallback=True,
            )
        have = set(user.recent_items)
        scored: list[tuple[str, float]] = []
        if recommender is not None and user.known:
            idle = (datetime.now(UTC) - user.last_event_ts).total_seconds() if user.last_event_ts else None
            candidates = recommender.recommend(user.history(), k=k + len(have) + 20, exclude=have, idle_seconds=idle)
            scored = [(i, s) for i, s in candidates if not state.catalog.sellable or i in state.catalog.sellable][:k]
        cold = not scored
        if cold:
            metrics.COLD_STARTS.inc()
            scored = state.catalog.top(k, have)
        log.info(
            "request %s: user %s, %d items, model %s, cold_start=%s", request_id, user_id, len(scored), version, cold
        )
        return Recommendations(
            user_id=user_id,
            items=[ScoredItem(item_id=i, score=s) for i, s in scored],
            model_version=version,
            request_id=request_id,
            cold_start=cold,
        )

    @app.post("/v1/events", status_code=202, response_model=Accepted, dependencies=[Depends(require_token)])
    def post_events(request: Request, body: Annotated[Event | EventBatch, Body()]) -> Accepted:
        events = body.events if isinstance(body, EventBatch) else [body]
        if len(events) > MAX_BATCH:
            metrics.EVENTS.labels("rejected").inc(len(events))
            raise HTTPException(413, f"events: at most {MAX_BATCH} events per request, got {len(events)}")
        state = request.app.state
        fresh = state.feedback.append([e.to_log() for e in events])  # durable before we answer
        metrics.EVENTS.labels("accepted").inc(len(fresh))
        metrics.EVENTS.labels("duplicate").inc(len(events) - len(fresh))
        fresh_ids = {e["event_id"] for e in fresh}
        for event in events:
            if event.event_id not in fresh_ids:
                continue
            try:
                push_event(
                    state.user_state,
                    state.locks,
                    event.user_id,
                    event.item_id,
                    event.event_type,
                    event.ts,
                    settings.max_recent_items,
                )
            except Exception:  # durable in the log already; the next batch run brings it online
                metrics.ONLINE_WRITE_FAILURES.inc()
                log.exception("online update failed for event %s", event.event_id)
        return Accepted(accepted=len(fresh), received=len(events))

    @app.delete("/v1/users/{user_id}", response_model=Forgotten, dependencies=[Depends(require_token)])
    def delete_user(request: Request, user_id: Annotated[str, PathParam(min_length=1, max_length=128)]) -> Forgotten:
        state = request.app.state
        removed = state.feedback.forget_user(user_id)
        forget_user(state.user_state, state.locks, user_id)
        return Forgotten(user_id=user_id, feedback_events_removed=removed)

    @app.get("/healthz")
    def healthz(request: Request) -> dict:
        return {"status": "ok", "model_version": request.app.state.models.version}

    @app.get("/metrics")
    def prometheus() -> Response:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
