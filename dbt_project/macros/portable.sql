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

{#- The fingerprint of a file's bytes: the key a batch file is known by, whatever its name. The same
    definition as rtrec/privacy.py's `fingerprint` (md5, hex), which stamps it into a file it rewrites. -#}
{% macro file_fingerprint(content) %}{{ return(adapter.dispatch('file_fingerprint')(content)) }}{% endmacro %}
{% macro duckdb__file_fingerprint(content) -%}
    md5({{ content }})
{%- endmacro %}

{#- The value of a parquet file's key-value metadata entry `key` (text), from a relation of
    (key, value) pairs as parquet_kv_metadata() returns them; null for every other key. -#}
{% macro kv_value(key) %}{{ return(adapter.dispatch('kv_value')(key)) }}{% endmacro %}
{% macro duckdb__kv_value(key) -%}
    case when key = cast('{{ key }}' as blob) then try(decode(value)) end
{%- endmacro %}

{#- One row per line of each file of `relation` (columns filename, content as bytes): the file name,
    the line number (from 1) and the line as text, null when it is not valid UTF-8. Whatever the
    bytes, this never fails: a torn or garbled line is a row like any other, for the models to judge.
    (Bytes cast to text come out escaped, \xNN for every newline, quote and backslash; split on the
    escaped newline, each piece is turned back into its own bytes.) -#}
{% macro file_lines(relation) %}{{ return(adapter.dispatch('file_lines')(relation)) }}{% endmacro %}
{% macro duckdb__file_lines(relation) -%}
    select
        filename,
        cast(line_number as bigint) as line_number,
        try(decode(cast(escaped_line as blob))) as line
    from (
        select
            filename,
            unnest(escaped_lines) as escaped_line,
            generate_subscripts(escaped_lines, 1) as line_number
        from (
            select
                filename,
                string_split(cast(content as varchar), '\x0A') as escaped_lines
            from {{ relation }}
        ) as files
    ) as pieces
{%- endmacro %}

{#- `text` parsed as JSON; null when it is not JSON at all. -#}
{% macro try_parse_json(text) %}{{ return(adapter.dispatch('try_parse_json')(text)) }}{% endmacro %}
{% macro duckdb__try_parse_json(text) -%}
    try_cast({{ text }} as json)
{%- endmacro %}

{% macro json_is_object(json) %}{{ return(adapter.dispatch('json_is_object')(json)) }}{% endmacro %}
{% macro duckdb__json_is_object(json) -%}
    coalesce(json_type({{ json }}) = 'OBJECT', false)
{%- endmacro %}

{#- The field `name` of a JSON object, as text (null when absent, null, or not an object). -#}
{% macro json_text(json, name) %}{{ return(adapter.dispatch('json_text')(json, name)) }}{% endmacro %}
{% macro duckdb__json_text(json, name) -%}
    ({{ json }} ->> '{{ name }}')
{%- endmacro %}

{#- The string field `name` as written in a line that is not valid JSON (a torn or garbled line):
    best effort, so a damaged line still names, where it can, the event and user it was about. -#}
{% macro damaged_json_string(line, name) %}{{ return(adapter.dispatch('damaged_json_string')(line, name)) }}{% endmacro %}
{% macro duckdb__damaged_json_string(line, name) -%}
    nullif(regexp_extract({{ line }}, '"{{ name }}"\s*:\s*"((?:[^"\\]|\\.)*)"', 1), '')
{%- endmacro %}

{#- The run's wall-clock start: dbt's own, or the `run_started_at` var (ISO-8601, UTC) when given (a
    replay "as of" a time, or a test of a clock set back). Only stamps and the future_ts cutoff read
    it; which rows a run takes follows run_seq in stg_runs, which only grows. -#}
{% macro run_started_timestamp() -%}
    {%- if var('run_started_at', none) -%}
        {{ parse_utc_timestamp("'" ~ var('run_started_at') ~ "'") }}
    {%- else -%}
        cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}' as timestamp)
    {%- endif -%}
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
