{{ config(materialized='incremental', incremental_strategy='append') }}

{#- Rejected rows with the reason, as they arrived: counted, never silently dropped. -#}

-- rows checked up to this time were taken by an earlier run (no earlier run: every row is new)
with previous_run as (
    {% if is_incremental() %}
        select coalesce(max(checked_at), cast('1970-01-01' as timestamp)) as last_checked_at
        from {{ this }}
    {% else %}
        select cast('1970-01-01' as timestamp) as last_checked_at
    {% endif %}
),

rejected as (
    select *
    from {{ ref('stg_events_checked') }}
    where
        reason is not null
        and checked_at > (select previous_run.last_checked_at from previous_run)
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
    source_row,
    -- why it was rejected, and when
    reason,
    checked_at
from rejected
