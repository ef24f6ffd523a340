{#- DuckDB-specific SQL lives here, behind macros dispatched per adapter, so the models stay portable. -#}

{% macro parse_utc_timestamp(column) %}{{ return(adapter.dispatch('parse_utc_timestamp')(column)) }}{% endmacro %}
{% macro duckdb__parse_utc_timestamp(column) -%}
    timezone('UTC', try_cast({{ column }} as timestamptz))
{%- endmacro %}

{% macro file_basename(column) %}{{ return(adapter.dispatch('file_basename')(column)) }}{% endmacro %}
{% macro duckdb__file_basename(column) -%}
    parse_filename({{ column }})
{%- endmacro %}

{#- The last `n` values of `column` per group, ordered by the columns in `order_by`, newest last. -#}
{% macro ordered_tail_list(column, order_by, n) %}{{ return(adapter.dispatch('ordered_tail_list')(column, order_by, n)) }}{% endmacro %}
{% macro duckdb__ordered_tail_list(column, order_by, n) -%}
    list_reverse(list({{ column }} order by {{ order_by | join(' desc, ') }} desc)[1:{{ n }}])
{%- endmacro %}

{% macro run_started_timestamp() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}' as timestamp)
{%- endmacro %}

{#- The value of `column` on the row where `key` is largest, per group. -#}
{% macro value_at_max(column, key) %}{{ return(adapter.dispatch('value_at_max')(column, key)) }}{% endmacro %}
{% macro duckdb__value_at_max(column, key) -%}
    arg_max({{ column }}, {{ key }})
{%- endmacro %}

{% macro list_last(column) %}{{ return(adapter.dispatch('list_last')(column)) }}{% endmacro %}
{% macro duckdb__list_last(column) -%}
    {{ column }}[len({{ column }})]
{%- endmacro %}
