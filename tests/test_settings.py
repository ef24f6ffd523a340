import pytest
from pydantic import ValidationError

from rtrec.settings import Settings


def test_every_path_lives_under_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RTREC_DATA_DIR", str(tmp_path))
    s = Settings()
    for path in (s.landing_dir, s.events_dir, s.feedback_dir, s.warehouse_path, s.cache_dir, s.feast_dir, s.models_dir):
        assert path.is_relative_to(tmp_path)


def test_environment_overrides_are_typed(monkeypatch):
    monkeypatch.setenv("RTREC_API_PORT", "9123")
    monkeypatch.setenv("RTREC_ONLINE_STORE", "redis")
    monkeypatch.setenv("RTREC_API_TOKEN", "s3cret")
    s = Settings()
    assert (s.api_port, s.online_store, s.api_token.get_secret_value()) == (9123, "redis", "s3cret")


@pytest.mark.parametrize(("name", "value"), [("RTREC_ONLINE_STORE", "mongo"), ("RTREC_API_PORT", "70000")])
def test_bad_values_are_rejected_naming_the_field(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("RTREC_").lower()):
        Settings()
