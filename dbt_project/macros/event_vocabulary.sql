{#- The event vocabulary as a relation (event_type, strength), one row per type, rendered from the
    `event_strength` var in dbt_project.yml: the one place dbt spells the event types. -#}

{% macro event_vocabulary() -%}
    select
        event_type,
        strength
    from (
        values
        {%- for event_type, strength in var('event_strength').items() %}
            ('{{ event_type }}', {{ strength }}){{ ',' if not loop.last }}
        {%- endfor %}
    ) as vocabulary (event_type, strength)
{%- endmacro %}
