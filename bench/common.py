"""Preparing a data directory for a benchmark: generate -> dbt -> Feast -> (a model)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from flows.paths import DBT_PROJECT_DIR, dbt_env
from rtrec.api_process import serve_in_background
from rtrec.generate import ShopConfig, generate
from rtrec.settings import Settings, get_settings


def use_data_dir(data_dir: Path, **env: str) -> None:
    os.environ["RTREC_DATA_DIR"] = str(data_dir.resolve())
    os.environ.update(env)
    get_settings.cache_clear()


def dbt(data_dir: Path, *args: str) -> float:
    """Run dbt (`build` by default) over `data_dir` as the etl flow does; returns the seconds it took."""
    Settings(data_dir=data_dir).marts_dir.mkdir(parents=True, exist_ok=True)  # dbt-duckdb writes the marts there
    cmd = [str(Path(sys.executable).with_name("dbt")), *(args or ["build"])]
    cmd += ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    start = time.perf_counter()
    subprocess.run(cmd, env={**os.environ, **dbt_env(data_dir)}, check=True, capture_output=True)
    return time.perf_counter() - start


def materialize() -> None:
    from rtrec.feature_store import definitions, open_store

    store = open_store(get_settings())
    store.apply(definitions())
    store.materialize(start_date=datetime(1970, 1, 1, tzinfo=UTC), end_date=datetime.now(UTC))


def prepare(data_dir: Path, cfg: ShopConfig, train_preset: str | None = None, epochs: int = 1) -> None:
    use_data_dir(data_dir)
    generate(cfg, data_dir / "landing")
    dbt(data_dir)
    materialize()
    if train_preset:
        from model.config import preset
        from model.data import load_marts
        from model.lifecycle import train_and_register
        from model.registry import Registry

        model_cfg, train_cfg = preset(train_preset, epochs=epochs)
        train_and_register(
            load_marts(get_settings().marts_dir),
            Registry(get_settings().models_dir),
            model_cfg,
            train_cfg,
            progress=False,
        )


def start_api(env: dict, port: int, log: Path, workers: int = 2) -> subprocess.Popen:
    """`rtrec serve` on loopback `port` with `env`, in its own process group (benches stop it with
    everything it started), once /healthz answers; its output goes to `log`."""
    return serve_in_background("127.0.0.1", port, log, workers, env=env, new_session=True)


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (0 for a single value)."""
    import numpy as np

    values = np.asarray(values)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def percentiles(samples_s: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.array(samples_s) * 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
    }
