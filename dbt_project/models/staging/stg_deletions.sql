{#- Users forgotten through the API (DELETE /v1/users/{user_id}, `rtrec forget`), one row per user:
    rows of the user that arrived at or before `forgotten_until` are dropped everywhere; rows that
    arrive later start a new history. A damaged line of the record still forgets the user it names,
    up to the time the record was last written. -#}

with lines as (
    {{ file_lines(source('landing', 'deletions')) }}
),

files as (
    select
        filename,
        last_modified
    from {{ source('landing', 'deletions') }}
),

parsed as (
    select
        lines.filename,
        lines.line,
        {{ try_parse_json('lines.line') }} as record
    from lines
    where trim(coalesce(lines.line, '')) != ''
),

records as (
    select
        parsed.filename,
        coalesce(
            {{ json_text('parsed.record', 'user_id') }},
            {{ damaged_json_string('parsed.line', 'user_id') }}
        ) as user_id,
        {{ parse_utc_timestamp(json_text('parsed.record', 'deleted_at')) }} as deleted_at
    from parsed
)

select
    records.user_id,
    -- a deletion time that cannot be read: the record was written by the file's last change at the latest
    max(coalesce(records.deleted_at, {{ parse_utc_timestamp('files.last_modified') }})) as forgotten_until
from records
inner join files on records.filename = files.filename
where records.user_id is not null
group by records.user_id
