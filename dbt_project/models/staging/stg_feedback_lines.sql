{#- The API's feedback log, one row per line, parsed. A line that is not a JSON object (torn by a
    crash, garbled, not UTF-8) is a row with `is_malformed`, and never stops the others from loading:
    stg_events_checked quarantines it as malformed_line. Blank lines are no events and are skipped. -#}

with lines as (
    {{ file_lines(source('landing', 'feedback')) }}
),

parsed as (
    select
        filename,
        line_number,
        line,
        {{ try_parse_json('line') }} as record
    from lines
    -- blank (spaces, tabs, a carriage return): no event
    where trim(coalesce(line, 'not text'), ' ' || chr(9) || chr(13)) != ''
),

fields as (
    select
        *,
        not {{ json_is_object('record') }} as is_malformed
    from parsed
),

unnumbered as (
    select
        *,
        -- a line without the API's seq (a damaged line, or one written by hand) is known by its text
        is_malformed or try_cast({{ json_text('record', 'seq') }} as bigint) is null as is_unnumbered,
        md5(coalesce(line, 'not text: ' || filename || ':' || cast(line_number as varchar))) as line_md5
    from fields
)

select
    -- lineage
    {{ file_basename('filename') }} as source_file,
    line_number,
    -- the line's identity across runs (a file only grows, or loses a forgotten user's lines): the
    -- file and the API's seq; for a line without one, its text and copy number within the file
    case
        when is_unnumbered then {{ file_basename('filename') }} || ':md5:' || line_md5
        else {{ file_basename('filename') }}
    end as source_key,
    case
        when is_unnumbered
            then row_number() over (partition by filename, is_unnumbered, line_md5 order by line_number)
        else try_cast({{ json_text('record', 'seq') }} as bigint)
    end as source_row,
    -- ids (a damaged line still names, where it can, the user it was about)
    case when not is_malformed then {{ json_text('record', 'event_id') }} end as event_id,
    case
        when is_malformed then {{ damaged_json_string('line', 'user_id') }}
        else {{ json_text('record', 'user_id') }}
    end as user_id,
    {{ json_text('record', 'item_id') }} as item_id,
    {{ json_text('record', 'request_id') }} as request_id,
    -- event
    {{ json_text('record', 'event_type') }} as event_type,
    try_cast({{ json_text('record', 'value') }} as double) as value,
    -- timestamps, as written
    {{ json_text('record', 'ts') }} as ts,
    case
        when is_malformed then {{ damaged_json_string('line', 'received_at') }}
        else {{ json_text('record', 'received_at') }}
    end as received_at,
    is_malformed
from unnumbered
