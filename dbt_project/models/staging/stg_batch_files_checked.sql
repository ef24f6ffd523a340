{{ config(materialized='incremental', incremental_strategy='append') }}

{#- Every batch fingerprint the warehouse has taken, with the run that took it. A file is checked once
    whatever its name: a renamed or copied file is no new batch. When a fingerprint recorded here is
    gone from the landing zone, the data set was replaced: the etl flow rebuilds (--full-refresh). -#}

with run as (
    select
        run_seq,
        started_at
    from {{ ref('stg_runs') }}
    where run_seq = (select max(runs.run_seq) from {{ ref('stg_runs') }} as runs)
),

new_files as (
    select
        fingerprint,
        min(source_file) as source_file,
        min(landed_at) as landed_at
    from {{ ref('stg_batch_files') }}
    {% if is_incremental() %}
        where fingerprint not in (select checked.fingerprint from {{ this }} as checked)
    {% endif %}
    group by fingerprint
)

select
    -- ids
    new_files.fingerprint,
    new_files.source_file,
    run.run_seq,
    -- timestamps (UTC)
    new_files.landed_at,
    run.started_at as checked_at,
    -- the batch's rows arrived when the file landed (never later than this run)
    least(coalesce(new_files.landed_at, run.started_at), run.started_at) as arrived_at
from new_files
cross join run
