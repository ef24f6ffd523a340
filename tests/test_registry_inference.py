import json

import pytest

from model.config import preset
from model.evaluate import evaluate
from model.inference import Recommender
from model.lifecycle import train_and_register
from model.registry import Registry, RegistryError, not_worse
from model.scorer import recommender_scorer
from tests.model_fixtures import cyclic_data


def fake_version(registry, ndcg):
    def write(directory):
        (directory / "metrics.json").write_text(json.dumps({"validation_ndcg@10": ndcg}))

    return registry.create(write)


def test_gate_promotes_only_when_not_worse():
    assert not_worse(0.10, None)
    assert not_worse(0.10, 0.10)
    assert not not_worse(0.0999, 0.10)


def test_promote_switches_the_pointer_and_rollback_walks_back(tmp_path):
    registry = Registry(tmp_path)
    a, b, c = (fake_version(registry, x) for x in (0.1, 0.2, 0.3))
    assert registry.current() is None
    for v in (a, b, c):
        registry.promote(v)
    assert registry.current() == c
    assert registry.rollback() == b and registry.current() == b
    assert registry.rollback() == a and registry.current() == a
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    assert [info.current for info in registry.list()] == [True, False, False]


def test_unknown_version_cannot_be_promoted(tmp_path):
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match="no model version"):
        registry.promote("v-missing")
    assert registry.current() is None


def test_a_failed_write_leaves_no_version_behind(tmp_path):
    registry = Registry(tmp_path)

    def broken(directory):
        (directory / "weights.pt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        registry.create(broken)
    assert registry.list() == [] and not any(registry.versions.iterdir())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("models"))
    data = cyclic_data(users=120, items=60, length=12)
    model_cfg, train_cfg = preset("tiny", epochs=25, patience=25, lr=5e-3)
    report = train_and_register(data, registry, model_cfg, train_cfg, progress=False)
    return registry, data, report


def test_first_training_run_is_registered_and_promoted(trained):
    registry, _, report = trained
    assert report.promoted and registry.current() == report.version
    files = {p.name for p in registry.path(report.version).iterdir()}
    assert {"weights.pt", "config.json", "vocab.json", "metrics.json", "history.json", "curve.png"} <= files
    assert (registry.path(report.version) / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_worse_model_is_registered_but_not_promoted(trained):
    registry, data, report = trained
    model_cfg, train_cfg = preset("tiny", epochs=1, lr=1e-5)
    worse = train_and_register(data, registry, model_cfg, train_cfg, progress=False)
    assert not worse.promoted
    assert worse.current_metrics["validation_ndcg@10"] > worse.metrics["validation_ndcg@10"]
    assert registry.current() == report.version


def test_loaded_model_scores_like_the_trained_one(trained):
    registry, data, report = trained
    recommender = Recommender.load(registry.path(report.version))
    loaded = evaluate(recommender_scorer(recommender, data), data, "test")
    assert loaded["ndcg@10"] == pytest.approx(report.metrics["test_ndcg@10"], abs=1e-6)


def test_recommend_follows_the_learned_sequence_and_honours_exclusions(trained):
    registry, _, report = trained
    rec = Recommender.load(registry.path(report.version))
    history = [("i10", "view"), ("i11", "click"), ("i12", "view")]
    top = rec.recommend(history, k=5)
    assert top[0][0] == "i13" and len(top) == 5
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert "i13" not in [i for i, _ in rec.recommend(history, k=5, exclude={"i13"})]


def test_unknown_items_in_the_history_are_ignored(trained):
    registry, _, report = trained
    rec = Recommender.load(registry.path(report.version))
    clean = rec.recommend([("i10", "view"), ("i11", "view")], k=3)
    noisy = rec.recommend([("never-seen", "view"), ("i10", "view"), ("ghost", "bogus"), ("i11", "view")], k=3)
    assert [i for i, _ in noisy] == [i for i, _ in clean]
    assert rec.recommend([("never-seen", "view")]) == []


def test_batched_recommendations_equal_single_ones(trained):
    registry, _, report = trained
    rec = Recommender.load(registry.path(report.version))
    histories = [[("i1", "view")], [("i5", "view"), ("i6", "view"), ("i7", "purchase")], [("nope", "view")]]
    batched = rec.recommend_batch(histories, k=4)
    for history, got in zip(histories, batched):
        single = rec.recommend(history, k=4)
        assert [i for i, _ in got] == [i for i, _ in single]
        assert [s for _, s in got] == pytest.approx([s for _, s in single], abs=1e-4)
