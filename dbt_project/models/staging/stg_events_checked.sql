{{ config(materialized='incremental', incremental_strategy='append') }}

{#- Every raw row exactly once, with the reason it is rejected (null when clean). Rows are keyed by
    (source_file, source_row); an incremental run checks only rows it has not checked before. -#}

with batch as (
    select
        event_id,
        user_id,
        item_id,
        event_type,
        ts as ts_raw,
        value,
        request_id,
        0 as source_rank,
        {{ file_basename('filename') }} as source_file,
        cast(file_row_number as bigint) as source_row
    from {{ source('landing', 'events') }}
),

feedback as (
    select
        event_id,
        user_id,
        item_id,
        event_type,
        ts as ts_raw,
        value,
        request_id,
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

-- rows checked by earlier runs (none on the first run or a full refresh)
checked_before as (
    {% if is_incremental() %}
        select
            source_file,
            source_row,
            event_id
        from {{ this }}
    {% else %}
        select
            cast(null as varchar) as source_file,
            cast(null as bigint) as source_row,
            cast(null as varchar) as event_id
        where false
    {% endif %}
),

-- an event id an earlier run saw makes every new row with that id a duplicate
event_ids_before as (
    select distinct event_id
    from checked_before
    where event_id is not null
),

new_rows as (
    select arrived.*
    from arrived
    left join checked_before
        on
            arrived.source_file = checked_before.source_file
            and arrived.source_row = checked_before.source_row
    where checked_before.source_file is null
),

run as (
    select
        {{ run_started_timestamp() }} as checked_at,
        {{ dbt.dateadd('hour', var('future_tolerance_hours'), run_started_timestamp()) }} as future_ts_cutoff
),

vocabulary as (
    {{ event_vocabulary() }}
),

parsed as (
    select
        new_rows.*,
        {{ parse_utc_timestamp('new_rows.ts_raw') }} as ts,
        -- first arrival wins: order of source, file, row; earlier runs arrived before this one
        row_number() over (
            partition by new_rows.event_id
            order by new_rows.source_rank, new_rows.source_file, new_rows.source_row
        ) as arrival_rank,
        event_ids_before.event_id is not null as seen_before
    from new_rows
    left join event_ids_before on new_rows.event_id = event_ids_before.event_id
),

checked as (
    select
        parsed.*,
        run.checked_at,
        case
            when parsed.event_id is null or parsed.user_id is null or parsed.item_id is null then 'null_id'
            when parsed.arrival_rank > 1 or parsed.seen_before then 'duplicate_event_id'
            when vocabulary.event_type is null then 'unknown_event_type'
            when parsed.ts is null then 'malformed_ts'
            when parsed.ts > run.future_ts_cutoff then 'future_ts'
            when items.item_id is null then 'unknown_item'
        end as reason
    from parsed
    cross join run
    left join vocabulary on parsed.event_type = vocabulary.event_type
    left join {{ ref('stg_items') }} as items on parsed.item_id = items.item_id
)

select
    event_id,
    user_id,
    item_id,
    event_type,
    ts_raw,
    ts,
    value,
    request_id,
    source_rank,
    source_file,
    source_row,
    reason,
    checked_at
from checked
