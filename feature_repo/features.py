"""rtrec's Feast definitions. Feature names here are a public contract: applications read them.

TTLs, chosen on purpose:
- user_state: 365 days. A user's recent-items list stays meaningful for months of inactivity; past
  a year a point-in-time lookup treats the user as new.
- item_stats: 7 days. Rebuilt nightly; a week without a successful batch run means the numbers
  should no longer be trusted in training data.
- item_daily_stats: 1 day. One row per item and day: a lookup sees only that day's totals.

Online, the nightly run writes every row of user_state and item_stats stamped with its cut (the time
its dbt step started; flows/materialize.py), not with the marts' own event timestamps, and the
online stores keep the newer row: a real-time push after the cut wins, everything else is replaced
by what the warehouse says. The offline store (the marts) keeps the event-time stamps.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Float64, Int64, String, UnixTimestamp

from rtrec.settings import get_settings

MARTS = get_settings().marts_dir.resolve()

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A shopper (user_id of the event contract).",
)
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="A catalog item.")

user_features_source = FileSource(
    name="user_features_source", path=str(MARTS / "user_features.parquet"), timestamp_field="event_timestamp"
)
user_state_push = PushSource(name="user_state_push", batch_source=user_features_source)

user_state = FeatureView(
    name="user_state",
    entities=[user],
    ttl=timedelta(days=365),
    schema=[
        Field(name="recent_items", dtype=Array(String), description="Item ids of the last interactions, newest last."),
        Field(name="recent_event_types", dtype=Array(String), description="Event type of each, aligned."),
        Field(name="last_event_ts", dtype=UnixTimestamp, description="Time of the user's last event."),
        Field(name="seen_items", dtype=Array(String), description="Every item interacted with, first seen first."),
        Field(name="seen_event_types", dtype=Array(String), description="Strongest event type on each, aligned."),
    ],
    source=user_state_push,
    online=True,
    description="A user's live state: batch from dbt's user_features, real time through user_state_push.",
)

item_features_source = FileSource(
    name="item_features_source", path=str(MARTS / "item_features.parquet"), timestamp_field="event_timestamp"
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=7),
    schema=[
        Field(name="category", dtype=String),
        Field(name="price", dtype=Float64),
        Field(name="popularity_all", dtype=Int64, description="Distinct users ever."),
        Field(name="popularity_1d", dtype=Int64, description="Distinct users in the last day of data."),
        Field(name="popularity_7d", dtype=Int64),
        Field(name="popularity_30d", dtype=Int64),
        Field(name="click_rate", dtype=Float64, description="Clicks per view."),
        Field(name="add_to_cart_rate", dtype=Float64, description="Add-to-carts per click."),
        Field(name="purchase_rate", dtype=Float64, description="Purchases per view."),
    ],
    source=item_features_source,
    online=True,
    description="Item popularity, funnel conversion, category and price, from dbt's item_features.",
)

item_daily_source = FileSource(
    name="item_daily_source", path=str(MARTS / "item_daily_stats.parquet"), timestamp_field="event_timestamp"
)

item_daily_stats = FeatureView(
    name="item_daily_stats",
    entities=[item],
    ttl=timedelta(days=1),
    schema=[
        Field(name="events_day", dtype=Int64, description="Events on the item that day."),
        Field(name="events_to_date", dtype=Int64, description="Events on the item up to the end of that day."),
    ],
    source=item_daily_source,
    online=False,
    description="Daily item activity for point-in-time correct training features.",
)

recommendation_service = FeatureService(
    name="recommendation_service",
    features=[user_state, item_stats],
    description="What serving reads: the user's state and the item features used for filtering.",
)
