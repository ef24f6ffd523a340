"""Users: forgetting one. The feedback log drops the user's lines and records the deletion (the
next batch run removes the rest); the online state is replaced with an empty one at once."""

from fastapi import APIRouter, Depends

from rtrec.online_state import forget_user
from serving.deps import FeedbackDep, LocksDep, UserStateDep, require_token
from serving.schemas import Forgotten, UserIdPath

router = APIRouter()


@router.delete("/v1/users/{user_id}", response_model=Forgotten, dependencies=[Depends(require_token)])
def delete_user(user_id: UserIdPath, feedback: FeedbackDep, user_state: UserStateDep, locks: LocksDep) -> Forgotten:
    removed = feedback.forget_user(user_id)
    forget_user(user_state, locks, user_id)
    return Forgotten(user_id=user_id, feedback_events_removed=removed)
