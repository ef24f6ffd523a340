{#- The forgetting rule, in one place: a row of a forgotten user that arrived at or before the
    user's deletion (stg_deletions) is forgotten; rows that arrive later start a new history. -#}

{#- True for the rows of `relation` (a model alias, or a table in a post-hook) that are forgotten. -#}
{% macro is_forgotten(relation) -%}
    exists (
        select 1
        from {{ ref('stg_deletions') }} as forgotten
        where
            forgotten.user_id = {{ relation }}.user_id
            and {{ relation }}.arrived_at <= forgotten.forgotten_until
    )
{%- endmacro %}

{#- Delete the forgotten rows of `relation`: a post-hook of every table that holds users' rows. -#}
{% macro delete_forgotten_rows(relation) -%}
    delete from {{ relation }}
    where {{ is_forgotten(relation) }}
{%- endmacro %}
