"""Recommendations: the user's online state -> the current model -> top-k.

Users the model knows nothing about get the popular list (`cold_start`); when the online store
cannot be read, everyone does (`fallback`): a store outage never fails a recommendation request.
"""

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from serving import metrics
from serving.deps import CatalogDep, ModelsDep, UserStateDep
from serving.schemas import Recommendations, ScoredItem, UserIdPath

log = logging.getLogger("rtrec.serving")
router = APIRouter()


@router.get("/v1/recommendations/{user_id}", response_model=Recommendations)
def recommendations(
    user_id: UserIdPath,
    models: ModelsDep,
    catalog: CatalogDep,
    user_state: UserStateDep,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Recommendations:
    request_id = str(uuid.uuid4())
    recommender, version = models.recommender, models.version
    try:
        user = user_state.read(user_id)
    except Exception as err:  # the store is down: degrade to the popular list, never fail
        metrics.FALLBACKS.inc()
        log.warning("request %s: online store unreadable (%s); popular fallback", request_id, err)
        items = catalog.top(k, set())
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
        scored = [(i, s) for i, s in candidates if not catalog.sellable or i in catalog.sellable][:k]
    cold = not scored
    if cold:
        metrics.COLD_STARTS.inc()
        scored = catalog.top(k, have)
    log.info("request %s: user %s, %d items, model %s, cold_start=%s", request_id, user_id, len(scored), version, cold)
    return Recommendations(
        user_id=user_id,
        items=[ScoredItem(item_id=i, score=s) for i, s in scored],
        model_version=version,
        request_id=request_id,
        cold_start=cold,
    )
