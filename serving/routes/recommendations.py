"""Recommendations: the user's online state -> the model that answers them -> top-k.

Users the model knows nothing about get the popular list (`cold_start`); when the online store
cannot be read, or the model fails, everyone does (`fallback`): neither fails a recommendation
request. In an experiment the user's arm picks the model, and the list served is logged for the
experiment's report. Log lines name the request id, never the user.

The handler runs on the event loop, not in the thread pool: its work is a local read and one
small model call, all CPU, and each worker has a core, so a hop to a thread and back (and the
threads taking turns on the GIL) would cost more than it lets overlap. The model calls of the
requests ready in one turn of the loop are made as one (serving/batcher.py), and so are their reads
of the online state (serving/state_reader.py). The body is encoded by
orjson from plain values; `Recommendations` still documents it (OpenAPI, the contract tests). The
long-lived objects come straight from `app.state`, not as ten dependencies: FastAPI solving them
took a sixth of a worker at saturation.
"""

import logging
from datetime import UTC, datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response

from model.experiments import NO_ARM, POPULAR, request_id
from model.inference import Recommender
from rtrec.online_state import UserState
from serving import metrics
from serving.batcher import Batcher
from serving.catalog import CatalogSnapshot
from serving.schemas import Recommendations, UserIdPath

log = logging.getLogger("rtrec.serving")
router = APIRouter()


async def ranked(
    recommender: Recommender | None, user: UserState, have: set[str], k: int, shelf: CatalogSnapshot, batcher: Batcher
) -> list:
    """The model's top-k for the user among the sellable items they have not seen; [] when the
    model knows nothing about them. Raises when the model fails. The model call is batched with
    those of the other requests of this turn of the event loop (serving/batcher.py)."""
    if recommender is None or not user.known:
        return []
    idle = (datetime.now(UTC) - user.last_event_ts).total_seconds() if user.last_event_ts else None
    seen = user.seen() if recommender.ease is not None else None  # only EASE reads the whole seen set
    candidates = await batcher.recommend(recommender, user.history(), k + 20, have, idle, seen)
    return [(i, s) for i, s in candidates if not shelf.sellable or i in shelf.sellable][:k]


@router.get("/v1/recommendations/{user_id}", response_model=Recommendations)
async def recommendations(
    user_id: UserIdPath, request: Request, k: Annotated[int, Query(ge=1, le=100)] = 10
) -> Response:
    state = request.app.state  # serving/app.py's lifespan put the long-lived objects there
    route, shelf = state.models.route(user_id), state.catalog.current  # one model and one catalog per request
    version, arm = route.version, route.arm
    rid = request_id(arm or NO_ARM, version or POPULAR)
    popular_arm = route.experiment is not None and version == POPULAR
    shadow: list | None = None

    def answer(scored: list[tuple[str, float]], **flags: bool) -> Response:
        label = (version or POPULAR, arm or NO_ARM)
        metrics.IMPRESSIONS.labels(*label).inc()
        state.ctr_window.impression(*label)
        if route.experiment is not None:
            line = {"request_id": rid, "arm": arm, "version": version, "items": [i for i, _ in scored]}
            line["user_key"] = route.experiment.user_key(user_id)
            if route.shadow_version is not None:
                line |= {"shadow_version": route.shadow_version, "shadow_items": shadow}
            try:
                state.impressions.record(state.experiments.impressions_dir(route.experiment.id), line)
            except OSError:  # the report loses a list; the user still gets theirs
                log.exception("request %s: impression not logged", rid)
        body = {
            "user_id": user_id,
            "items": [{"item_id": i, "score": s} for i, s in scored],
            "model_version": version,
            "request_id": rid,
            "cold_start": flags.get("cold_start", False),
            "fallback": flags.get("fallback", False),
            "arm": arm,
            "experiment_id": route.experiment.id if route.experiment else None,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    try:
        user = await state.reader.read(user_id)  # read with the other requests of this turn of the loop
    except Exception as err:  # the store is down: degrade to the popular list, never fail
        metrics.FALLBACKS.inc()
        log.warning("request %s: online store unreadable (%s); popular fallback", rid, err)
        return answer(shelf.top(k, set()), fallback=True)
    have = user.excluded(state.settings.repeatable_event_types)  # what the user has seen, by the deployment's policy
    if route.shadow_version is not None:  # scored for the report, never shown; its failure is not the user's
        try:
            shadow_list = await ranked(route.shadow, user, have, k, shelf, state.batcher) or shelf.top(k, have)
            shadow = [i for i, _ in shadow_list]
        except Exception as err:  # counted; one line, not a traceback per request
            metrics.SHADOW_ERRORS.inc()
            log.warning("request %s: shadow model %s failed: %r", rid, route.shadow_version, err)
    if popular_arm:
        return answer(shelf.top(k, have))
    try:
        scored = await ranked(route.recommender, user, have, k, shelf, state.batcher)
    except Exception:
        metrics.MODEL_ERRORS.inc()
        log.exception("request %s: model %s failed; popular fallback", rid, version)
        return answer(shelf.top(k, have), fallback=True)
    cold = not scored
    if cold:
        metrics.COLD_STARTS.inc()
        scored = shelf.top(k, have)
    log.info("request %s: %d items, model %s, cold_start=%s", rid, len(scored), version, cold)
    return answer(scored, cold_start=cold)
