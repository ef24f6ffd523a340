"""The event vocabulary has one home per language: rtrec/events.py for Python, the `event_strength`
var in dbt_project.yml for dbt. They must say the same thing. So must the defaults of the online
state's list lengths (the flow passes the settings' values; a bare `dbt build` reads the vars)."""

import yaml

from flows.paths import DBT_PROJECT_DIR
from rtrec.events import EVENT_TYPES, STRENGTH
from rtrec.settings import Settings


def dbt_vars():
    return yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]


def dbt_event_strength():
    return dbt_vars()["event_strength"]


def test_dbt_event_strength_var_equals_the_python_strength_order():
    assert dbt_event_strength() == STRENGTH


def test_dbt_event_types_are_the_python_event_types():
    assert set(dbt_event_strength()) == set(EVENT_TYPES)


def test_dbt_list_lengths_default_to_the_settings_defaults():
    fields = Settings.model_fields
    assert dbt_vars()["recent_items"] == fields["max_recent_items"].default
    assert dbt_vars()["seen_items"] == fields["max_seen_items"].default
