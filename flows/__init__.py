"""Prefect flows that run dbt, Feast materialization and training."""
