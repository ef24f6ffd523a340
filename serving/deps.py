"""What routes depend on, as `Annotated` aliases: the app's settings and long-lived objects, and
the bearer-token check of the write endpoints. Each is read from the requesting app's `app.state`."""

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rtrec.online_state import UserLocks, UserStateTable
from rtrec.settings import Settings
from serving.catalog import Catalog
from serving.experiments import Experiments
from serving.feedback_log import FeedbackLog
from serving.impressions import ImpressionLog
from serving.model_holder import ModelHolder
from serving.online_ctr import SlidingWindow

BEARER = HTTPBearer(auto_error=False)


async def app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def models(request: Request) -> ModelHolder:
    return request.app.state.models


async def catalog(request: Request) -> Catalog:
    return request.app.state.catalog


async def feedback(request: Request) -> FeedbackLog:
    return request.app.state.feedback


async def user_state(request: Request) -> UserStateTable:
    return request.app.state.user_state


async def locks(request: Request) -> UserLocks:
    return request.app.state.locks


async def experiments(request: Request) -> Experiments:
    return request.app.state.experiments


async def impressions(request: Request) -> ImpressionLog:
    return request.app.state.impressions


async def ctr_window(request: Request) -> SlidingWindow:
    return request.app.state.ctr_window


SettingsDep = Annotated[Settings, Depends(app_settings)]
ModelsDep = Annotated[ModelHolder, Depends(models)]
CatalogDep = Annotated[Catalog, Depends(catalog)]
FeedbackDep = Annotated[FeedbackLog, Depends(feedback)]
UserStateDep = Annotated[UserStateTable, Depends(user_state)]
LocksDep = Annotated[UserLocks, Depends(locks)]
ExperimentsDep = Annotated[Experiments, Depends(experiments)]
ImpressionsDep = Annotated[ImpressionLog, Depends(impressions)]
CtrWindowDep = Annotated[SlidingWindow, Depends(ctr_window)]


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
