"""The `nightly` flow: etl -> materialize -> train, each step stopping the ones after it on failure."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.etl import etl
from flows.materialize import materialize
from flows.train import train


class NightlyStepFailed(RuntimeError):
    """A nightly step failed; the message says which, why, and what was left unchanged."""


LEFT_UNCHANGED = {
    "etl": "the online store and the current model (nothing after dbt ran)",
    "materialize": "the current model; the warehouse and marts already hold tonight's data",
    "train": "the current model (a failed training never touches it); marts and online store are fresh",
}


@flow(name="nightly")
def nightly(preset_name: str = "cpu", epochs: int | None = None, device: str = "auto") -> dict:
    steps = {
        "etl": lambda: etl(),
        "materialize": lambda: materialize(),
        "train": lambda: train(preset_name=preset_name, epochs=epochs, device=device),
    }
    results = {}
    for name, step in steps.items():
        try:
            results[name] = step()
        except Exception as err:
            raise NightlyStepFailed(
                f"nightly step '{name}' failed: {err}\nleft unchanged: {LEFT_UNCHANGED[name]}"
            ) from err
        get_run_logger().info("nightly step %s done", name)
    return results
