"""Feedback events: durable in the feedback log before the 202, then applied to the user's online state.

The body is read through the body limit (a chunked body is cut off at 1 MB too), and a batch over
`MAX_BATCH` events is refused whole before any event is validated. When the log cannot make the
events durable the answer is a 503 and nothing of the request was kept: a retry is safe.
"""

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Request

from model.experiments import served_by
from model.registry import Registry
from serving import metrics
from serving.deps import require_token
from serving.feedback_log import NotDurable
from serving.middleware import BodyLimitRoute
from serving.online_ctr import SlidingWindow
from serving.schemas import Accepted, Event, EventBatch

log = logging.getLogger("rtrec.serving")
router = APIRouter(route_class=BodyLimitRoute)
MAX_BATCH = 500


def too_many(count: int) -> HTTPException:
    metrics.EVENTS.labels("rejected").inc(count)
    return HTTPException(413, f"events: at most {MAX_BATCH} events per request, got {count}")


async def cap_batch(request: Request) -> None:
    """Runs before the body is validated (FastAPI solves dependencies first): an oversized batch
    costs one length check, not a validation error per event."""
    try:
        body = await request.json()  # parsed once already: the request caches it
    except ValueError:  # not JSON: validation says so
        return
    batch = body.get("events") if isinstance(body, dict) else None
    if isinstance(batch, list) and len(batch) > MAX_BATCH:
        raise too_many(len(batch))


def attribute(event: Event, registry: Registry, ctr_window: SlidingWindow) -> None:
    """Count an event that answers a list this API served under that list's version and arm."""
    served = served_by(event.request_id, registry)
    if served is None:
        return
    version, arm = served
    metrics.ATTRIBUTED_EVENTS.labels(version, arm, event.event_type).inc()
    if event.event_type == "click":
        ctr_window.click(version, arm)


@router.post(
    "/v1/events",
    status_code=202,
    response_model=Accepted,
    dependencies=[Depends(require_token), Depends(cap_batch)],
    responses={
        413: {"description": f"Body over 1 MB, or more than {MAX_BATCH} events."},
        503: {"description": "The events could not be made durable; nothing was accepted, retry."},
    },
)
async def post_events(body: Annotated[Event | EventBatch, Body()], request: Request) -> Accepted:
    state = request.app.state  # serving/app.py's lifespan put the long-lived objects there
    events = body.events if isinstance(body, EventBatch) else [body]
    if len(events) > MAX_BATCH:
        raise too_many(len(events))
    try:
        fresh = await state.writer.write([e.to_log() for e in events])  # durable, then pushed online
    except NotDurable as err:
        metrics.EVENTS.labels("not_durable").inc(len(events))
        raise HTTPException(
            503, f"events not accepted: {err}; nothing was stored, retry the request", headers={"Retry-After": "1"}
        ) from err
    metrics.EVENTS.labels("accepted").inc(len(fresh))
    metrics.EVENTS.labels("duplicate").inc(len(events) - len(fresh))
    first = {}
    for event in events:
        first.setdefault(event.event_id, event)
    for record in fresh:
        event = first[record["event_id"]]
        try:
            attribute(event, state.models.registry, state.ctr_window)
        except Exception:  # counting must never fail an accepted event
            log.exception("could not attribute event %s", event.event_id)
    return Accepted(accepted=len(fresh), received=len(events))
