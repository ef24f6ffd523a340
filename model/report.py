"""The evaluation tables: baselines, the current model and the oracle ceiling by one harness; and
the replay of fresh events (live against frozen state)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from model.baselines import most_popular, tuned_ease
from model.blends import fit_blends
from model.data import SequenceData
from model.evaluate import evaluate
from model.inference import Recommender
from model.registry import Registry
from model.replay import before_cut, popularity, replay, replay_cases, transitions
from model.scorer import recommender_scorer, sasrec_scorer
from model.tuning import Setting, choose


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
        # float32, scored whole: what the registry's figures are (an index's compressed form is
        # checked on its served path when registered)
        recommender = Recommender.load(registry.path(current), compressed=False)
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


def replay_table(data: SequenceData, n: int, settings: Sequence[Setting], progress: bool = True) -> list[dict]:
    """Replay evaluation (model/replay.py) of MostPop, the item-to-item transition baseline and a
    SASRec trained on the data before the cut, the best of `settings` on validation as training
    chooses it (model/tuning.py), alone and as served (model/blends.py): one row per model,
    with live and frozen metrics and their ratio."""
    before = before_cut(data, n)
    cases = replay_cases(data, n)
    result = choose(before, settings, progress=progress).result
    alone = sasrec_scorer(result.model, torch.device(result.device))
    blends = fit_blends(alone, before)
    served = f"SASRec as served ({blends})"
    scorers = {
        "MostPop": popularity(before),
        "item-to-item transitions": transitions(before),
        f"SASRec alone ({len(result.history)} epochs)": alone,
        served: blends.served(alone),
    }
    return [{"model": name, **replay(scorer, cases)} for name, scorer in scorers.items()]


REPLAY_COLUMNS = ("model", "live NDCG@10", "frozen NDCG@10", "live/frozen", "live HR@10", "frozen HR@10", "cases")


def replay_cells(row: dict) -> list[str]:
    """A `replay_table` row as the text of REPLAY_COLUMNS."""
    live, frozen = row["live"], row["frozen"]
    return [
        row["model"],
        f"{live['ndcg@10']:.4f}",
        f"{frozen['ndcg@10']:.4f}",
        f"{row['ratio']['ndcg@10']:.2f}x",
        f"{live['hr@10']:.4f}",
        f"{frozen['hr@10']:.4f}",
        str(live["cases"]),
    ]
