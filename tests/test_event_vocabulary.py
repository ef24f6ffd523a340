"""The event vocabulary has one home per language: rtrec/events.py for Python, the `event_strength`
var in dbt_project.yml for dbt. They must say the same thing."""

import yaml

from flows.paths import DBT_PROJECT_DIR
from rtrec.events import EVENT_TYPES, STRENGTH


def dbt_event_strength():
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    return project["vars"]["event_strength"]


def test_dbt_event_strength_var_equals_the_python_strength_order():
    assert dbt_event_strength() == STRENGTH


def test_dbt_event_types_are_the_python_event_types():
    assert set(dbt_event_strength()) == set(EVENT_TYPES)
