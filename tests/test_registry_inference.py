import json
import shutil

import numpy as np
import pytest
import torch

from model import ann, config, inference, lifecycle, successors
from model.config import preset
from model.data import pad_left
from model.evaluate import evaluate
from model.export import MAX_NDCG_LOSS, OnnxScores, compression_check, export_onnx
from model.inference import Recommender
from model.lifecycle import train_and_register
from model.registry import Registry, RegistryError, not_worse
from model.scorer import recommender_scorer
from tests.model_fixtures import cyclic_data, int8_reference


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
    assert {
        "weights.pt",
        "successors",
        "config.json",
        "vocab.json",
        "metrics.json",
        "history.json",
        "curve.png",
    } <= files
    assert (registry.path(report.version) / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_the_compressed_form_is_registered_checked_and_scores_as_the_float_model(trained):
    registry, _, report = trained
    check = report.metrics["compressed"]
    assert check["format"] == "onnx" and check["relative_ndcg_loss"] <= MAX_NDCG_LOSS
    assert check["float_test_ndcg@10"] == pytest.approx(report.metrics["test_ndcg@10"], abs=1e-6)
    assert check["passed"] == (check["model_ms"] < check["float_model_ms"])  # timed on this (busy) machine
    directory = registry.path(report.version)
    assert (directory / check["file"]).stat().st_size > 0 and (directory / "weights.pt").exists()  # both forms
    assert Recommender.load(directory).form == ("onnx" if check["passed"] else "float32")
    plain = Recommender.load(directory, compressed=False)
    compressed = Recommender(plain.model, plain.vocab, plain.version, OnnxScores(directory / check["file"]))
    assert (compressed.form, plain.form) == ("onnx", "float32")
    histories = [[("i10", "view"), ("i11", "click")], [("i3", "view")] * 5, [("i40", "purchase")]]
    got, want = compressed.recommend_batch(histories, k=8), plain.recommend_batch(histories, k=8)
    assert min(len({i for i, _ in a} & {i for i, _ in b}) for a, b in zip(got, want)) >= 6
    # every score as the int8 scheme gives it from the float model's query and table
    items, events = (torch.from_numpy(pad_left(x, 5)) for x in zip(*map(plain.encode_history, histories)))
    gaps = torch.zeros(3, dtype=torch.long)
    with torch.inference_mode():
        got = compressed.onnx(items, events, gaps, compressed.table).numpy()  # the int8 table it serves
        want, step = int8_reference(plain.model, items, events, gaps, compressed.table)
        exact = (np.abs(got - want) <= 1e-5 * np.abs(want).max()).all(axis=1)
        # a user's row may be off by one step of one query coordinate, where ONNX Runtime's encoder
        # and the float model round it to either side of a half step (rare: not twice here)
        assert exact.sum() >= len(exact) - 1 and (np.abs(got - want) <= step + 1e-5).all()
        float_scores = plain.model.scores(items, events, gaps, plain.table).numpy()
        assert 0 < np.abs(got - float_scores).max() < 0.02 * np.abs(float_scores).max()  # int8, and close


def test_the_compressed_form_scores_a_user_the_same_in_any_batch(trained, tmp_path):
    """Each user's query has its own int8 scale: ONNX Runtime's dynamic quantization, which takes one
    scale for the whole batch, changed a user's scores (by ~0.4%) with whoever else was in it."""
    registry, _, report = trained
    model = Recommender.load(registry.path(report.version), compressed=False).model
    export_onnx(model, tmp_path / "scores.onnx")
    onnx, table = OnnxScores(tmp_path / "scores.onnx"), model.item_table().detach()
    items = torch.tensor([[0, 0, 0, 7, 8], [1, 2, 3, 4, 5], [0, 0, 0, 0, 30], [9, 9, 9, 9, 9]])
    events, gaps = torch.ones_like(items), torch.tensor([0, 1, 2, 3])
    with torch.inference_mode():
        together = onnx(items, events, gaps, table)
        for user in range(len(items)):
            alone = onnx(items[user : user + 1], events[user : user + 1], gaps[user : user + 1], table)[0]
            torch.testing.assert_close(alone, together[user], rtol=0, atol=1e-5)
        queries = model.next_query(items, events, gaps, table)
        # a table with more rows (new items) is quantized anew, the known rows as before
        longer = onnx(items, events, gaps, torch.cat([table, table[1:4]]))
    assert queries.abs().amax(1).max() > 1.1 * queries.abs().amax(1).min()  # a shared scale would differ
    assert longer.shape == (4, len(table) + 3) and torch.equal(longer[:, : len(table)], together)


def test_exporting_leaves_the_model_in_inference_mode(trained, tmp_path):
    """The compression check times the float model after the export: in training mode its dropout
    would run, and the float form would look slower than it serves."""
    registry, _, report = trained
    model = Recommender.load(registry.path(report.version)).model
    export_onnx(model, tmp_path / "scores.onnx")
    assert not model.training


def test_a_form_that_failed_its_check_or_cannot_load_is_served_in_float32(trained, tmp_path, monkeypatch):
    registry, data, report = trained
    directory = tmp_path / "version"
    shutil.copytree(registry.path(report.version), directory)
    metrics = json.loads((directory / "metrics.json").read_text())
    (directory / "metrics.json").write_text(
        json.dumps(metrics | {"compressed": {**metrics["compressed"], "passed": False}})
    )
    assert Recommender.load(directory).form == "float32"
    (directory / "metrics.json").write_text(json.dumps(metrics))
    (directory / metrics["compressed"]["file"]).write_bytes(b"not a graph")
    assert Recommender.load(directory).form == "float32"  # logged; the float model answers
    monkeypatch.setattr(lifecycle, "export_onnx", lambda model, path: (_ for _ in ()).throw(RuntimeError("no op")))
    failed = train_and_register(data, Registry(tmp_path / "models"), *preset("tiny", epochs=1), progress=False)
    assert failed.metrics["compressed"] == {"format": "onnx", "passed": False, "error": "RuntimeError('no op')"}
    assert Recommender.load(Registry(tmp_path / "models").path(failed.version)).form == "float32"


def test_a_worse_model_is_registered_but_not_promoted(trained, monkeypatch):
    registry, data, report = trained
    monkeypatch.setattr(successors, "WEIGHTS", (0.0,))  # on this data the counts alone rank perfectly
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


def test_a_large_catalog_trains_on_a_sampled_softmax_and_is_served_from_a_memory_mapped_index(tmp_path, monkeypatch):
    """Thresholds lowered to a 60-item catalog: the candidates asked for cover it, so every item is
    one and the served top-k must be the exact one, seen items and the padding row left out; the
    half-precision form must give it to that precision, and is served when it passed its check."""
    monkeypatch.setattr(ann, "ANN_MIN_ITEMS", 50)
    monkeypatch.setattr(config, "FULL_SOFTMAX_MAX_ITEMS", 50)
    registry = Registry(tmp_path)
    data = cyclic_data(users=120, items=60, length=12)
    report = train_and_register(data, registry, *preset("tiny", epochs=3), progress=False)
    directory = registry.path(report.version)
    trained_with = json.loads((directory / "config.json").read_text())["train"]
    assert trained_with["negatives"] == config.SAMPLED_NEGATIVES
    assert report.metrics["ann"]["items"] == 60
    for name, form in ann.FORMS.items():
        assert np.load(directory / form.table, mmap_mode="r").dtype == form.dtype
        assert ann.ItemIndex.open(directory, name).index.connectivity == form.connectivity
        assert report.metrics["ann"]["forms"][name]["bytes"] > (directory / form.index).stat().st_size > 0
    forms, check = report.metrics["ann"]["forms"], report.metrics["compressed"]
    assert forms["float16"]["bytes"] < forms["float32"]["bytes"]
    form = ann.FORMS["float16"]
    assert (check["format"], check["file"]) == ("float16", f"{form.table}, {form.index}")
    # every item a candidate: through the index, the test figure is the whole table's, to half precision
    assert check["float_test_ndcg@10"] == pytest.approx(report.metrics["test_ndcg@10"], abs=1e-6)
    assert check["test_ndcg@10"] == pytest.approx(check["float_test_ndcg@10"], rel=0.01)
    assert Recommender.load(directory).form == ("float16" if check["passed"] else "float32")
    served = Recommender.load(directory, compressed=False)
    assert isinstance(served.ann.table, np.memmap) and served.onnx is None and served.form == "float32"
    half = Recommender(
        served.model, served.vocab, "half", ann=ann.ItemIndex.open(directory, "float16"), successors=served.successors
    )
    exact = Recommender(served.model, served.vocab, "exact", successors=served.successors)  # every item scored
    histories = [[("i10", "view"), ("i11", "click")], [("i3", "view")] * 5, [("i40", "purchase")], [("nope", "view")]]
    excludes = [{"i12", "i13"}, set(), {f"i{n}" for n in range(0, 60, 2)}, set()]
    every = [dict(top) for top in exact.recommend_batch(histories, 60, excludes)]
    for k in (5, 40):
        got, want = served.recommend_batch(histories, k, excludes), exact.recommend_batch(histories, k, excludes)
        assert [[i for i, _ in top] for top in got] == [[i for i, _ in top] for top in want]
        assert [s for top in got for _, s in top] == pytest.approx([s for top in want for _, s in top], abs=1e-4)
        # half precision may swap items whose scores it cannot tell apart: what it picks scores the same
        picked = [[every[h][i] for i, _ in top] for h, top in enumerate(half.recommend_batch(histories, k, excludes))]
        assert picked == [pytest.approx([s for _, s in top], rel=1e-2, abs=1e-2) for top in want]
    assert len(got[2]) == 30 and got[3] == []  # only the 30 items not left out; nothing for an unknown history
    # a failed check serves float32
    metrics = json.loads((directory / "metrics.json").read_text())
    (directory / "metrics.json").write_text(json.dumps(metrics | {"compressed": check | {"passed": False}}))
    assert Recommender.load(directory).form == "float32"
    (directory / "metrics.json").write_text(json.dumps(metrics | {"compressed": check | {"passed": True}}))
    assert Recommender.load(directory).form == "float16"
    # fewer candidates than items: each history still gets the exact top-5 of what it may see,
    # whatever else is in the batch (the search widens to the whole table where it must)
    monkeypatch.setattr(inference, "CANDIDATES", 5)
    got = served.recommend_batch(histories, 5, excludes)
    assert [[i for i, _ in top] for top in got] == [
        [i for i, _ in top] for top in exact.recommend_batch(histories, 5, excludes)
    ]
    assert all(
        [i for i, _ in served.recommend(h, 5, ex)] == [i for i, _ in top]
        for h, ex, top in zip(histories, excludes, got)
    )
    # the float16 graph searched: 5 items each history may be shown, but the unknown one's none
    searched = half.recommend_batch(histories, 5, excludes)
    assert [len(top) for top in searched] == [5, 5, 5, 0]
    assert all(i not in ex for top, ex in zip(searched, excludes) for i, _ in top)
    # a damaged or missing float16 index: logged, and the float32 one answers
    (directory / ann.FORMS["float16"].index).write_bytes(b"not an index")
    assert Recommender.load(directory).form == "float32"
    (directory / ann.FORMS["float16"].index).unlink()
    assert Recommender.load(directory).form == "float32"


def test_an_index_form_may_be_slightly_slower_but_must_keep_the_ranking():
    """Its point is its size: up to `slower_allowed` more model time passes, a bigger loss does not."""
    assert compression_check(0.2, 0.2, 1.0, 1.05, "float16", "f", slower_allowed=0.1)["passed"]
    assert not compression_check(0.2, 0.2, 1.0, 1.15, "float16", "f", slower_allowed=0.1)["passed"]
    assert not compression_check(0.2, 0.2, 1.0, 1.05)["passed"]  # the ONNX form must be faster
    assert not compression_check(0.2, 0.19, 1.0, 0.5, "float16", "f", slower_allowed=0.1)["passed"]


def test_an_index_whose_compressed_form_cannot_be_checked_is_registered_and_served_in_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(ann, "ANN_MIN_ITEMS", 50)
    monkeypatch.setattr(config, "FULL_SOFTMAX_MAX_ITEMS", 50)
    monkeypatch.setattr(lifecycle, "indexed_scorer", lambda form: (_ for _ in ()).throw(MemoryError("no room")))
    registry = Registry(tmp_path)
    report = train_and_register(
        cyclic_data(users=120, items=60, length=12), registry, *preset("tiny", epochs=1), progress=False
    )
    assert report.metrics["compressed"] == {"format": "float16", "passed": False, "error": "MemoryError('no room')"}
    assert registry.current() == report.version
    assert Recommender.load(registry.path(report.version)).form == "float32"


def test_what_the_index_did_not_find_is_the_padding_row():
    """usearch pads a batch's short rows with its largest key (2**64 - 1): never an item row."""

    class Found:
        keys = np.array([[3, 1, 2**64 - 1], [2, 2**64 - 1, 2**64 - 1]], dtype=np.uint64)
        counts = np.array([2, 1])

    class Single:
        keys = np.array([3, 1], dtype=np.uint64)

    table = np.zeros((5, 2), dtype=np.float32)
    for found, want in ((Found, [[3, 1, 0], [2, 0, 0]]), (Single, [[3, 1, 0]])):
        index = ann.ItemIndex(table, type("Index", (), {"search": lambda self, *a, found=found, **k: found})())
        assert index.candidates(np.zeros((len(want), 2), dtype=np.float32), 3).tolist() == want
        # asked for the whole table, it gives every row, not a search that may miss some
        assert index.candidates(np.zeros((2, 2), dtype=np.float32), 9).tolist() == [[1, 2, 3, 4]] * 2
