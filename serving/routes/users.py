"""Users: forgetting one. The feedback log drops the user's lines and records the deletion (the
next batch run removes the rest); the online state becomes a tombstone at once.

Both happen under the user's lock, so a push racing the DELETE either ran before it (and is wiped
with the rest) or sees the tombstone: events received before the deletion stay out, those received
after start a new history. When the online store cannot be reached, the DELETE is done all the
same once the log holds it: the online part stays pending (`serving.forgetting`), reads treat the
user as forgotten meanwhile, and the answer says `online_state_cleared: false`. A 503 means
nothing was forgotten (the user's lock stayed busy, or the log could not be written): retry."""

import logging

from fastapi import APIRouter, Depends, HTTPException

from rtrec.online_state import LockTimeout
from serving.deps import FeedbackDep, LocksDep, UserStateDep, require_token
from serving.forgetting import forget
from serving.schemas import Forgotten, UserIdPath

log = logging.getLogger("rtrec.serving")
router = APIRouter()
RETRY_AFTER_SECONDS = 5


@router.delete(
    "/v1/users/{user_id}",
    response_model=Forgotten,
    dependencies=[Depends(require_token)],
    responses={
        503: {
            "description": "The user's lock stayed busy or the log could not record the deletion; "
            "nothing was forgotten, retry."
        }
    },
)
def delete_user(user_id: UserIdPath, feedback: FeedbackDep, user_state: UserStateDep, locks: LocksDep) -> Forgotten:
    try:
        forgotten, cleared = forget(user_state, locks, feedback, user_id)
    except LockTimeout:
        raise HTTPException(
            503,
            "the user's events are being written; nothing was forgotten, retry the DELETE",
            headers={"Retry-After": "1"},
        ) from None
    except Exception as err:
        log.exception("DELETE: the feedback log could not record the deletion")
        raise HTTPException(
            503,
            f"the deletion could not be recorded ({type(err).__name__}); nothing was forgotten, retry the DELETE",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    return Forgotten(user_id=user_id, feedback_events_removed=forgotten.removed, online_state_cleared=cleared)
