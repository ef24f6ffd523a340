{{ config(
    materialized='incremental', unique_key='event_id', incremental_strategy='merge',
    post_hook="delete from {{ this }} where user_id in (select user_id from {{ source('landing', 'deletions') }} where user_id is not null)"
) }}

{#- Clean events: typed, UTC, one row per event_id (first arrival), new ones only on incremental runs.
    Users forgotten through the API are dropped, including rows accepted before the deletion. -#}

-- rows checked up to this time were taken by an earlier run (no earlier run: every row is new)
with previous_run as (
    {% if is_incremental() %}
        select coalesce(max(checked_at), cast('1970-01-01' as timestamp)) as last_checked_at
        from {{ this }}
    {% else %}
        select cast('1970-01-01' as timestamp) as last_checked_at
    {% endif %}
),

deletions as (
    select user_id
    from {{ source('landing', 'deletions') }}
    where user_id is not null
),

checked as (
    select *
    from {{ ref('stg_events_checked') }}
    where
        reason is null
        and user_id not in (select deletions.user_id from deletions)
        and checked_at > (select previous_run.last_checked_at from previous_run)
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
    -- lineage: where and in which order the row arrived
    source_rank,
    source_file,
    source_row,
    checked_at
from checked
