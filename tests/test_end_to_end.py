"""generate -> dbt -> Feast -> train -> promote -> serve -> feedback -> a changed recommendation,
through the real nightly flow, twice: the second run works incrementally and decides on promotion.
On the way, the API agrees with the evaluation harness: for the same history and time, the same top-10."""

from datetime import UTC, datetime

import httpx

from flows.nightly import nightly
from model.baselines import ease_weights, training_inputs
from model.data import gap_bucket, load_marts
from model.ease import Ease
from model.inference import Recommender
from model.metrics import mask_items
from model.registry import Registry
from model.scorer import recommender_scorer
from rtrec.generate import ShopConfig, generate
from rtrec.settings import get_settings
from tests.http_server import AUTH, Server


def top10(url, user):
    return [i["item_id"] for i in httpx.get(f"{url}/v1/recommendations/{user}").json()["items"]]


def harness_top10(data, recommender, user, last=None):
    """The harness's top-10 for the user's whole history (every input masked), at the time now; with
    `last`, for only the last `last` items of it (all of it still masked)."""
    at = data.user_ids.index(user)
    idle = datetime.now(UTC).timestamp() - data.times[at][-1]
    items, events = data.items[at][-last if last else 0 :], data.events[at][-last if last else 0 :]
    scores = recommender_scorer(recommender, data)([items], [events], gap_bucket([idle]))
    top = mask_items(scores, [data.items[at]]).topk(10, dim=1).indices[0].tolist()
    return [data.vocab.item_ids[i - 1] for i in top]


def test_nightly_then_serving_then_feedback_then_nightly_again(data_dir, prefect_harness):
    manifest = generate(
        ShopConfig(users=400, items=150, events=40_000, dirty_rate=0.02, categories=6), data_dir / "landing"
    )
    first = nightly(preset_name="tiny", epochs=6)
    assert first["etl"]["events_in"] == manifest["total_rows"]
    assert first["etl"]["accepted"] == manifest["clean_events"]
    assert first["train"].promoted and first["train"].current_version is None

    settings, data = get_settings(), load_marts(get_settings().marts_dir)
    registry = Registry(data_dir / "models")
    # the shop's next item follows the last one, so training keeps EASE out (model/ease.py); served,
    # it reads the whole seen set, not only the recent items: the version gets a strong one here
    assert first["train"].metrics["ease"]["weight"] == 0
    inputs = training_inputs(data, "validation")
    Ease(ease_weights(inputs, data.vocab.n_items, 200.0).numpy(), 50.0, 200.0).save(registry.path(registry.current()))
    server = Server(data_dir, workers=2)
    try:
        recommender = Recommender.load(registry.path(registry.current()))
        longer = [u for u, items in zip(data.user_ids, data.items) if len(items) > settings.max_recent_items]
        assert len(longer) >= 10  # histories longer than the online recent list: seen items beyond it stay out
        recent_only = 0
        for sampled in longer[:10]:
            assert top10(server.url, sampled) == harness_top10(data, recommender, sampled)
            recent_only += harness_top10(data, recommender, sampled, settings.max_recent_items) != top10(
                server.url, sampled
            )
        assert recent_only  # EASE over the recent items alone would have answered otherwise

        user = "u3"
        before = top10(server.url, user)
        fresh = [f"i{n}" for n in range(150) if f"i{n}" not in before][:6]  # clicks outside today's list
        events = [{"user_id": user, "item_id": i, "event_type": "click"} for i in fresh]
        assert httpx.post(f"{server.url}/v1/events", json={"events": events}, headers=AUTH).json()["accepted"] == 6
        after = top10(server.url, user)
        assert after != before
        assert not set(fresh) & set(after)
    finally:
        server.kill()

    get_settings.cache_clear()
    second = nightly(preset_name="tiny", epochs=6)
    assert second["etl"]["events_in"] == 6  # only the new feedback events were checked
    assert second["etl"]["accepted"] == 6
    report = second["train"]
    assert report.current_version == first["train"].version and report.current_metrics is not None
    decided = report.version if report.promoted else first["train"].version
    assert Registry(data_dir / "models").current() == decided
