"""A user's recent history as the online store holds it: the state the next recommendation reads."""

import logging

from fastapi import APIRouter, HTTPException

from serving.deps import FeedbackDep, UserStateDep
from serving.forgetting import read_user
from serving.schemas import History, UserIdPath

log = logging.getLogger("rtrec.serving")
router = APIRouter()


@router.get(
    "/v1/users/{user_id}/history",
    response_model=History,
    responses={503: {"description": "The online store cannot be read; the detail says why."}},
)
def history(user_id: UserIdPath, user_state: UserStateDep, feedback: FeedbackDep) -> History:
    """Recent items, their event types and the last event time; an unknown user has an empty history."""
    try:
        state = read_user(user_state, feedback, user_id)
    except Exception as err:  # a store outage is the server's problem, not the client's: say so, fast
        log.warning("history request: online store unreadable (%s)", err)  # log lines never name the user
        raise HTTPException(503, f"online store unavailable ({type(err).__name__}); try again later") from err
    return History(
        user_id=user_id,
        recent_items=state.recent_items,
        recent_event_types=state.recent_event_types,
        last_event_ts=state.last_event_ts,
    )
