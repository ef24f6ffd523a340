import pytest

from rtrec.settings import get_settings


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh RTREC_DATA_DIR for one test."""
    monkeypatch.setenv("RTREC_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()
