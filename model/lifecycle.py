"""Train -> evaluate -> register -> promote if not worse: what the CLI and the nightly flow run."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model import ann
from model.blends import Blends, fit_blends
from model.config import TrainConfig
from model.data import SequenceData
from model.evaluate import Scorer, evaluate
from model.export import ONNX_FILE, OnnxScores, compression_check, export_onnx, median_ms, model_ms
from model.inference import Recommender
from model.plots import save_curve
from model.registry import Registry, not_worse
from model.sasrec import ModelConfig, SASRec
from model.scorer import indexed_scorer, recommender_scorer, sasrec_scorer
from model.successors import DIRECTORY as SUCCESSORS_DIRECTORY
from model.successors import Successors, as_served
from model.train import TrainResult
from model.tuning import Setting, checkpoint_of, choose
from rtrec.landing import write_json

log = logging.getLogger("rtrec.train")
INDEX_SLOWER_ALLOWED = 0.1  # relative model time an index's compressed form may add: it is there to be smaller


@dataclass
class TrainReport:
    version: str
    metrics: dict  # the new model: validation and test
    current_version: str | None
    current_metrics: dict | None  # the model that was current, on the same data
    promoted: bool
    seconds: float
    history: list[dict] = field(default_factory=list)


def save_version(
    registry: Registry,
    result: TrainResult,
    data: SequenceData,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    metrics: dict,
    blends: Blends,
    compressed: Path | None = None,
) -> str:
    """Register the trained model, with its blends (successor counts, EASE) and `compressed` (its exported form)
    beside the weights; for a catalog served from an index, the index in both forms and their check
    (`check_compressed_index`)."""

    def write(directory: Path) -> None:
        torch.save(result.model.state_dict(), directory / "weights.pt")
        blends.successors.save(directory / SUCCESSORS_DIRECTORY)
        if blends.ease is not None:
            blends.ease.save(directory)
        if data.vocab.n_items >= ann.ANN_MIN_ITEMS:  # serving takes candidates from an index (model/ann.py)
            with torch.inference_mode():
                metrics["ann"] = ann.build_index(result.model.eval().item_table().cpu().numpy(), directory)
            metrics["compressed"] = check_compressed_index(result.model, data, blends.successors, directory)
        if compressed is not None:
            shutil.copyfile(compressed, directory / compressed.name)
        write_json(
            directory / "config.json",
            {"model": model_cfg.to_dict(), "train": train_cfg.to_dict(), "device": result.device},
        )
        write_json(directory / "vocab.json", data.vocab.to_dict())
        write_json(directory / "metrics.json", metrics)
        (directory / "history.json").write_text(json.dumps(result.history))
        save_curve(result.history, directory / "curve.png")

    return registry.create(write)


def check_compressed(model: SASRec, data: SequenceData, blends: Blends, directory: Path) -> tuple[Path | None, dict]:
    """Export the model's compressed form into `directory` and check it against the float model on
    the test split, both as served (with `blends`), and in model time (model/export.py). A form that
    cannot be exported is a failed check: the version is registered and served in float32."""
    path = directory / ONNX_FILE
    try:
        export_onnx(model, path)
        onnx = OnnxScores(path)
        ndcg = {}
        for name, form in (("float", None), ("onnx", onnx)):
            served = blends.served(recommender_scorer(Recommender(model, data.vocab, name, form), data))
            ndcg[name] = evaluate(served, data)["ndcg@10"]
        times = model_ms([model.scores, onnx], model)
    except Exception as err:
        log.warning("the compressed form could not be exported or checked (%r): serving float32", err)
        return None, {"format": "onnx", "passed": False, "error": repr(err)}
    return path, compression_check(ndcg["float"], ndcg["onnx"], *times)


def check_compressed_index(model: SASRec, data: SequenceData, successors: Successors, directory: Path) -> dict:
    """The index's compressed form against its float32 one (both written in `directory`, model/ann.py)
    on the served path: test NDCG@10 through each index, and model time of one request (the first
    test users' histories, one at a time, their top-10). Its point is its size, so it may be up to
    `INDEX_SLOWER_ALLOWED` slower. A check that fails to run is a failed check: the version is
    registered and served in float32."""
    start, served = time.perf_counter(), as_served(successors)
    try:
        forms = [
            Recommender(model, data.vocab, name, ann=ann.ItemIndex.open(directory, name), successors=served)
            for name in (ann.FULL, ann.COMPRESSED)
        ]
        ndcg = [evaluate(indexed_scorer(form), data)["ndcg@10"] for form in forms]
        _, inputs, events, gaps, _ = data.holdout("test")

        def request(form: Recommender) -> Callable[[int], object]:
            def top10(n: int) -> torch.Tensor:
                _, scores = form.candidates(inputs[n : n + 1], events[n : n + 1], gaps[n : n + 1], [inputs[n]], 10)
                return scores.topk(10)

            return top10

        times = median_ms([request(form) for form in forms], min(200, len(inputs)))
    except Exception as err:
        log.warning("the index's compressed form could not be checked (%r): serving float32", err)
        return {"format": ann.COMPRESSED, "passed": False, "error": repr(err)}
    files = ann.FORMS[ann.COMPRESSED]
    check = compression_check(*ndcg, *times, ann.COMPRESSED, f"{files.table}, {files.index}", INDEX_SLOWER_ALLOWED)
    return check | {"seconds": time.perf_counter() - start}


def evaluate_both_splits(scorer: Scorer, data: SequenceData) -> dict:
    return {f"{split}_{k}": v for split in ("validation", "test") for k, v in evaluate(scorer, data, split).items()}


def train_and_register(
    data: SequenceData,
    registry: Registry,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    checkpoint: Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    alternatives: Sequence[Setting] = (),
) -> TrainReport:
    """Train a model (with `alternatives`, each setting in turn, keeping the best on validation:
    model/tuning.py), register it, and make it current if its validation NDCG@10 is not worse than
    the current model's on the same data. A failure anywhere leaves the current model untouched."""
    settings = [(model_cfg, train_cfg), *alternatives]
    choice = choose(data, settings, checkpoint=checkpoint, progress=progress, on_epoch=on_epoch)
    result, model_cfg, train_cfg = choice.result, choice.model_cfg, choice.train_cfg
    model = result.model.to("cpu")
    alone = sasrec_scorer(model, torch.device("cpu"))
    blends = fit_blends(alone, data)
    metrics = evaluate_both_splits(blends.served(alone), data)  # the model as served
    metrics["model_alone"] = evaluate_both_splits(alone, data)
    metrics |= blends.metrics()
    metrics["train_seconds"] = result.seconds
    metrics["epochs"] = len(result.history)
    metrics["settings_tried"] = choice.tried
    metrics["setting_chosen"] = choice.index + 1  # numbered from 1, as the epoch lines number them
    current = registry.current()
    current_metrics = None
    if current is not None:
        serving = Recommender.load(registry.path(current), compressed=False)  # both judged in float32
        current_metrics = evaluate_both_splits(recommender_scorer(serving, data), data)
    with tempfile.TemporaryDirectory() as scratch:
        compressed = None  # an index's compressed form is checked where the index is written (save_version)
        if data.vocab.n_items < ann.ANN_MIN_ITEMS:
            compressed, metrics["compressed"] = check_compressed(model, data, blends, Path(scratch))
        version = save_version(registry, result, data, model_cfg, train_cfg, metrics, blends, compressed)
    promoted = not_worse(
        metrics["validation_ndcg@10"], current_metrics["validation_ndcg@10"] if current_metrics else None
    )
    if promoted:
        registry.promote(version, reason="validation NDCG@10 not worse than the current model's")
    if checkpoint is not None:
        for index in range(len(settings)):
            checkpoint_of(checkpoint, index).unlink(missing_ok=True)
    return TrainReport(version, metrics, current, current_metrics, promoted, result.seconds, result.history)
