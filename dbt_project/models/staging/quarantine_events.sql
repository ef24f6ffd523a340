{{ config(materialized='incremental', incremental_strategy='append') }}

{#- Rejected rows with the reason, as they arrived: counted, never silently dropped. -#}

select
    event_id, user_id, item_id, event_type, ts_raw, value, request_id,
    source_file, source_row, reason, checked_at
from {{ ref('stg_events_checked') }}
where reason is not null
{% if is_incremental() %}
  and checked_at > (select coalesce(max(checked_at), cast('1970-01-01' as timestamp)) from {{ this }})
{% endif %}
