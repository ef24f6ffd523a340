import math

import numpy as np
import pytest

from rtrec.generate import ShopConfig, build_shop, next_item_probs, sample_next_items
from rtrec.oracle import expected_metrics


def test_expected_metrics_by_hand():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    got = expected_metrics(probs, k=2)
    # user 1 ranks (0.5, 0.3); user 2 ranks (0.8, 0.1)
    assert got["hr@2"] == pytest.approx((0.8 + 0.9) / 2)
    assert got["ndcg@2"] == pytest.approx((0.5 + 0.3 / math.log2(3) + 0.8 + 0.1 / math.log2(3)) / 2)
    assert got["mrr@2"] == pytest.approx((0.5 + 0.15 + 0.8 + 0.05) / 2)


def test_masked_items_cannot_be_ranked_and_their_mass_is_lost():
    probs = np.array([[0.5, 0.3, 0.2]])
    got = expected_metrics(probs, seen=np.array([[True, False, False]]), k=1)
    assert got["hr@1"] == pytest.approx(0.3)
    assert got["ndcg@1"] == pytest.approx(0.3)


def tiny_world():
    cfg = ShopConfig(users=2, items=4, categories=2, successors=1, p_next=0.5, p_taste=0.3, events=10)
    shop = build_shop(cfg, np.random.default_rng(0))
    shop.category[:] = [0, 0, 1, 1]
    shop.pop_global[:] = [0.4, 0.1, 0.3, 0.2]
    shop.pop_in_category[:] = [0.8, 0.2, 0.6, 0.4]
    shop.successors[:, 0] = [1, 2, 3, 0]
    return cfg, shop


def test_next_item_law_of_a_tiny_shop_by_hand():
    cfg, shop = tiny_world()
    taste = np.array([[1.0, 0.0]], dtype=np.float32)
    # previous item 0 (successor 1), no last-item exclusion:
    # p(j) = 0.5*[j==1] + 0.3*taste[cat j]*pop_in_cat(j) + 0.2*pop(j)
    probs = next_item_probs(shop, cfg, taste, np.array([0]), np.array([-1]))[0]
    expected = np.array([0.3 * 0.8 + 0.2 * 0.4, 0.5 + 0.3 * 0.2 + 0.2 * 0.1, 0.2 * 0.3, 0.2 * 0.2])
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    # the user's last item (1) cannot repeat: its mass is redrawn, i.e. the rest renormalised
    probs = next_item_probs(shop, cfg, taste, np.array([0]), np.array([1]))[0]
    np.testing.assert_allclose(probs, np.where(np.arange(4) == 1, 0, expected) / (1 - expected[1]), atol=1e-6)
    # at a session start there is no previous item: the successor share goes to taste
    probs = next_item_probs(shop, cfg, taste, np.array([-1]), np.array([-1]))[0]
    np.testing.assert_allclose(probs, 0.8 * np.array([0.8, 0.2, 0, 0]) + 0.2 * shop.pop_global, atol=1e-6)


def test_the_sampler_draws_from_the_law_the_oracle_uses():
    cfg = ShopConfig(users=1, items=30, categories=4, successors=3)
    rng = np.random.default_rng(1)
    shop = build_shop(cfg, rng)
    n = 200_000
    taste = np.repeat(shop.taste[:1], n, axis=0)
    prev, last = np.full(n, 5), np.full(n, 7)
    draws = sample_next_items(shop, cfg, rng, taste, prev, last)
    law = next_item_probs(shop, cfg, taste[:1], prev[:1], last[:1])[0]
    freq = np.bincount(draws, minlength=cfg.items) / n
    assert freq[7] == 0
    np.testing.assert_allclose(freq, law, atol=4 * np.sqrt(law.max() / n))
