{#- One row per interaction: consecutive events of a user on the same item (a view, then its click,
    cart and purchase) collapse into one, carrying the strongest event type. This is the sequence
    the recommender learns from and the unit of the leave-last-out split. -#}

with vocabulary as (
    {{ event_vocabulary() }}
),

events as (
    select
        stg_events.*,
        vocabulary.strength,
        lag(stg_events.item_id) over (
            partition by stg_events.user_id
            order by stg_events.ts, stg_events.source_rank, stg_events.source_file, stg_events.source_row
        ) as previous_item
    from {{ ref('stg_events') }} as stg_events
    left join vocabulary on stg_events.event_type = vocabulary.event_type
),

numbered as (
    select
        *,
        sum(case when previous_item = item_id then 0 else 1 end) over (
            partition by user_id order by ts, source_rank, source_file, source_row
            rows between unbounded preceding and current row
        ) as interaction_number
    from events
)

select
    user_id,
    interaction_number,
    min(item_id) as item_id,
    {{ value_at_max('event_type', 'strength') }} as event_type,
    min(ts) as ts,
    max(ts) as last_ts,
    count(*) as n_events,
    max(value) as value
from numbered
group by user_id, interaction_number
