"""Request and response bodies of the HTTP API (the event contract of DESIGN.md), and its user-id path parameter."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rtrec.events import EventType

Id = Field(min_length=1, max_length=128)
UserIdPath = Annotated[str, Path(min_length=1, max_length=128)]
FUTURE_TOLERANCE = timedelta(minutes=5)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=128)
    user_id: str = Id
    item_id: str = Id
    event_type: EventType
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC), description="ISO-8601; server time when omitted.")
    value: float | None = Field(None, allow_inf_nan=False)
    request_id: str | None = Field(None, max_length=128)

    @field_validator("ts")
    @classmethod
    def utc_and_not_in_the_future(cls, ts: datetime) -> datetime:
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        if ts > datetime.now(UTC) + FUTURE_TOLERANCE:
            raise ValueError("timestamp is in the future")
        return ts

    def to_log(self) -> dict:
        return {**self.model_dump(), "ts": self.ts.isoformat().replace("+00:00", "Z")}


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[Event] = Field(min_length=1)


class Accepted(BaseModel):
    accepted: int = Field(description="Events newly accepted (a repeated event_id counts once).")
    received: int


class ScoredItem(BaseModel):
    item_id: str
    score: float


class Recommendations(BaseModel):
    user_id: str
    items: list[ScoredItem]
    model_version: str | None = Field(
        description="The registry version that answered; `popular` for an experiment arm served by the popularity "
        "list; null when no model could be loaded."
    )
    request_id: str = Field(description="Send it with the events this list leads to (clicks, carts, purchases).")
    cold_start: bool = False
    fallback: bool = False
    arm: str | None = Field(None, description="The user's experiment arm, control or treatment; null outside one.")
    experiment_id: str | None = None


class Forgotten(BaseModel):
    user_id: str
    feedback_events_removed: int
    online_state_cleared: bool = Field(
        description="False when the online store was unreachable: the user reads as forgotten all the same, and "
        "the store is cleared once it is back."
    )


class CatalogItem(BaseModel):
    item_id: str
    title: str | None = Field(description="Catalog title; null when the catalog has none.")
    category: str | None
    price: float | None = Field(description="Catalog price; null for catalogs without prices.")


class Items(BaseModel):
    items: list[CatalogItem] = Field(description="The known items among those asked for, in the order asked.")
    missing: list[str] = Field(description="Ids asked for that the catalog does not hold.")


class History(BaseModel):
    user_id: str
    recent_items: list[str] = Field(description="The user's recent items as the online store holds them, oldest first.")
    recent_event_types: list[str] = Field(description="The strongest event type of each recent item, same order.")
    last_event_ts: datetime | None = Field(description="Time of the user's last event; null for an unknown user.")
