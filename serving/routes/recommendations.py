"""Recommendations: the user's online state -> the current model -> top-k.

Users the model knows nothing about get the popular list (`cold_start`); when the online store
cannot be read, or the model fails, everyone does (`fallback`): neither fails a recommendation
request. Log lines name the request id, never the user.
"""

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from serving import metrics
from serving.deps import CatalogDep, FeedbackDep, ModelsDep, SettingsDep, UserStateDep
from serving.forgetting import read_user
from serving.schemas import Recommendations, ScoredItem, UserIdPath

log = logging.getLogger("rtrec.serving")
router = APIRouter()


@router.get("/v1/recommendations/{user_id}", response_model=Recommendations)
def recommendations(
    user_id: UserIdPath,
    models: ModelsDep,
    catalog: CatalogDep,
    user_state: UserStateDep,
    feedback: FeedbackDep,
    settings: SettingsDep,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Recommendations:
    request_id = str(uuid.uuid4())
    recommender, shelf = models.recommender, catalog.current  # one model and one catalog per request
    version = recommender.version if recommender is not None else None

    def answer(scored: list[tuple[str, float]], **flags: bool) -> Recommendations:
        return Recommendations(
            user_id=user_id,
            items=[ScoredItem(item_id=i, score=s) for i, s in scored],
            model_version=version,
            request_id=request_id,
            **flags,
        )

    try:
        user = read_user(user_state, feedback, user_id)
    except Exception as err:  # the store is down: degrade to the popular list, never fail
        metrics.FALLBACKS.inc()
        log.warning("request %s: online store unreadable (%s); popular fallback", request_id, err)
        return answer(shelf.top(k, set()), fallback=True)
    have = user.excluded(settings.repeatable_event_types)  # what the user has seen, by the deployment's policy
    scored: list[tuple[str, float]] = []
    if recommender is not None and user.known:
        idle = (datetime.now(UTC) - user.last_event_ts).total_seconds() if user.last_event_ts else None
        try:
            candidates = recommender.recommend(user.history(), k=k + 20, exclude=have, idle_seconds=idle)
        except Exception:
            metrics.MODEL_ERRORS.inc()
            log.exception("request %s: model %s failed; popular fallback", request_id, version)
            return answer(shelf.top(k, have), fallback=True)
        scored = [(i, s) for i, s in candidates if not shelf.sellable or i in shelf.sellable][:k]
    cold = not scored
    if cold:
        metrics.COLD_STARTS.inc()
        scored = shelf.top(k, have)
    log.info("request %s: %d items, model %s, cold_start=%s", request_id, len(scored), version, cold)
    return answer(scored, cold_start=cold)
