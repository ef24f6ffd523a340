{#- Per-item features for filtering, cold start and the model's side inputs. Popularity windows end
    at the last event in the data (not the wall clock), so a replayed history has the same features. -#}

with as_of as (
    select max(ts) as data_end_ts
    from {{ ref('stg_events') }}
),

activity as (
    select
        events.item_id,
        count(*) filter (where events.event_type = 'view') as n_view,
        count(*) filter (where events.event_type = 'click') as n_click,
        count(*) filter (where events.event_type = 'add_to_cart') as n_add_to_cart,
        count(*) filter (where events.event_type = 'purchase') as n_purchase,
        count(*) filter (where events.event_type = 'rating') as n_rating,
        -- popularity: distinct users over windows that end at the last event in the data
        count(distinct events.user_id) as popularity_all,
        count(distinct events.user_id) filter (
            where events.ts > {{ dbt.dateadd('day', -1, 'as_of.data_end_ts') }}
        ) as popularity_1d,
        count(distinct events.user_id) filter (
            where events.ts > {{ dbt.dateadd('day', -7, 'as_of.data_end_ts') }}
        ) as popularity_7d,
        count(distinct events.user_id) filter (
            where events.ts > {{ dbt.dateadd('day', -30, 'as_of.data_end_ts') }}
        ) as popularity_30d,
        max(events.ts) as last_event_ts
    from {{ ref('stg_events') }} as events
    cross join as_of
    group by events.item_id
)

select
    items.item_id,
    items.title,
    items.description,
    items.category,
    items.price,
    coalesce(activity.n_view, 0) as n_view,
    coalesce(activity.n_click, 0) as n_click,
    coalesce(activity.n_add_to_cart, 0) as n_add_to_cart,
    coalesce(activity.n_purchase, 0) as n_purchase,
    coalesce(activity.n_rating, 0) as n_rating,
    coalesce(activity.popularity_all, 0) as popularity_all,
    coalesce(activity.popularity_1d, 0) as popularity_1d,
    coalesce(activity.popularity_7d, 0) as popularity_7d,
    coalesce(activity.popularity_30d, 0) as popularity_30d,
    -- conversion along the funnel; null where the step before never happened
    cast(activity.n_click as double) / nullif(activity.n_view, 0) as click_rate,
    cast(activity.n_add_to_cart as double) / nullif(activity.n_click, 0) as add_to_cart_rate,
    cast(activity.n_purchase as double) / nullif(activity.n_view, 0) as purchase_rate,
    activity.last_event_ts,
    as_of.data_end_ts as event_timestamp
from {{ ref('stg_items') }} as items
left join activity on items.item_id = activity.item_id
cross join as_of
