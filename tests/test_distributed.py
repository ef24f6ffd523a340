"""Training under torchrun with 2 CPU processes (gloo): the train flow starts it when
RTREC_TRAIN_PROCESSES=2; the same optimizer steps and validation quality as one process, the
registry gate, a run SIGKILLed mid-training that resumes from its checkpoint, and a train step that
fails mid-run taking torchrun and its ranks with it."""

import json
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest

import flows.train
from flows.train import train as train_flow
from flows.train import train_distributed
from model.config import preset
from model.data import load_marts
from model.distributed import EPOCH_LINE, command
from model.registry import Registry
from model.train import train
from rtrec.settings import get_settings
from tests.model_fixtures import cyclic_frame

EPOCHS = 4
LONG_RUN = 200  # epochs: the run is killed long before, or stops early


def write_marts(marts):
    marts.mkdir(parents=True)
    frame = cyclic_frame(users=150, items=30, length=14)
    frame.to_parquet(marts / "training_interactions.parquet")
    items = sorted(frame["item_id"].unique())
    features = {"item_id": items, "category": ["a", "b"] * 15, "price": np.linspace(1, 100, len(items))}
    frame.from_dict(features).to_parquet(marts / "item_features.parquet")


@pytest.fixture
def marts(data_dir):
    write_marts(data_dir / "marts")
    return data_dir / "marts"


@pytest.mark.usefixtures("prefect_harness")
def test_two_processes_take_the_same_steps_to_the_same_quality_and_pass_the_gate(marts, monkeypatch):
    single = train(load_marts(marts), *preset("tiny", epochs=EPOCHS, device="cpu"), progress=False)
    monkeypatch.setenv("RTREC_TRAIN_PROCESSES", "2")
    get_settings.cache_clear()
    report = train_flow(preset_name="tiny", epochs=EPOCHS, device="cpu")
    assert [h["steps"] for h in report.history] == [h["steps"] for h in single.history]
    assert len(report.history) == len(single.history)
    # within noise of one process: a rank's share of a batch draws other dropout masks and negatives
    # (the model alone: the served figures add the successor counts, which rank this cycle perfectly)
    alone = report.metrics["model_alone"]["validation_ndcg@10"]
    assert alone == pytest.approx(single.best["val_ndcg@10"], abs=0.1)
    assert alone > 0.5  # the cycle is learned (popularity scores ~0.1 here)
    registry = Registry(get_settings().models_dir)
    assert report.promoted and registry.current() == report.version  # the first model passes the gate
    assert not (get_settings().models_dir / "checkpoint.pt").exists()


def test_a_distributed_run_killed_mid_training_resumes_from_its_checkpoint(marts, tmp_path):
    models, report = tmp_path / "models", tmp_path / "report.json"
    line = command(2, "tiny", marts, models, report, epochs=LONG_RUN, device="cpu")
    first = subprocess.Popen(line, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (models / "checkpoint.pt").exists():
        assert first.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.01)
    # torchrun and both ranks (each in a session of its own), mid-training
    for process in [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]:
        process.send_signal(signal.SIGKILL)
    first.wait(30)
    assert not report.exists()

    second = subprocess.run(line, capture_output=True, text=True, timeout=300)
    # the ranks write their tracebacks into stderr before torchrun's summary of how each ended
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-8000:]
    epochs = [
        json.loads(out[len(EPOCH_LINE) :])["epoch"] for out in second.stdout.splitlines() if out.startswith(EPOCH_LINE)
    ]
    assert epochs and epochs[0] > 0  # it went on from the checkpoint
    history = json.loads(report.read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(epochs[-1] + 1))  # every epoch once, in order


def test_a_train_step_that_fails_mid_run_leaves_no_torchrun_or_rank_behind(marts, monkeypatch):
    def fail(record):
        raise RuntimeError("the step failed")

    monkeypatch.setattr(flows.train, "log_epoch", fail)  # raised by the flow on torchrun's first epoch line
    with pytest.raises(RuntimeError, match="the step failed"):
        train_distributed(2, "cpu", LONG_RUN, "cpu")  # its alternatives too: long after the failure
    ours = [p for p in psutil.process_iter(["cmdline"]) if str(marts) in " ".join(p.info["cmdline"] or [])]
    _, alive = psutil.wait_procs(ours, timeout=3)  # SIGKILLed: gone at once; the run alone would go on
    assert not alive, [p.info["cmdline"] for p in alive]


def test_a_distributed_run_keeps_to_its_time_budget(marts, tmp_path):
    report = tmp_path / "report.json"
    line = command(2, "tiny", marts, tmp_path / "models", report, epochs=EPOCHS, device="cpu", budget_seconds=1e-6)
    subprocess.run(line, check=True, capture_output=True, timeout=300)
    assert len(json.loads(report.read_text())["history"]) == 1  # the first epoch always runs, then no other


def test_a_distributed_run_tries_the_presets_alternatives_on_every_rank(marts, tmp_path):
    # "cpu" tries an alternative after its own settings: every rank must train the same ones
    report = tmp_path / "report.json"
    line = command(2, "cpu", marts, tmp_path / "models", report, epochs=2, device="cpu")
    subprocess.run(line, check=True, capture_output=True, timeout=300)
    assert len(json.loads(report.read_text())["metrics"]["settings_tried"]) == 2
    # out of time after the first setting: rank 0 says so and no rank starts the second
    line = command(2, "cpu", marts, tmp_path / "models", report, epochs=2, device="cpu", budget_seconds=1e-6)
    subprocess.run(line, check=True, capture_output=True, timeout=300)
    assert len(json.loads(report.read_text())["metrics"]["settings_tried"]) == 1
