"""What routes depend on, as `Annotated` aliases: the app's settings and long-lived objects, and
the bearer-token check of the write endpoints. Each is read from the requesting app's `app.state`."""

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rtrec.online_state import UserLocks, UserStateTable
from rtrec.settings import Settings
from serving.catalog import Catalog
from serving.feedback_log import FeedbackLog
from serving.model_holder import ModelHolder

BEARER = HTTPBearer(auto_error=False)


def _from_state(name: str):
    """A dependency that returns `app.state.<name>` of the app serving the request."""

    async def dependency(request: Request):
        return getattr(request.app.state, name)

    dependency.__name__ = name
    return dependency


SettingsDep = Annotated[Settings, Depends(_from_state("settings"))]
ModelsDep = Annotated[ModelHolder, Depends(_from_state("models"))]
CatalogDep = Annotated[Catalog, Depends(_from_state("catalog"))]
FeedbackDep = Annotated[FeedbackLog, Depends(_from_state("feedback"))]
UserStateDep = Annotated[UserStateTable, Depends(_from_state("user_state"))]
LocksDep = Annotated[UserLocks, Depends(_from_state("locks"))]


async def require_token(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> None:
    """Writes need `Authorization: Bearer <api_token>` when a token is set."""
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    # in constant time: how long a wrong token takes to refuse must not tell how much of it was right
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
