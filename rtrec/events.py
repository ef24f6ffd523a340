"""The event vocabulary: the one home of the event types and their strength order.

dbt reads the same facts from the `event_strength` var in dbt_project.yml; a test checks that the
two agree."""

from __future__ import annotations

from typing import Literal

# The contract's order (DESIGN.md). A model's event-type embedding row is the position here plus one
# (0 is padding), so appending a type is safe and reordering is not.
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")

EventType = Literal[EVENT_TYPES]

# How far down the funnel an event goes. Consecutive events of a user on one item collapse into one
# interaction that carries the strongest type (dbt's int_interactions, the online user state).
STRENGTH = {"view": 0, "rating": 1, "click": 2, "add_to_cart": 3, "purchase": 4}

EVENT_INDEX = {event_type: position + 1 for position, event_type in enumerate(EVENT_TYPES)}
