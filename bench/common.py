"""Preparing a data directory for a benchmark: generate -> dbt -> Feast -> (a model)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from flows.paths import DBT_PROJECT_DIR, dbt_env
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
    """`rtrec serve` on `port` with `env` (its own process group), once /healthz answers; its
    output goes to `log`, whose end is raised with the error when it exits instead."""
    import httpx

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("rtrec")), "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=out,
        )
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    raise RuntimeError("the API did not start")


def percentiles(samples_s: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.array(samples_s) * 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
    }
