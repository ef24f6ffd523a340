{{ config(
    materialized='incremental', incremental_strategy='append',
    post_hook="{{ delete_forgotten_rows(this) }}"
) }}

{#- Every raw row exactly once, with the reason it is rejected (null when clean). A row is known by
    (source_key, source_row): a batch row by its file's content fingerprint and its row number, so a
    batch is taken once whatever its file is called (stg_batch_files_checked names this run's files);
    a feedback line by its file and the API's seq (a damaged line by its text). Rows of forgotten
    users that arrived at or before their deletion are never taken, and the post-hook deletes those
    an earlier run took. -#}

-- this run: its number (it only grows) and its wall-clock start
with run as (
    select
        run_seq,
        started_at
    from {{ ref('stg_runs') }}
    where run_seq = (select max(runs.run_seq) from {{ ref('stg_runs') }} as runs)
),

this_runs_batch_files as (
    select
        fingerprint,
        source_file,
        arrived_at
    from {{ ref('stg_batch_files_checked') }}
    where run_seq = (select run.run_seq from run)
),

batch as (
    select
        events.event_id,
        events.user_id,
        events.item_id,
        events.event_type,
        events.ts as ts_raw,
        events.value,
        events.request_id,
        0 as source_rank,
        files.source_file,
        files.fingerprint as source_key,
        cast(events.file_row_number as bigint) as source_row,
        false as is_malformed,
        files.arrived_at
    from {{ source('landing', 'events') }} as events
    inner join this_runs_batch_files as files on {{ file_basename('events.filename') }} = files.source_file
),

feedback as (
    select
        feedback_lines.event_id,
        feedback_lines.user_id,
        feedback_lines.item_id,
        feedback_lines.event_type,
        feedback_lines.ts as ts_raw,
        feedback_lines.value,
        feedback_lines.request_id,
        1 as source_rank,
        feedback_lines.source_file,
        feedback_lines.source_key,
        feedback_lines.source_row,
        feedback_lines.is_malformed,
        -- a line arrived when the API accepted it. One that does not say (a line torn before its
        -- received_at) is taken to have arrived before any deletion of the user it names.
        coalesce(
            {{ parse_utc_timestamp('feedback_lines.received_at') }},
            cast('1970-01-01' as timestamp)
        ) as arrived_at
    from {{ ref('stg_feedback_lines') }} as feedback_lines
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
            source_key,
            source_row,
            event_id
        from {{ this }}
    {% else %}
        select
            cast(null as varchar) as source_key,
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
            arrived.source_key = checked_before.source_key
            and arrived.source_row = checked_before.source_row
    where
        checked_before.source_key is null
        and not {{ is_forgotten('arrived') }}
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
        run.run_seq,
        run.started_at as checked_at,
        case
            when parsed.is_malformed then 'malformed_line'
            when parsed.event_id is null or parsed.user_id is null or parsed.item_id is null then 'null_id'
            when parsed.arrival_rank > 1 or parsed.seen_before then 'duplicate_event_id'
            when vocabulary.event_type is null then 'unknown_event_type'
            when parsed.ts is null then 'malformed_ts'
            when parsed.ts > {{ dbt.dateadd('hour', var('future_tolerance_hours'), 'run.started_at') }} then 'future_ts'
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
    source_key,
    source_row,
    reason,
    run_seq,
    checked_at,
    arrived_at
from checked
