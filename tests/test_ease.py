"""EASE over the whole seen set, blended into the served scores (model/ease.py): the sum it adds,
the choice on validation, and the registered version serving what the harness scored."""

import numpy as np
import pytest
import torch

from model import ease
from model.baselines import ease_weights, training_inputs
from model.config import preset
from model.ease import CHOICE_FILE, Ease
from model.evaluate import evaluate
from model.inference import Recommender
from model.lifecycle import train_and_register
from model.registry import Registry
from model.scorer import recommender_scorer, sasrec_scorer
from model.train import train
from tests.model_fixtures import cyclic_data, taste_data


def test_each_seen_item_adds_its_weights_once_and_the_blend_is_saved_mapped(tmp_path):
    weights = np.arange(16, dtype=np.float32).reshape(4, 4)
    blend = Ease(weights, 0.5, 200.0)
    scores = torch.ones(3, 6)  # wider than the weights: items added after training are left alone
    blend.add_to(scores, [np.array([1, 3, 3]), np.array([], dtype=np.int64), np.array([2, 5])])
    assert scores[0, :4].tolist() == (1 + 0.5 * (weights[1] + weights[3])).tolist()  # 3 twice counts once
    assert scores[1].tolist() == [1.0] * 6 and scores[:, 4:].tolist() == [[1.0, 1.0]] * 3
    assert scores[2, :4].tolist() == (1 + 0.5 * weights[2]).tolist()  # 5 is past the weights: it adds nothing
    assert Ease.load(tmp_path) is None  # a version that serves none
    blend.save(tmp_path)
    loaded = Ease.load(tmp_path)
    assert (loaded.weight, loaded.l2) == (0.5, 200.0) and (loaded.weights == weights).all()
    assert not loaded.weights.flags.writeable  # the read-only mapping, shared by the workers: not a copy


def test_the_weights_are_the_baselines_and_the_blend_is_chosen_on_validation(monkeypatch):
    data = cyclic_data(users=120, items=60, length=12)
    weak = train(data, *preset("tiny", epochs=1, lr=1e-5), progress=False).model  # has learned next to nothing
    alone = sasrec_scorer(weak, torch.device("cpu"))
    chosen, tried = ease.fit(alone, data)
    assert len(tried) == 1 + len(ease.L2S) * (len(ease.WEIGHTS) - 1) and chosen is not None
    figures = {(t["l2"], t["weight"]): t["validation_ndcg@10"] for t in tried}
    assert figures[chosen.l2, chosen.weight] == max(figures.values()) > figures[None, 0.0]
    want = ease_weights(training_inputs(data, "validation"), data.vocab.n_items, chosen.l2).numpy()
    assert chosen.weights == pytest.approx(want)  # fitted on what the model trained on
    assert evaluate(chosen.blend(alone), data)["ndcg@10"] > evaluate(alone, data)["ndcg@10"]

    def only_the_target(inputs, events, gaps):  # the test target alone scores: EASE can only lose ties
        scores = torch.zeros(len(inputs), data.vocab.n_items + 1)
        _, _, _, _, targets = data.holdout("validation")
        scores[torch.arange(len(inputs)), torch.from_numpy(targets[: len(inputs)])] = 1e6
        return scores

    chosen, tried = ease.fit(only_the_target, data)
    assert chosen is None and {t["validation_ndcg@10"] for t in tried} == {1.0}  # a tie keeps EASE out
    monkeypatch.setattr(ease, "MAX_ITEMS", 59)
    assert ease.fit(alone, data) == (None, [])  # a catalog past the dense matrix's size: none


def test_a_version_serves_ease_over_everything_seen_as_the_harness_scores_it(tmp_path):
    """The API reads the last max_len items and the whole seen set; the harness the whole history:
    the same scores."""
    data = taste_data()  # histories of 40, longer than the tiny model reads (20)
    registry = Registry(tmp_path)
    report = train_and_register(data, registry, *preset("tiny", epochs=1, lr=1e-4), progress=False)
    assert report.metrics["ease"]["weight"] > 0 and (registry.path(report.version) / CHOICE_FILE).exists()
    served = Recommender.load(registry.path(report.version))
    assert served.ease.weight == report.metrics["ease"]["weight"]
    user = data.user_ids[0]
    items, events = data.items[0], data.events[0]
    ids = [data.vocab.item_ids[i - 1] for i in items]
    want = recommender_scorer(served, data)([items], [events], np.zeros(1, np.int64))[0]
    want[0], want[torch.from_numpy(items)] = float("-inf"), float("-inf")
    top = served.recommend([(i, "view") for i in ids], 5, set(ids), None, seen=set(ids))
    assert [i for i, _ in top] == [data.vocab.item_ids[i - 1] for i in want.topk(5).indices.tolist()]
    assert [s for _, s in top] == pytest.approx(want.topk(5).values.tolist(), abs=1e-4)
    recent_only = served.recommend([(i, "view") for i in ids], 5, set(ids), None)  # EASE over the last 20 only
    assert [s for _, s in recent_only] != pytest.approx([s for _, s in top], abs=1e-4), user
