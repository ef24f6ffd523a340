"""Replay evaluation: how much a model gains from events that arrive after its training cut.

Each replayed user's last `n` interactions are held out, and each one in turn is the target:
- live: the input is everything before it, the held-out events before it included (what the API
  answers when feedback reaches the online state at once);
- frozen: the input is the history at the training cut (a nightly snapshot).
Both rank every item, the input's items masked, with the same metrics as the harness
(model/evaluate.py). Every scorer learns only from the data before the cut (`before_cut`).
"""

from __future__ import annotations

import numpy as np
import torch

from model.data import SequenceData, gap_bucket
from model.evaluate import Scorer
from model.metrics import mask_items, rank_metrics, ranks

MIN_PREFIX = 3  # a training sequence needs its own validation and test targets, and one input


def before_cut(data: SequenceData, n: int) -> SequenceData:
    """The data as of the training cut: every user's last `n` interactions removed (users left
    with fewer than MIN_PREFIX keep what they have and are not held out)."""
    keep = [max(len(items) - n, 0) for items in data.items]
    return SequenceData(
        vocab=data.vocab,
        user_ids=data.user_ids,
        items=[s[:k] for s, k in zip(data.items, keep)],
        events=[s[:k] for s, k in zip(data.events, keep)],
        times=[s[:k] for s, k in zip(data.times, keep)],
        has_holdout=np.array([k >= MIN_PREFIX for k in keep], dtype=bool),
        content=data.content,
    )


def replay_cases(data: SequenceData, n: int) -> dict[str, tuple]:
    """Per mode ('live', 'frozen'): (inputs, event inputs, gap buckets, targets), one case per
    held-out interaction of every user whose history is longer than n + MIN_PREFIX."""
    cases = {mode: ([], [], [], []) for mode in ("live", "frozen")}
    for items, events, times in zip(data.items, data.events, data.times):
        cut = len(items) - n
        if cut < MIN_PREFIX:
            continue
        for j in range(cut, len(items)):
            for mode, start in (("live", j), ("frozen", cut)):
                inputs, kinds, gaps, targets = cases[mode]
                inputs.append(items[:start])
                kinds.append(events[:start])
                gaps.append(times[j] - times[start - 1])
                targets.append(items[j])
    return {
        mode: (inputs, kinds, gap_bucket(gaps), np.array(targets, dtype=np.int64))
        for mode, (inputs, kinds, gaps, targets) in cases.items()
    }


def case_metrics(scorer: Scorer, cases: tuple, k: int = 10, batch_size: int = 512) -> dict[str, float]:
    """Metrics of cases (inputs, event inputs, gap buckets, targets), each ranked over every item
    with its input's items masked, as by the harness; with `cases`, their number."""
    inputs, kinds, gaps, targets = cases
    all_ranks = []
    for start in range(0, len(targets), batch_size):
        chunk = slice(start, start + batch_size)
        scores = mask_items(scorer(inputs[chunk], kinds[chunk], gaps[chunk]).float().cpu(), inputs[chunk])
        all_ranks.append(ranks(scores, torch.from_numpy(targets[chunk])).numpy())
    return {**rank_metrics(np.concatenate(all_ranks), k), "cases": len(targets)} if all_ranks else {"cases": 0}


def replay(scorer: Scorer, cases: dict[str, tuple], k: int = 10, batch_size: int = 512) -> dict[str, dict]:
    """Metrics per mode, and `ratio`: live over frozen for each metric."""
    out = {mode: case_metrics(scorer, mode_cases, k, batch_size) for mode, mode_cases in cases.items()}
    out["ratio"] = {
        key: out["live"][key] / out["frozen"][key] if out["frozen"][key] else float("inf")
        for key in (f"hr@{k}", f"ndcg@{k}", f"mrr@{k}")
    }
    return out


def popularity(data: SequenceData) -> Scorer:
    """MostPop over every sequence of `data` (pass the data before the cut)."""
    counts = np.zeros(data.vocab.n_items + 1)
    for items in data.items:
        np.add.at(counts, items, 1)
    scores = torch.from_numpy(counts).float()
    return lambda inputs, events, gaps: scores.expand(len(inputs), -1)


def transitions(data: SequenceData) -> Scorer:
    """First-order item-to-item: how often each item followed the input's last item in the
    sequences of `data` (pass the data before the cut); popularity breaks ties."""
    n = data.vocab.n_items + 1
    following: list[dict[int, int]] = [{} for _ in range(n)]
    counts = np.zeros(n)
    for items in data.items:
        np.add.at(counts, items, 1)
        for a, b in zip(items[:-1].tolist(), items[1:].tolist()):
            following[a][b] = following[a].get(b, 0) + 1
    tie_break = torch.from_numpy(counts / (counts.max() + 1)).float()  # < 1: never outweighs one transition

    def score(inputs, events, gaps) -> torch.Tensor:
        scores = tie_break.repeat(len(inputs), 1)
        for row, items in enumerate(inputs):
            nxt = following[int(items[-1])] if len(items) else {}
            if nxt:
                scores[row, list(nxt)] += torch.tensor(list(nxt.values()), dtype=torch.float32)
        return scores

    return score
