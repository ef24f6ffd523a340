{{ config(materialized='incremental', incremental_strategy='append') }}

{#- Every raw row exactly once, with the reason it is rejected (null when clean). Rows are keyed by
    (source_file, source_row); an incremental run checks only rows it has not checked before. -#}

with batch as (
    select
        event_id, user_id, item_id, event_type, ts as ts_raw, value, request_id,
        0 as source_rank,
        {{ file_basename('filename') }} as source_file,
        cast(file_row_number as bigint) as source_row
    from {{ source('landing', 'events') }}
),

feedback as (
    select
        event_id, user_id, item_id, event_type, ts as ts_raw, value, request_id,
        1 as source_rank,
        {{ file_basename('filename') }} as source_file,
        seq as source_row
    from {{ source('landing', 'feedback') }}
),

arrived as (
    select * from batch
    union all
    select * from feedback
),

new_rows as (
    select arrived.*
    from arrived
    {% if is_incremental() %}
    left join {{ this }} as checked
        on checked.source_file = arrived.source_file and checked.source_row = arrived.source_row
    where checked.source_file is null
    {% endif %}
),

parsed as (
    select
        *,
        {{ parse_utc_timestamp('ts_raw') }} as ts,
        -- first arrival wins: order of source, file, row; earlier runs arrived before this one
        row_number() over (
            partition by event_id order by source_rank, source_file, source_row
        ) as arrival_rank
    from new_rows
),

checked as (
    select
        parsed.*,
        case
            when parsed.event_id is null or parsed.user_id is null or parsed.item_id is null then 'null_id'
            when parsed.arrival_rank > 1 {% if is_incremental() %} or parsed.event_id in (select event_id from {{ this }} where event_id is not null){% endif %}
                then 'duplicate_event_id'
            when parsed.event_type not in ('view', 'click', 'add_to_cart', 'purchase', 'rating') or parsed.event_type is null
                then 'unknown_event_type'
            when parsed.ts is null then 'malformed_ts'
            when parsed.ts > {{ dbt.dateadd('hour', var('future_tolerance_hours'), run_started_timestamp()) }} then 'future_ts'
            when items.item_id is null then 'unknown_item'
        end as reason
    from parsed
    left join {{ ref('stg_items') }} as items on items.item_id = parsed.item_id
)

select
    event_id, user_id, item_id, event_type, ts_raw, ts, value, request_id,
    source_rank, source_file, source_row, reason,
    {{ run_started_timestamp() }} as checked_at
from checked
