"""The `train` flow: train -> evaluate -> register -> promote if not worse, with its artifacts."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import tempfile
from pathlib import Path

import psutil
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.progress import summary
from model.config import alternatives, preset
from model.data import load_marts
from model.distributed import EPOCH_LINE, command, environment
from model.lifecycle import TrainReport, train_and_register
from model.registry import Registry
from rtrec.settings import get_settings

METRICS = ("validation_ndcg@10", "validation_hr@10", "test_ndcg@10", "test_hr@10", "test_mrr@10", "test_coverage")


@task(name="train-evaluate-register")
def train_evaluate_register(preset_name: str, epochs: int | None, device: str) -> TrainReport:
    settings = get_settings()
    if settings.train_processes > 1:
        return train_distributed(settings.train_processes, preset_name, epochs, device)
    model_cfg, train_cfg = preset(preset_name, **overrides(epochs, device))
    registry = Registry(settings.models_dir)
    # a crash mid-training resumes from this checkpoint when the flow is retried
    return train_and_register(
        load_marts(settings.marts_dir),
        registry,
        model_cfg,
        train_cfg,
        checkpoint=settings.models_dir / "checkpoint.pt",
        progress=False,
        on_epoch=log_epoch,
        alternatives=alternatives(preset_name, **overrides(epochs, device)),
    )


def overrides(epochs: int | None, device: str) -> dict:
    """What the flow's arguments and the settings change in the preset's TrainConfig."""
    return {"device": device, "budget_seconds": get_settings().train_budget_seconds} | (
        {"epochs": epochs} if epochs else {}
    )


def train_distributed(processes: int, preset_name: str, epochs: int | None, device: str) -> TrainReport:
    """The same step under torchrun with `processes` ranks (model/distributed.py): a line per epoch
    as rank 0 reports it, the same checkpoint, registry and promotion gate. If this task stops
    (failure, cancellation), torchrun and its ranks stop with it: no orphan trains beside a retry."""
    settings = get_settings()
    with tempfile.TemporaryDirectory() as scratch:
        report_path = Path(scratch) / "report.json"
        line = command(
            processes, preset_name, settings.marts_dir, settings.models_dir, report_path, **overrides(epochs, device)
        )
        run = subprocess.Popen(
            line, env=environment(processes), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        tail: list[str] = []
        try:
            for output in run.stdout:
                if output.startswith(EPOCH_LINE):
                    log_epoch(json.loads(output[len(EPOCH_LINE) :]))
                else:
                    tail = [*tail[-40:], output.rstrip()]
            failed = run.wait() != 0
        finally:
            if run.poll() is None:  # left early (an error, an interrupt): torchrun and its ranks still run
                stop_tree(run.pid)
                run.wait()
        if failed:
            raise RuntimeError(f"torchrun with {processes} processes failed:\n" + "\n".join(tail))
        report = json.loads(report_path.read_text())
    report.pop("processes")
    return TrainReport(**report)


def stop_tree(pid: int) -> None:
    """SIGKILL a process and its descendants that are still running (torchrun starts each rank in a
    session of its own, so killing torchrun alone would leave them training)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def log_epoch(record: dict) -> None:
    summary(
        "setting %d, epoch %d/%d: loss %.4f, validation NDCG@10 %.4f (best %.4f)",
        record.get("setting", 1),
        record["epoch"] + 1,
        record["epochs"],
        record["loss"],
        record["val_ndcg@10"],
        record["best"],
    )


@task(name="publish-training-artifacts")
def publish(report: TrainReport) -> None:
    rows = [{"model": f"new {report.version}", **{m: round(report.metrics[m], 4) for m in METRICS}}]
    if report.current_metrics:
        rows.append(
            {"model": f"current {report.current_version}", **{m: round(report.current_metrics[m], 4) for m in METRICS}}
        )
    decision = (
        "promoted: not worse than the current model"
        if report.promoted
        else "kept the current model: the new one is worse"
    )
    blend, ease = report.metrics.get("successors", {}), report.metrics.get("ease", {})
    served = (
        f" Figures are the model as served: with its successor counts blended (weight {blend['weight']:g}, "
        f"recent {blend['recent']})"
        + (f" and EASE over the seen set (weight {ease['weight']:g}, l2 {ease['l2']:g})" if ease.get("weight") else "")
        + f"; test NDCG@10 of the model alone {report.metrics['model_alone']['test_ndcg@10']:.4f}."
        if blend
        else ""
    )
    create_table_artifact(key="model-comparison", table=rows, description=f"Promotion decision: {decision}.{served}")
    tried = report.metrics.get("settings_tried", [])
    create_table_artifact(
        key="settings-tried",
        table=[
            {
                "setting": number,
                "changes": ", ".join(f"{k}={v}" for k, v in t["changes"].items()) or "the preset's",
                "best validation NDCG@10": round(t["val_ndcg@10"], 4),
                "epochs": t["epochs"],
                "seconds": round(t["seconds"]),
                "chosen": number == report.metrics["setting_chosen"],
            }
            for number, t in enumerate(tried, 1)
        ],
        description="Settings tried on the validation split; the best one is the new model.",
    )
    curve = Registry(get_settings().models_dir).path(report.version) / "curve.png"
    encoded = base64.b64encode(curve.read_bytes()).decode()
    create_markdown_artifact(
        key="training-curve",
        markdown=f"# Training curve of {report.version}\n\n![curve](data:image/png;base64,{encoded})",
    )
    get_run_logger().info("model %s: %s", report.version, decision)


@flow(name="train")
def train(preset_name: str = "cpu", epochs: int | None = None, device: str = "auto") -> TrainReport:
    report = train_evaluate_register(preset_name, epochs, device)
    publish(report)
    return report
