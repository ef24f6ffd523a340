"""The evaluation table: baselines, the current model and the oracle ceiling, by one harness."""

from __future__ import annotations

import json
import time
from pathlib import Path

from model.baselines import most_popular, tuned_ease
from model.data import SequenceData
from model.evaluate import evaluate
from model.inference import Recommender
from model.registry import Registry
from model.scorer import recommender_scorer


def evaluation_table(
    data: SequenceData,
    registry: Registry,
    split: str = "test",
    mask_history: bool = True,
    oracle_path: Path | None = None,
) -> list[dict]:
    rows = []
    start = time.perf_counter()
    scorer = most_popular(data, split)
    rows.append(
        {
            "model": "MostPop",
            "seconds": time.perf_counter() - start,
            **evaluate(scorer, data, split, mask_history=mask_history),
        }
    )
    start = time.perf_counter()
    scorer, l2 = tuned_ease(data, split)
    rows.append(
        {
            "model": f"EASE (l2={l2:g})",
            "seconds": time.perf_counter() - start,
            **evaluate(scorer, data, split, mask_history=mask_history),
        }
    )
    current = registry.current()
    if current is not None:
        recommender = Recommender.load(registry.path(current))
        metrics = registry.metrics(current)
        rows.append(
            {
                "model": f"SASRec {current}",
                "seconds": metrics.get("train_seconds"),
                **evaluate(recommender_scorer(recommender, data), data, split, mask_history=mask_history),
            }
        )
    if oracle_path is not None and oracle_path.exists():
        oracle = json.loads(oracle_path.read_text())
        mode = "masked" if mask_history else "unmasked"
        if mode in oracle:
            rows.append({"model": f"oracle ceiling ({oracle['users']} users)", **oracle[mode]})
    return rows
