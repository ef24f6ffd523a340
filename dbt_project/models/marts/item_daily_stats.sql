{#- One row per item and active day: that day's events and the running total up to the end of it.
    Stamped at the end of the day, so a point-in-time lookup never sees a day that is not over. -#}

with daily as (
    select
        item_id,
        {{ dbt.date_trunc('day', 'ts') }} as day,
        count(*) as events_day
    from {{ ref('stg_events') }}
    group by 1, 2
)

select
    item_id,
    day,
    events_day,
    sum(events_day) over (
        partition by item_id order by day rows between unbounded preceding and current row
    ) as events_to_date,
    {{ dbt.dateadd('day', 1, 'day') }} as event_timestamp
from daily
