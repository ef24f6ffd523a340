from dataclasses import replace

import numpy as np
import pytest
import torch

from model.baselines import most_popular, tuned_ease
from model.config import preset
from model.data import GAP_BUCKETS, gap_bucket, pad_left
from model.evaluate import evaluate
from model.metrics import mask_items, rank_metrics, ranks
from model.replay import before_cut, popularity, replay, replay_cases, transitions
from model.report import replay_table
from model.sasrec import Dropout, ModelConfig, SASRec
from model.scorer import sasrec_scorer
from model.train import train
from model.windows import training_windows
from tests.model_fixtures import cyclic_data


def tiny_model(max_len=8, dropout=0.0):
    cfg = ModelConfig(max_len=max_len, dim=16, layers=2, heads=2, dropout=dropout)
    return SASRec(
        cfg,
        n_items=10,
        n_categories=2,
        item_category=[0] + [1, 2] * 5,
        item_price_bucket=[0] + [1] * 10,
        n_event_types=5,
        n_price_buckets=10,
        n_gap_buckets=GAP_BUCKETS,
    ).eval()


def test_no_position_sees_a_later_one():
    torch.manual_seed(0)
    model = tiny_model()
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    events = torch.ones_like(items) * (items > 0)
    base = model.encode(items, events)
    for t in range(2, 8):
        changed = items.clone()
        changed[0, t] = 1 + (changed[0, t] % 10)
        out = model.encode(changed, events)
        torch.testing.assert_close(out[:, :t], base[:, :t])  # everything before t is untouched
        assert not torch.allclose(out[:, t], base[:, t])  # t itself does change


def test_padding_is_never_attended_to():
    torch.manual_seed(0)
    model = tiny_model()
    short = model.encode(torch.tensor([[3, 4, 5]]), torch.tensor([[1, 1, 1]]))
    padded = model.encode(torch.tensor([[0, 0, 0, 3, 4, 5]]), torch.tensor([[0, 0, 0, 1, 1, 1]]))
    torch.testing.assert_close(padded[:, 3:], short)
    assert torch.isfinite(padded).all()


def test_the_newest_state_alone_is_the_full_encoders_last_state():
    """Serving scores from the newest state only (the last block computed for it alone): the same
    state as the whole sequence's, for left-padded histories of any length in one batch."""
    torch.manual_seed(0)
    model = tiny_model()
    items = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 9]])
    events = torch.ones_like(items) * (items > 0)
    newest = model.encode(items, events, newest_only=True)
    assert newest.shape == (3, 1, 16)
    torch.testing.assert_close(newest[:, 0], model.encode(items, events)[:, -1])
    gaps = torch.ones(3, dtype=torch.long)
    torch.testing.assert_close(
        model.scores(items, events, gaps), model.query(newest[:, 0], gaps) @ model.item_table().T
    )


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_zeroes_its_share_scales_the_rest_and_is_the_identity_in_evaluation(p):
    torch.manual_seed(0)
    dropout = Dropout(p)
    x = (torch.rand(400, 500) + 0.5).requires_grad_()
    y = dropout(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - p) < 0.005
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - p))
    y.sum().backward()  # the gradient reaches the kept elements only, scaled alike
    torch.testing.assert_close(x.grad, (~dropped).float() / (1 - p))
    assert not torch.equal(dropout(x), y)  # a fresh mask per call
    assert dropout.eval()(x) is x
    model = tiny_model(dropout=0.2)  # per block (2): inside the feed-forward, and on both residual branches; the input
    assert sum(isinstance(m, Dropout) for m in model.modules()) == 2 * 2 + 1
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())


def test_full_softmax_loss_is_cross_entropy_over_the_catalog_at_every_position():
    torch.manual_seed(0)
    model = tiny_model()
    items, events = torch.tensor([[0, 3, 4, 5]]), torch.tensor([[0, 1, 1, 1]])
    targets = torch.tensor([[0, 4, 5, 6]])
    states = model.encode(items, events)[0, 1:]  # the three positions with a target
    logits = states @ model.item_table().T
    expected = -torch.log_softmax(logits[:, 1:], dim=1)[torch.arange(3), targets[0, 1:] - 1].mean()
    torch.testing.assert_close(model.loss(items, events, targets, torch.zeros_like(targets)), expected)


def test_sampled_softmax_masks_accidental_hits():
    torch.manual_seed(0)
    model = tiny_model()
    items, events, targets = torch.tensor([[3, 4]]), torch.tensor([[1, 1]]), torch.tensor([[4, 5]])
    gaps = torch.zeros_like(targets)
    torch.manual_seed(7)
    loss = model.loss(items, events, targets, gaps, negatives=200)
    torch.manual_seed(7)
    sampled = torch.randint(1, 11, (200,))  # the same draw: 200 of 10 items, so the positives are among them
    h = model.encode(items, events)[0]  # [2, D]
    table = model.item_table()
    y = targets[0]
    assert (sampled[None, :] == y[:, None]).any(1).all()
    neg = (h @ table[sampled].T).masked_fill(sampled[None, :] == y[:, None], float("-inf"))
    logits = torch.cat([(h * table[y]).sum(-1, keepdim=True), neg], dim=1)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long)))


def test_ties_count_against_the_target():
    assert ranks(torch.zeros(1, 5), torch.tensor([3])).item() == 5


def test_ranks_and_metrics_by_hand():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.7], [0.0, 0.1, 0.2, 0.3]])
    rank = ranks(scores, torch.tensor([2, 3])).numpy()
    assert rank.tolist() == [3, 1]
    got = rank_metrics(rank, k=2)
    assert got == pytest.approx({"hr@2": 0.5, "ndcg@2": 0.5, "mrr@2": 0.5})
    got = rank_metrics(rank, k=3)
    assert got == pytest.approx({"hr@3": 1.0, "ndcg@3": (0.5 + 1) / 2, "mrr@3": (1 / 3 + 1) / 2})


def test_masking_removes_history_and_padding_from_the_ranking():
    scores = torch.tensor([[5.0, 0.9, 0.5, 0.7]])
    masked = mask_items(scores, [np.array([1])])
    assert masked[0, 0] == float("-inf") and masked[0, 1] == float("-inf")
    assert ranks(masked, torch.tensor([2])).item() == 2  # only item 3 (0.7) is ahead of item 2


def test_history_masking_is_configurable_in_the_harness():
    data = cyclic_data(items=5)  # users revisit items, so targets are among their history

    # a scorer that puts the user's own items first: good unmasked, useless once they are masked
    def history_first(inputs, events, gaps):
        scores = torch.zeros(len(inputs), data.vocab.n_items + 1)
        for row, seq in enumerate(inputs):
            scores[row, torch.from_numpy(seq)] = 1.0
        return scores

    assert evaluate(history_first, data, mask_history=False)["hr@10"] == 1.0
    assert evaluate(history_first, data, mask_history=True)["hr@10"] == 0.0


def test_training_windows_hold_out_validation_and_test():
    data = cyclic_data(users=3, length=12)
    inputs, _, targets, _ = training_windows(data, max_len=20)
    for u in range(3):
        seq = data.items[u]
        assert targets[u][targets[u] > 0].tolist() == seq[1:-2].tolist()  # never the last two
        assert inputs[u][inputs[u] > 0].tolist() == seq[:-3].tolist()


def test_long_histories_are_cut_into_windows_so_every_interaction_is_a_target():
    data = cyclic_data(users=1, length=25)
    _, _, targets, _ = training_windows(data, max_len=5)
    trained = sorted(t for row in targets for t in row if t > 0)
    assert trained == sorted(data.items[0][1:-2].tolist())
    assert len(training_windows(data, max_len=5, all_windows=False)[0]) == 1


def test_every_target_of_a_long_history_is_predicted_with_half_a_window_in_view():
    data = cyclic_data(users=1, items=1000, length=40)  # distinct items: a target's place in its window is known
    inputs, _, targets, _ = training_windows(data, max_len=10)
    in_view = [
        (int(wanted[position]), int((window[: position + 1] > 0).sum()))
        for window, wanted in zip(inputs, targets)
        for position in np.flatnonzero(wanted)
    ]
    seen_before = dict(in_view)
    sequence = data.items[0][1:-2]
    assert sorted(item for item, _ in in_view) == sorted(sequence.tolist())  # each once: no window repeats a target
    assert all(seen_before[item] >= min(5, place + 1) for place, item in enumerate(sequence.tolist()))


def test_model_learns_a_sequential_pattern_popularity_cannot_see():
    data = cyclic_data(users=120, items=60, length=12)
    model_cfg, train_cfg = preset("tiny", epochs=30, patience=30, lr=5e-3)
    result = train(data, model_cfg, train_cfg, progress=False)
    ours = evaluate(sasrec_scorer(result.model, torch.device("cpu")), data)
    pop = evaluate(most_popular(data, "test"), data)
    assert ours["ndcg@10"] > 0.8
    assert pop["ndcg@10"] < 0.3
    # EASE has no notion of order: it should do worse than the sequence model here
    ease, _ = tuned_ease(data, "test")
    assert evaluate(ease, data)["ndcg@10"] < ours["ndcg@10"]


def test_training_is_deterministic_on_cpu_for_a_seed():
    data = cyclic_data()
    model_cfg, train_cfg = preset("tiny", epochs=3)
    a = train(data, model_cfg, train_cfg, progress=False)
    b = train(data, model_cfg, train_cfg, progress=False)
    for key, value in a.model.state_dict().items():
        torch.testing.assert_close(value, b.model.state_dict()[key], rtol=0, atol=0)

    def untimed(history):  # an epoch's wall time is the one thing a seed does not fix
        return [{k: v for k, v in record.items() if k != "seconds"} for record in history]

    assert untimed(a.history) == untimed(b.history)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    data = cyclic_data()
    model_cfg, train_cfg = preset("tiny", epochs=4, patience=10)
    straight = train(data, model_cfg, train_cfg, progress=False)
    checkpoint = tmp_path / "ckpt.pt"
    train(data, model_cfg, replace(train_cfg, epochs=2), checkpoint=checkpoint, progress=False)
    resumed = train(data, model_cfg, train_cfg, checkpoint=checkpoint, progress=False)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight.history])


def test_pad_left_right_aligns_and_truncates_from_the_start():
    assert pad_left([np.array([1, 2, 3]), np.array([4])], 2).tolist() == [[2, 3], [0, 4]]


def test_gap_buckets_follow_the_time_scale():
    assert gap_bucket([0.0, 30, 300, 2_000, 50_000, float("nan")]).tolist() == [1, 2, 3, 4, 6, 0]


def test_the_prediction_depends_on_the_time_until_it():
    torch.manual_seed(0)
    model = tiny_model()
    items, events = torch.tensor([[3, 4, 5]]), torch.tensor([[1, 1, 1]])
    soon = model.scores(items, events, torch.from_numpy(gap_bucket([30.0])))
    later = model.scores(items, events, torch.from_numpy(gap_bucket([86_400 * 3.0])))
    assert not torch.allclose(soon, later)


# -- replay: fresh events, live against frozen state -------------------------------------------


def next_in_cycle(data):
    """A scorer that knows the cyclic law: all weight on the item after the input's last one."""
    n = data.vocab.n_items

    def score(inputs, events, gaps):
        scores = torch.zeros(len(inputs), n + 1)
        for row, items in enumerate(inputs):
            scores[row, items[-1] % n + 1] = 1.0  # item index k + 1 holds i{k}; i{k + 1} follows it
        return scores

    return score


def test_replay_feeds_the_held_out_events_live_and_not_frozen():
    data, n = cyclic_data(), 4
    before = before_cut(data, n)
    assert [len(s) for s in before.items] == [len(s) - n for s in data.items] and before.has_holdout.all()
    result = replay(next_in_cycle(data), replay_cases(data, n))
    assert result["live"]["hr@10"] == 1.0 and result["live"]["cases"] == n * len(data.items)
    assert result["frozen"]["hr@10"] == pytest.approx(1 / n)  # only the first held-out event follows the cut
    assert result["ratio"]["hr@10"] == pytest.approx(n)


def test_replay_transition_baseline_follows_fresh_events_and_popularity_cannot():
    data, n = cyclic_data(), 3
    before = before_cut(data, n)
    cases = replay_cases(data, n)
    moves = replay(transitions(before), cases)
    assert moves["live"]["ndcg@10"] > 0.9 and moves["ratio"]["ndcg@10"] > 2
    pop = replay(popularity(before), cases)
    assert pop["live"]["ndcg@10"] < moves["live"]["ndcg@10"] / 3


def test_replay_table_trains_before_the_cut_and_reports_every_model():
    rows = replay_table(cyclic_data(), 2, [preset("tiny", epochs=2)])
    names = ["MostPop", "item-to-item transitions", "SASRec alone", "SASRec as served"]
    assert [r["model"].split(" (")[0] for r in rows] == names
    for row in rows:
        assert row["live"]["cases"] == row["frozen"]["cases"] == 2 * 60
        assert row["ratio"]["ndcg@10"] == pytest.approx(row["live"]["ndcg@10"] / row["frozen"]["ndcg@10"])


def test_rtrec_evaluate_replay_prints_live_and_frozen_per_model(monkeypatch):
    from rich.console import Console
    from typer.testing import CliRunner

    import cli.main

    monkeypatch.setattr(cli.main, "_load_data", cyclic_data)  # the marts a pipeline run would leave
    monkeypatch.setattr(cli.main, "console", Console(width=200))  # whatever the terminal, no name wraps
    result = CliRunner().invoke(cli.main.app, ["evaluate", "--replay", "2", "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    assert "replay of each user's last 2 interactions" in result.output
    for model in ("MostPop", "item-to-item transitions", "SASRec alone", "SASRec as served"):
        assert model in result.output
    wrong = CliRunner().invoke(cli.main.app, ["evaluate", "--replay", "2", "--preset", "huge"])
    assert wrong.exit_code == 2 and "unknown preset 'huge'" in wrong.output


def test_training_starts_no_epoch_that_would_end_past_its_budget():
    data = cyclic_data()
    model_cfg, train_cfg = preset("tiny", epochs=5, patience=10)
    assert len(train(data, model_cfg, replace(train_cfg, budget_seconds=1e-6), progress=False).history) == 1
    assert len(train(data, model_cfg, replace(train_cfg, budget_seconds=3600), progress=False).history) == 5


def test_early_stopping_judges_a_fixed_sample_of_users():
    data = cyclic_data(users=60)
    sample = data.sample_users(20, seed=0)
    chosen = np.flatnonzero(sample.has_holdout)
    assert len(chosen) == 20 and set(chosen) <= set(np.flatnonzero(data.has_holdout))
    assert (np.flatnonzero(data.sample_users(20, seed=0).has_holdout) == chosen).all()  # the same every epoch
    assert data.sample_users(60, seed=0) is data  # no more users than there are: all of them
    model_cfg, train_cfg = preset("tiny", epochs=1)
    assert train(data, model_cfg, replace(train_cfg, eval_users=20), progress=False).history[0]["val_users"] == 20
