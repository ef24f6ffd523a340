"""The `nightly` flow: [collect ->] forget -> etl -> embed -> materialize -> train, each step stopping the ones
after it on failure; one run at a time per data directory. `collect` runs when the API hosts share
the Redis feedback log (RTREC_FEEDBACK_LOG=redis). While an experiment runs, the run ends with its
report as a table artifact."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run

from flows.embed import embed
from flows.etl import etl
from flows.materialize import materialize
from flows.progress import summary
from flows.train import train
from model.experiment_report import experiment_report
from model.experiments import Experiments
from model.registry import Registry
from rtrec.privacy import redact_landing
from rtrec.settings import get_settings
from rtrec.shared_log import collect

LOCK_NAME = "nightly.lock"


class NightlyStepFailed(RuntimeError):
    """A nightly step failed; the message says which, why, and what was left unchanged."""


LEFT_UNCHANGED = {
    "collect": "the warehouse, the online store and the current model; events collected before the failure "
    "are in the landing zone (once), the rest stay in the shared log for the next run",
    "forget": "the warehouse, the online store and the current model (nothing after it ran)",
    "etl": "the online store and the current model (nothing after dbt ran)",
    "embed": "the online store and the current model; the item text embeddings are the last run's",
    "materialize": "the current model; the warehouse and marts already hold tonight's data",
    "train": "the current model (a failed training never touches it); marts and online store are fresh",
}


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[str | None]:
    """Hold the data directory's nightly lock while the block runs: yields None when this run holds
    it, or, when another run holds it, why not (who holds it, since when) without waiting.

    An exclusive `flock` on `<data_dir>/nightly.lock`: the CPU and the GPU deployments share one
    schedule and may share a data directory, and two runs on one warehouse, landing zone and online
    store would interleave their writes. The lock goes with the process that holds it, crash or not."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            busy = None
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            busy = f"another nightly run holds {path} ({holder})"
        if busy:
            yield busy
            return
        try:
            run = flow_run.get_name() or flow_run.get_id() or "-"
            holder = f"pid {os.getpid()}, flow run {run}, since {datetime.now(UTC).isoformat(timespec='seconds')}"
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
            yield None
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@task(name="collect-shared-feedback-log")
def collect_shared_log() -> dict:
    """Move every API host's events and deletions from the shared Redis log into the landing zone."""
    settings = get_settings()
    done = collect(settings.feedback_log_url, settings.landing_dir, settings.feedback_file_max_bytes)
    get_run_logger().info(
        "collected %d event(s) into %d file(s) and %d deletion(s)", done.events, len(done.files), done.deletions
    )
    return {"events": done.events, "files": done.files, "deletions": done.deletions}


@task(name="forget-in-landing-zone")
def forget_in_landing() -> dict:
    """Rewrite the landing zone's batch files and users.parquet without forgotten users' rows, before
    dbt reads them (a rewritten file stays the same batch to dbt)."""
    done = redact_landing(get_settings().landing_dir)
    get_run_logger().info(
        "forgotten users on record: %d; rewrote %d landing file(s) without them (%d rows removed)",
        done.users,
        len(done.files_rewritten),
        done.rows_removed,
    )
    return {"users": done.users, "files_rewritten": done.files_rewritten, "rows_removed": done.rows_removed}


def _quarantined(counts: dict[str, int]) -> str:
    reasons = {k: v for k, v in counts.items() if k not in ("accepted", "events_in") and v}
    return ", ".join(f"{v:,} {k}" for k, v in sorted(reasons.items())) or "none"


# the compact view's line for each step's result
DONE = {
    "collect": lambda r: f"collect: {r['events']:,} event(s) and {r['deletions']:,} deletion(s) from the shared log",
    "forget": lambda r: f"forget: {r['users']:,} deletion(s) on record, {r['rows_removed']:,} landing row(s) removed",
    "etl": lambda r: (
        f"etl: {r.get('events_in', 0):,} events checked, {r.get('accepted', 0):,} accepted; "
        f"quarantined: {_quarantined(r)}"
    ),
    "embed": lambda r: (
        f"embed: failed ({r['failed']}); items keep the last run's text embeddings"
        if "failed" in r
        else f"embed: {r['encoded']:,} item text(s) encoded, {r['items'] - r['encoded']:,} unchanged"
    ),
    "materialize": lambda r: "materialize: " + ", ".join(f"{view} {rows:,} rows" for view, rows in r.items()),
    "train": lambda r: (
        f"train: model {r.version} (setting {r.metrics['setting_chosen']} of {len(r.metrics['settings_tried'])}), "
        f"test NDCG@10 {r.metrics['test_ndcg@10']:.4f}, "
        + ("promoted" if r.promoted else "not promoted (worse than the current model)")
    ),
}


def done_line(name: str, result) -> str:
    try:
        return DONE[name](result)
    except (KeyError, AttributeError, TypeError):  # a result without the usual fields still gets its line
        return f"{name}: done"


@task(name="experiment-report")
def report_experiment() -> dict | None:
    """The running experiment's report (None without one), also as the `experiment-report` artifact."""
    settings = get_settings()
    experiments = Experiments(settings.experiments_dir, Registry(settings.models_dir))
    if experiments.current() is None:
        return None
    report = experiment_report(experiments, settings.feedback_dir)
    d = report.difference
    summary = (
        "no lists served yet"
        if d["ctr"] is None
        else f"CTR treatment - control {d['ctr']:+.4f}, 95% interval [{d['low']:+.4f}, {d['high']:+.4f}]"
    )
    experiment = report.experiment
    create_table_artifact(
        key="experiment-report",
        table=report.rows(),
        description=f"Experiment {experiment.id} ({experiment.control} vs {experiment.treatment}): {summary}.",
    )
    return report.as_dict()


@flow(name="nightly")
def nightly(preset_name: str = "cpu", epochs: int | None = None, device: str = "auto") -> dict:
    """The steps' results by name; `{"skipped": reason}` when another nightly run holds the data
    directory (the run is skipped, not queued: the next schedule runs on fresh data anyway)."""
    steps = {
        "collect": lambda: collect_shared_log(),
        "forget": lambda: forget_in_landing(),
        "etl": lambda: etl(),
        "embed": lambda: embed(),
        "materialize": lambda: materialize(),
        "train": lambda: train(preset_name=preset_name, epochs=epochs, device=device),
    }
    if get_settings().feedback_log != "redis":
        del steps["collect"]
    with data_dir_lock(get_settings().data_dir) as busy:
        if busy:
            get_run_logger().warning("nightly run skipped: %s", busy)
            return {"skipped": busy}
        results = {}
        for name, step in steps.items():
            try:
                results[name] = step()
            except Exception as err:
                raise NightlyStepFailed(
                    f"nightly step '{name}' failed: {err}\nleft unchanged: {LEFT_UNCHANGED[name]}"
                ) from err
            summary("%s", done_line(name, results[name]))
        try:  # the model and the data are done: a report that fails is logged, not a failed run
            results["experiment"] = report_experiment()
        except Exception:
            get_run_logger().exception("the experiment report failed; tomorrow's run tries again")
        return results
