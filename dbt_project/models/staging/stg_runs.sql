{{ config(materialized='incremental', incremental_strategy='append') }}

{#- One row per dbt run. `run_seq` only grows (the last one plus one), whatever the wall clock says:
    incremental models take the rows of runs they have not seen by it. `cut` stamps the run's batch
    rows in the online store (flows/materialize.py): the run's start, to the second, and always later
    than the last run's cut, so each night's rows replace the night before's. -#}

with previous as (
    {% if is_incremental() %}
        select
            max(run_seq) as run_seq,
            max(cut) as cut
        from {{ this }}
    {% else %}
        select
            cast(0 as bigint) as run_seq,
            cast(null as timestamp) as cut
    {% endif %}
),

run as (
    select
        {{ run_started_timestamp() }} as started_at,
        '{{ invocation_id }}' as invocation_id
)

select
    -- ids
    cast(coalesce(previous.run_seq, 0) + 1 as bigint) as run_seq,
    run.invocation_id,
    -- timestamps (UTC)
    run.started_at,
    greatest(
        {{ dbt.date_trunc('second', 'run.started_at') }},
        coalesce({{ dbt.dateadd('second', 1, 'previous.cut') }}, {{ dbt.date_trunc('second', 'run.started_at') }})
    ) as cut
from run
cross join previous
