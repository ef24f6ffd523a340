"""Opening rtrec's Feast store from the settings, and registering its definitions."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
from pathlib import Path
from urllib.parse import urlparse

from feast import FeatureStore

from rtrec.settings import Settings

FEATURE_REPO_DIR = Path(__file__).resolve().parent.parent / "feature_repo"


def feast_redis_connection(redis_url: str, timeout: float = 0.5) -> str:
    """redis://host:port/db -> Feast's 'host:port,db=N,...' (with the password when the URL has one).

    Short socket timeouts and no client-side retries (`retry=null`; redis-py otherwise backs off for
    up to ~10 s): when Redis is down, serving must fall back at once. Batch steps retry as tasks."""
    url = urlparse(redis_url)
    if url.scheme not in ("redis", "rediss") or not url.hostname:
        raise ValueError(f"redis_url must look like redis://host:port/db, got {redis_url!r}")
    parts = [
        f"{url.hostname}:{url.port or 6379}",
        f"db={(url.path or '/0').lstrip('/') or 0}",
        f"socket_timeout={timeout}",
        f"socket_connect_timeout={timeout}",
        "retry=null",
    ]
    if url.password:
        parts.append(f"password={url.password}")
    if url.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def open_store(settings: Settings) -> FeatureStore:
    """The Feast store of feature_repo/, on the online store the settings name."""
    # feature_store.yaml reads these through environment-variable substitution
    os.environ["RTREC_DATA_DIR"] = str(settings.data_dir.resolve())
    os.environ["RTREC_FEAST_REDIS"] = feast_redis_connection(settings.redis_url, settings.redis_timeout_seconds)
    (settings.feast_dir).mkdir(parents=True, exist_ok=True)
    if settings.online_store == "redis":
        return FeatureStore(repo_path=str(FEATURE_REPO_DIR), fs_yaml_file=FEATURE_REPO_DIR / "feature_store.redis.yaml")
    # WAL (a persistent property of the file): readers and the API's writers stop blocking each
    # other; in the default journal mode concurrent pushes from several workers hit "database is locked".
    with sqlite3.connect(settings.feast_dir / "online.db") as con:
        con.execute("pragma journal_mode=wal")
    return FeatureStore(repo_path=str(FEATURE_REPO_DIR), fs_yaml_file=FEATURE_REPO_DIR / "feature_store.yaml")


def definitions() -> list:
    """Every Feast object defined in feature_repo/features.py."""
    from feast import Entity, FeatureService, FeatureView, FileSource, PushSource

    spec = importlib.util.spec_from_file_location("rtrec_feature_definitions", FEATURE_REPO_DIR / "features.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kinds = (Entity, FeatureView, FeatureService, FileSource, PushSource)
    return [value for value in vars(module).values() if isinstance(value, kinds)]
