{{ config(
    materialized='incremental', incremental_strategy='append',
    post_hook="{{ delete_forgotten_rows(this) }}"
) }}

{#- Rejected rows with the reason, as they arrived: counted, never silently dropped (a forgotten
    user's rows excepted: they go as their accepted rows go). -#}

-- rows of runs up to this one were taken by an earlier run (no earlier run: every row is new)
with previous_run as (
    {% if is_incremental() %}
        select coalesce(max(run_seq), 0) as last_run_seq
        from {{ this }}
    {% else %}
        select 0 as last_run_seq
    {% endif %}
),

rejected as (
    select checked_rows.*
    from {{ ref('stg_events_checked') }} as checked_rows
    where
        checked_rows.reason is not null
        and not {{ is_forgotten('checked_rows') }}
        and checked_rows.run_seq > (select previous_run.last_run_seq from previous_run)
)

select
    -- ids
    event_id,
    user_id,
    item_id,
    -- the row as it arrived
    event_type,
    ts_raw,
    value,
    request_id,
    -- lineage
    source_file,
    source_key,
    source_row,
    -- why it was rejected, and when
    reason,
    run_seq,
    checked_at,
    arrived_at
from rejected
