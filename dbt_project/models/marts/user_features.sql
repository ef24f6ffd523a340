{#- Per-user features; `recent_items` / `recent_event_types` (the last interactions, newest last,
    aligned) and `seen_items` / `seen_event_types` (every item interacted with, first seen first,
    with its strongest event type) are the online user state (Feast `user_state`). -#}

with vocabulary as (
    {{ event_vocabulary() }}
),

event_counts as (
    select
        user_id,
        count(*) as n_events,
        count(*) filter (where event_type = 'view') as n_view,
        count(*) filter (where event_type = 'click') as n_click,
        count(*) filter (where event_type = 'add_to_cart') as n_add_to_cart,
        count(*) filter (where event_type = 'purchase') as n_purchase,
        count(*) filter (where event_type = 'rating') as n_rating,
        min(ts) as first_event_ts,
        max(ts) as last_event_ts
    from {{ ref('stg_events') }}
    group by user_id
),

recent as (
    select
        user_id,
        count(*) as n_interactions,
        {{ ordered_tail_list('item_id', ['ts', 'interaction_number'], var('recent_items')) }} as recent_items,
        {{ ordered_tail_list('event_type', ['ts', 'interaction_number'], var('recent_items')) }} as recent_event_types
    from {{ ref('int_interactions') }}
    group by user_id
),

seen_pairs as (
    select
        interactions.user_id,
        interactions.item_id,
        min(interactions.ts) as first_ts,
        {{ value_at_max('interactions.event_type', 'vocabulary.strength') }} as event_type
    from {{ ref('int_interactions') }} as interactions
    left join vocabulary on interactions.event_type = vocabulary.event_type
    group by interactions.user_id, interactions.item_id
),

seen as (
    select
        user_id,
        {{ ordered_tail_list('item_id', ['first_ts', 'item_id'], var('seen_items')) }} as seen_items,
        {{ ordered_tail_list('event_type', ['first_ts', 'item_id'], var('seen_items')) }} as seen_event_types
    from seen_pairs
    group by user_id
),

as_of as (
    select max(ts) as data_end_ts
    from {{ ref('stg_events') }}
)

select
    event_counts.user_id,
    event_counts.n_events,
    event_counts.n_view,
    event_counts.n_click,
    event_counts.n_add_to_cart,
    event_counts.n_purchase,
    event_counts.n_rating,
    recent.n_interactions,
    event_counts.first_event_ts,
    event_counts.last_event_ts,
    {{ dbt.datediff('event_counts.last_event_ts', 'as_of.data_end_ts', 'day') }}
        as days_since_last_event,
    recent.recent_items,
    recent.recent_event_types,
    seen.seen_items,
    seen.seen_event_types,
    -- Feast's event timestamp: the state is as of the user's last event
    event_counts.last_event_ts as event_timestamp
from event_counts
inner join recent on event_counts.user_id = recent.user_id
inner join seen on event_counts.user_id = seen.user_id
cross join as_of
