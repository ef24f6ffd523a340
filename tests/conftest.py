import pytest

from rtrec import redis_server
from rtrec.settings import get_settings


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (it takes ~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A fresh RTREC_DATA_DIR for one test."""
    monkeypatch.setenv("RTREC_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def movielens_100k(tmp_path_factory):
    """MovieLens-100k from the recbole wheel, fetched once per session."""
    from rtrec.movielens import fetch_sample

    return fetch_sample("ml-100k", tmp_path_factory.mktemp("cache"))


def start_redis():
    """A real redis-server on a free loopback port: (process, url), once it answers."""
    return redis_server.start()


@pytest.fixture(scope="session")
def redis_url():
    """A redis-server for the whole session."""
    with redis_server.running() as url:
        yield url


@pytest.fixture
def durable_redis(tmp_path):
    """A redis-server of the test's own that fsyncs its append-only file (in tmp_path/redis) on every
    write, as the shared feedback log needs: a dict with its process, url and folder, changed by tests
    that restart it."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = {"dir": folder}
    server["proc"], server["url"] = redis_server.start_durable(folder)
    yield server
    server["proc"].kill()
    server["proc"].wait(10)


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    """A tiny trained model version (its directory), copied into the registries of the tests."""
    from model.config import preset
    from model.lifecycle import train_and_register
    from model.registry import Registry
    from tests.model_fixtures import cyclic_data

    registry = Registry(tmp_path_factory.mktemp("trained"))
    model_cfg, train_cfg = preset("tiny", epochs=1)
    report = train_and_register(cyclic_data(), registry, model_cfg, train_cfg, progress=False)
    return registry.path(report.version)
