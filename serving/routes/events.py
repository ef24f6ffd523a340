"""Feedback events: durable in the feedback log before the 202, then applied to the user's online state."""

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException

from rtrec.online_state import push_event
from serving import metrics
from serving.deps import FeedbackDep, LocksDep, SettingsDep, UserStateDep, require_token
from serving.schemas import Accepted, Event, EventBatch

log = logging.getLogger("rtrec.serving")
router = APIRouter()
MAX_BATCH = 500


@router.post("/v1/events", status_code=202, response_model=Accepted, dependencies=[Depends(require_token)])
def post_events(
    body: Annotated[Event | EventBatch, Body()],
    settings: SettingsDep,
    feedback: FeedbackDep,
    user_state: UserStateDep,
    locks: LocksDep,
) -> Accepted:
    events = body.events if isinstance(body, EventBatch) else [body]
    if len(events) > MAX_BATCH:
        metrics.EVENTS.labels("rejected").inc(len(events))
        raise HTTPException(413, f"events: at most {MAX_BATCH} events per request, got {len(events)}")
    fresh = feedback.append([e.to_log() for e in events])  # durable before we answer
    metrics.EVENTS.labels("accepted").inc(len(fresh))
    metrics.EVENTS.labels("duplicate").inc(len(events) - len(fresh))
    fresh_ids = {e["event_id"] for e in fresh}
    for event in events:
        if event.event_id not in fresh_ids:
            continue
        try:
            push_event(
                user_state, locks, event.user_id, event.item_id, event.event_type, event.ts, settings.max_recent_items
            )
        except Exception:  # durable in the log already; the next batch run brings it online
            metrics.ONLINE_WRITE_FAILURES.inc()
            log.exception("online update failed for event %s", event.event_id)
    return Accepted(accepted=len(fresh), received=len(events))
