{{ config(
    materialized='incremental', unique_key='event_id', incremental_strategy='merge',
    post_hook="delete from {{ this }} where user_id in (select user_id from {{ source('landing', 'deletions') }} where user_id is not null)"
) }}

{#- Clean events: typed, UTC, one row per event_id (first arrival), new ones only on incremental runs.
    Users forgotten through the API are dropped, including rows accepted before the deletion. -#}

with checked as (
    select * from {{ ref('stg_events_checked') }}
    where reason is null
      and user_id not in (select user_id from {{ source('landing', 'deletions') }} where user_id is not null)
    {% if is_incremental() %}
      and checked_at > (select coalesce(max(checked_at), cast('1970-01-01' as timestamp)) from {{ this }})
    {% endif %}
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
