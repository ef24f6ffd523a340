{{ config(
    materialized='incremental', unique_key='event_id', incremental_strategy='merge',
    post_hook="{{ delete_forgotten_rows(this) }}"
) }}

{#- Clean events: typed, UTC, one row per event_id (first arrival), new ones only on incremental runs.
    A forgotten user's events that arrived at or before the deletion are dropped, also those taken
    by earlier runs; events that arrived after it start a new history. -#}

-- rows of runs up to this one were taken by an earlier run (no earlier run: every row is new)
with previous_run as (
    {% if is_incremental() %}
        select coalesce(max(run_seq), 0) as last_run_seq
        from {{ this }}
    {% else %}
        select 0 as last_run_seq
    {% endif %}
),

checked as (
    select checked_rows.*
    from {{ ref('stg_events_checked') }} as checked_rows
    where
        checked_rows.reason is null
        and not {{ is_forgotten('checked_rows') }}
        and checked_rows.run_seq > (select previous_run.last_run_seq from previous_run)
)

select
    -- ids
    event_id,
    user_id,
    item_id,
    request_id,
    -- event
    event_type,
    value,
    -- timestamps (UTC)
    ts,
    -- lineage: where, in which order and when the row arrived
    source_rank,
    source_file,
    source_row,
    run_seq,
    checked_at,
    arrived_at
from checked
