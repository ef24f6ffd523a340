{{ config(materialized='incremental', unique_key='item_id', incremental_strategy='append') }}

{#- A stable integer per item: an item keeps its index forever; new items get the next ones in the
    order they first appeared. Index 0 is left free for padding. -#}

with first_seen as (
    select
        item_id,
        min(ts) as first_seen_ts
    from {{ ref('int_interactions') }}
    group by item_id
),

new_items as (
    select first_seen.*
    from first_seen
    {% if is_incremental() %}
    where item_id not in (select item_id from {{ this }})
    {% endif %}
)

select
    item_id,
    {% if is_incremental() %}(select coalesce(max(item_index), 0) from {{ this }}) + {% endif %}
    cast(row_number() over (order by first_seen_ts, item_id) as integer) as item_index,
    first_seen_ts
from new_items
