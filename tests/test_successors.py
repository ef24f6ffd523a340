"""Successor counts blended into the model's scores (model/successors.py): the counting, the weight
chosen on validation, and the registered version serving exactly what the harness scored."""

import itertools

import numpy as np
import pytest
import torch

from model import ann, inference
from model.config import preset
from model.evaluate import evaluate
from model.inference import Recommender
from model.lifecycle import train_and_register
from model.registry import Registry
from model.scorer import sasrec_scorer
from model.successors import DIRECTORY, RECENT_FADE, RECENTS, SPAN_FADE, WEIGHTS, Successors, fit
from model.train import train
from tests.model_fixtures import cyclic_data


def dense(boosts, n):
    out = np.zeros((len(boosts), n), dtype=np.float32)
    for row, (items, values) in enumerate(boosts):
        out[row, items] = values
    return out


def test_pairs_fade_with_distance_and_a_history_boosts_what_followed_its_recent_items(tmp_path):
    successors = Successors.count([np.array([1, 2, 3, 4]), np.array([2, 3])], n_items=5)
    successors.weight, successors.recent = 2.0, 5
    follows = successors.follows.toarray()
    assert follows[1, 2] == pytest.approx(np.log1p(1.0))
    assert follows[1, 3] == pytest.approx(np.log1p(SPAN_FADE))
    assert follows[1, 4] == pytest.approx(np.log1p(SPAN_FADE**2))
    assert follows[2, 3] == pytest.approx(np.log1p(2.0))  # once in each sequence
    assert follows[4].sum() == 0 and follows[:, 1].sum() == 0  # nothing followed 4; 1 followed nothing
    want = 2.0 * (follows[2] + RECENT_FADE * follows[1])  # newest first, the older one faded
    assert dense(successors.boost([np.array([1, 2])]), 6)[0] == pytest.approx(want)
    scores = torch.zeros(2, 8)  # wider than the counts: items they never saw are left alone
    successors.add_to(scores, [np.array([1, 2]), np.array([], dtype=np.int64)])
    assert scores[0, :6].numpy() == pytest.approx(want) and scores[0, 6:].sum() == 0 and scores[1].sum() == 0
    # an item added after training (row 7) keeps its place in the history's age
    assert dense(successors.boost([np.array([2, 7])]), 6)[0] == pytest.approx(2.0 * RECENT_FADE * follows[2])
    boosts = successors.boost([np.array([1, 2]), np.array([3])])
    assert Successors.at(boosts, np.array([[4, 3, 0], [4, 1, 5]])).numpy() == pytest.approx(
        np.array([want[[4, 3, 0]], [2.0 * follows[3, 4], 0, 0]])
    )
    assert Successors.best(boosts, 2).tolist() == [list(np.argsort(-want)[:2]), [4, 0]]  # 3 boosts only 4
    successors.save(tmp_path / DIRECTORY)
    loaded = Successors.load(tmp_path / DIRECTORY)
    assert (loaded.weight, loaded.recent) == (2.0, 5) and (loaded.follows != successors.follows).nnz == 0
    assert not loaded.follows.data.flags.writeable  # the read-only mapping, shared by the workers: not a copy
    successors.recent = 1  # only the newest item counts
    assert dense(successors.boost([np.array([1, 2])]), 6)[0] == pytest.approx(2.0 * follows[2])


def test_the_weight_is_chosen_on_validation():
    data = cyclic_data(users=120, items=60, length=12)
    weak = train(data, *preset("tiny", epochs=1, lr=1e-5), progress=False).model  # has learned next to nothing
    alone = sasrec_scorer(weak, torch.device("cpu"))
    successors, tried = fit(alone, data)
    assert len(tried) == 1 + len(RECENTS) * (len(WEIGHTS) - 1) and successors.weight > 0
    figures = {(t["recent"], t["weight"]): t["validation_ndcg@10"] for t in tried}
    assert figures[successors.recent, successors.weight] == max(figures.values()) > figures[RECENTS[0], 0.0]
    assert evaluate(successors.blend(alone), data)["ndcg@10"] > evaluate(alone, data)["ndcg@10"]

    def perfect(inputs, events, gaps):  # the cycle's next item: the counts cannot add anything
        scores = torch.zeros(len(inputs), data.vocab.n_items + 1)
        following = {int(a): int(b) for s in data.items for a, b in itertools.pairwise(s)}
        scores[torch.arange(len(inputs)), [following[int(s[-1])] for s in inputs]] = 1.0
        return scores

    successors, tried = fit(perfect, data)
    assert {t["validation_ndcg@10"] for t in tried} == {1.0} and successors.weight == 0.0  # a tie: counts out


def test_a_version_serves_the_counts_it_was_registered_with(tmp_path, monkeypatch):
    """A weakly trained model, so that the counts carry weight: the API's scores are the model's plus
    the registered boost, and an indexed catalog also re-scores the items the counts boost most."""
    data = cyclic_data(users=120, items=60, length=12)
    registry = Registry(tmp_path)
    report = train_and_register(data, registry, *preset("tiny", epochs=1, lr=1e-4), progress=False)
    weight = report.metrics["successors"]["weight"]
    assert weight > 0 and report.metrics["test_ndcg@10"] > report.metrics["model_alone"]["test_ndcg@10"]
    # the compressed form was checked as served, with the counts (model/lifecycle.py)
    assert report.metrics["compressed"]["float_test_ndcg@10"] == pytest.approx(report.metrics["test_ndcg@10"])
    served = Recommender.load(registry.path(report.version))
    assert served.successors.weight == weight
    history = [np.array([served.index["i10"], served.index["i11"]])]
    alone = Recommender(served.model, served.vocab, "alone", served.onnx)  # the same form, without the counts
    boost = dense(served.successors.boost(history), len(served.table))
    assert served.scores(history, [np.array([1, 1])], np.zeros(1)).numpy() == pytest.approx(
        alone.scores(history, [np.array([1, 1])], np.zeros(1)).numpy() + boost, abs=1e-5
    )
    history_ids, seen = [("i10", "view"), ("i11", "view")], {"i10", "i11"}
    assert served.recommend(history_ids, 1, seen)[0][0] == "i12"  # what followed i11

    # an indexed catalog: the index alone (5 candidates) would not find an item only the counts favour
    far = served.index["i40"]
    served.successors.follows = served.successors.follows.tolil()
    served.successors.follows[served.index["i11"], far] = 50.0
    served.successors.follows = served.successors.follows.tocsr()
    (tmp_path / "index").mkdir()
    ann.build_index(served.table.numpy(), tmp_path / "index")
    indexed = Recommender(served.model, served.vocab, "indexed", ann=ann.ItemIndex.open(tmp_path / "index"))
    monkeypatch.setattr(inference, "CANDIDATES", 5)
    found, _ = indexed.candidates(history, [np.array([1, 1])], np.zeros(1), [list(history[0])], 3)
    assert far not in found[0]  # without the counts, the index's rows
    indexed.successors = served.successors
    served.onnx = None  # an index's rows are scored by the float model: compared with its float form
    top = indexed.recommend(history_ids, 3, seen)
    assert top[0][0] == "i40"
    assert [i for i, _ in top] == [i for i, _ in served.recommend(history_ids, 3, seen)]
    assert [s for _, s in top] == pytest.approx([s for _, s in served.recommend(history_ids, 3, seen)], abs=1e-4)
