"""Settings chosen on the validation split (model/tuning.py): the best setting wins wherever it
stands, the time budget covers the whole search, and the registered version is the chosen one."""

import json
from dataclasses import replace

import pytest
import torch

from model.config import alternatives, preset
from model.lifecycle import train_and_register
from model.registry import Registry
from model.train import train
from model.tuning import checkpoint_of, choose
from tests.model_fixtures import cyclic_data

GOOD = preset("tiny", epochs=12, patience=12, lr=5e-3)
BAD = preset("tiny", epochs=1, lr=1e-6)


@pytest.fixture(scope="module")
def data():
    return cyclic_data(users=120, items=60, length=12)


@pytest.mark.parametrize("order", ["bad first", "good first"])
def test_the_setting_with_the_best_validation_ndcg_is_chosen_wherever_it_stands(data, order):
    settings = [BAD, GOOD] if order == "bad first" else [GOOD, BAD]
    choice = choose(data, settings, progress=False)
    assert (choice.model_cfg, choice.train_cfg) == GOOD
    assert len(choice.tried) == 2
    scores = [t["val_ndcg@10"] for t in choice.tried]
    assert scores[choice.index] == max(scores) > min(scores)
    assert choice.result.best["val_ndcg@10"] == scores[choice.index]
    # what each setting changed is named against the first one
    assert choice.tried[0]["changes"] == {}
    assert choice.changes == ({} if order == "good first" else {"epochs": 12, "patience": 12, "lr": 5e-3})


def test_the_budget_covers_the_whole_search(data):
    both = [(GOOD[0], replace(GOOD[1], budget_seconds=1e-6)), BAD]
    spent = choose(data, both, progress=False)
    assert len(spent.result.history) == 1  # the first epoch always runs, then no other
    assert len(spent.tried) == 1  # and no time is left: the second setting is not started
    roomy = [(GOOD[0], replace(GOOD[1], budget_seconds=600)), BAD]
    assert len(choose(data, roomy, progress=False).tried) == 2


def test_a_checkpoint_of_a_run_that_stopped_early_stays_stopped(data, tmp_path):
    model_cfg, train_cfg = preset("tiny", epochs=50, patience=1, lr=1e-6)
    stopped = train(data, model_cfg, train_cfg, checkpoint=tmp_path / "ckpt.pt", progress=False)
    assert len(stopped.history) < 50
    again = train(data, model_cfg, train_cfg, checkpoint=tmp_path / "ckpt.pt", progress=False)
    assert again.history == stopped.history
    torch.testing.assert_close(again.model.state_dict(), stopped.model.state_dict(), rtol=0, atol=0)


def test_the_registered_version_is_the_chosen_setting_and_every_checkpoint_is_removed(data, tmp_path):
    registry = Registry(tmp_path / "models")
    checkpoint = tmp_path / "models" / "checkpoint.pt"
    report = train_and_register(data, registry, *BAD, checkpoint=checkpoint, progress=False, alternatives=[GOOD])
    saved = json.loads((registry.path(report.version) / "config.json").read_text())
    assert saved["train"]["lr"] == GOOD[1].lr and saved["train"]["epochs"] == GOOD[1].epochs
    tried = report.metrics["settings_tried"]
    assert [t["changes"] for t in tried] == [{}, {"epochs": 12, "patience": 12, "lr": 5e-3}]
    assert report.metrics["validation_ndcg@10"] == pytest.approx(max(t["val_ndcg@10"] for t in tried))
    assert not checkpoint.exists() and not checkpoint_of(checkpoint, 1).exists()
    assert checkpoint_of(checkpoint, 1).parent == checkpoint.parent


def test_the_default_presets_try_stronger_regularisation_with_the_same_overrides():
    model_cfg, _ = preset("cpu", epochs=3, seed=7)
    others = alternatives("cpu", epochs=3, seed=7)
    assert others, "the default preset tries an alternative"
    for other_model, other_train in others:
        assert other_model.dropout > model_cfg.dropout
        assert (other_train.epochs, other_train.seed) == (3, 7)
    assert alternatives("tiny") == []


def test_a_run_stopped_by_its_budget_stays_stopped_and_a_checkpoint_of_other_runs_is_not_resumed(data, tmp_path):
    checkpoint = tmp_path / "ckpt.pt"
    model_cfg, train_cfg = preset("tiny", epochs=6)
    spent = train(data, model_cfg, replace(train_cfg, budget_seconds=1e-6), checkpoint=checkpoint, progress=False)
    assert len(spent.history) == 1
    # a retry (another budget) does not train that setting again
    again = train(data, model_cfg, train_cfg, checkpoint=checkpoint, progress=False)
    assert again.history == spent.history
    # other settings, or other data: the checkpoint is not theirs, they start from the first epoch
    other = train(data, model_cfg, replace(train_cfg, lr=2e-3), checkpoint=checkpoint, progress=False)
    assert [h["epoch"] for h in other.history] == list(range(6))
    grown = cyclic_data(users=121, items=60, length=12)
    assert train(grown, model_cfg, train_cfg, checkpoint=checkpoint, progress=False).history[0]["epoch"] == 0


def test_a_content_setting_without_text_embeddings_trains_and_registers_without_content(data, tmp_path):
    assert data.content is None  # no embed step ran
    model_cfg, train_cfg = preset("tiny", epochs=1)
    registry = Registry(tmp_path / "models")
    report = train_and_register(data, registry, replace(model_cfg, content=True, id_dropout=0.1), train_cfg)
    saved = json.loads((registry.path(report.version) / "config.json").read_text())["model"]
    assert (saved["content"], saved["id_dropout"]) == (False, 0.0)
