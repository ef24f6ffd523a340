{#- One row per batch event file in the landing zone, known by its content, not its name: the md5 of
    its bytes, or, for a file rtrec/privacy.py rewrote without forgotten users, the fingerprint and
    landing time of the file it replaced (stamped in its parquet metadata), so the rewrite is the
    same batch, not a new one. -#}

with files as (
    select
        filename,
        content,
        last_modified
    from {{ source('landing', 'batch_files') }}
),

stamps as (
    select
        file_name as filename,
        max({{ kv_value('rtrec.fingerprint') }}) as fingerprint,
        max({{ kv_value('rtrec.landed_at') }}) as landed_at
    from {{ source('landing', 'batch_file_stamps') }}
    group by file_name
)

select
    -- ids
    {{ file_basename('files.filename') }} as source_file,
    coalesce(stamps.fingerprint, {{ file_fingerprint('files.content') }}) as fingerprint,
    -- timestamps (UTC)
    coalesce(
        {{ parse_utc_timestamp('stamps.landed_at') }},
        {{ parse_utc_timestamp('files.last_modified') }}
    ) as landed_at
from files
left join stamps on files.filename = stamps.filename
