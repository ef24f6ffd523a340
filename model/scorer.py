"""SASRec models as scorers for the evaluation harness (model/evaluate.py).

`sasrec_scorer` scores a model that shares the data's vocabulary (one being trained);
`recommender_scorer` scores a registered model, which has its own vocabulary; `indexed_scorer`
scores what a catalog served from an index (model/ann.py) shows."""

from __future__ import annotations

import numpy as np
import torch

from model.data import SequenceData, pad_left
from model.evaluate import Scorer
from model.inference import Recommender
from model.sasrec import SASRec


def sasrec_scorer(model: SASRec, device: torch.device) -> Scorer:
    length = model.cfg.max_len

    @torch.inference_mode()
    def score(inputs: list[np.ndarray], events: list[np.ndarray], gaps: np.ndarray) -> torch.Tensor:
        model.eval()
        items = torch.from_numpy(pad_left(inputs, length)).to(device)
        kinds = torch.from_numpy(pad_left(events, length)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return model.scores(items, kinds, torch.from_numpy(np.asarray(gaps, dtype=np.int64)).to(device))

    return score


def recommender_scorer(recommender: Recommender, data: SequenceData) -> Scorer:
    """Score `data`'s items with a registered model that has its own vocabulary: items the model
    never saw score -inf, items it knows are mapped across."""
    to_model = np.array([0] + [recommender.index.get(i, 0) for i in data.vocab.item_ids])
    known = torch.from_numpy(to_model > 0)
    gather = torch.from_numpy(to_model)

    def score(inputs: list[np.ndarray], events: list[np.ndarray], gaps: np.ndarray) -> torch.Tensor:
        mapped = [to_model[s] for s in inputs]
        kept = [m > 0 for m in mapped]
        model_scores = recommender.scores(
            [m[k] for m, k in zip(mapped, kept)], [e[k] for e, k in zip(events, kept)], gaps
        )
        scores = model_scores[:, gather]  # [B, V_data + 1]
        return scores.masked_fill(~known, float("-inf"))

    return score


def indexed_scorer(recommender: Recommender) -> Scorer:
    """The served path of a recommender with an index, on its own vocabulary: the index's candidates
    re-scored exactly, every other item -inf (the harness counts ties against the target, so a
    target the index did not find is a miss)."""

    @torch.inference_mode()
    def score(inputs: list[np.ndarray], events: list[np.ndarray], gaps: np.ndarray) -> torch.Tensor:
        rows, scores = recommender.candidates(inputs, events, gaps, list(inputs), 10)
        out = torch.full((len(inputs), len(recommender.table)), float("-inf"))
        # a row can come twice (from the index and from the successor counts): its finite copy counts
        return out.scatter_reduce_(1, torch.from_numpy(rows), scores, "amax")

    return score
