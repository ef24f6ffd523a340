"""Users: forgetting one. The feedback log drops the user's lines and records the deletion (the
next batch run removes the rest); the online state becomes a tombstone at once.

Both happen under the user's lock, so a push racing the DELETE either ran before it (and is wiped
with the rest) or sees the tombstone: events received before the deletion stay out, those received
after start a new history. When the online store cannot be reached, the feedback log is still
cleared and the answer is 503: the client retries, and a repeated DELETE is harmless."""

import logging
from contextlib import ExitStack

from fastapi import APIRouter, Depends, HTTPException

from rtrec.online_state import mark_forgotten, user_lock
from serving.deps import FeedbackDep, LocksDep, UserStateDep, require_token
from serving.schemas import Forgotten, UserIdPath

log = logging.getLogger("rtrec.serving")
router = APIRouter()
RETRY_AFTER_SECONDS = 5


@router.delete(
    "/v1/users/{user_id}",
    response_model=Forgotten,
    dependencies=[Depends(require_token)],
    responses={
        503: {"description": "Removed from the feedback log, but the online state could not be cleared: retry."}
    },
)
def delete_user(user_id: UserIdPath, feedback: FeedbackDep, user_state: UserStateDep, locks: LocksDep) -> Forgotten:
    with ExitStack() as held:
        try:
            held.enter_context(user_lock(user_state, locks, user_id))
        except Exception as err:  # store down or lock busy: forget in the log anyway, then ask for a retry
            log.warning("DELETE: user lock unavailable (%s); clearing the feedback log only", err)
            feedback.forget_user(user_id)
            raise _retry_later(err) from None
        forgotten = feedback.forget_user(user_id)
        try:
            mark_forgotten(user_state, user_id, forgotten.deleted_at)
        except Exception as err:
            log.warning("DELETE: online state not cleared (%s); feedback log cleared", err)
            raise _retry_later(err) from None
    return Forgotten(user_id=user_id, feedback_events_removed=forgotten.removed)


def _retry_later(err: Exception) -> HTTPException:
    return HTTPException(
        503,
        f"the user's events were removed from the feedback log, but the online state could not be cleared now "
        f"({type(err).__name__}); retry the DELETE",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
