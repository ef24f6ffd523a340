"""The simulated users of bench/simulate.py: the world they start from is the one generation ended
in, and a step clicks from the list exactly when the law's next item is on it."""

import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rtrec.generate import ShopConfig, generate_world

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.simulate import World, user_step

SMALL = ShopConfig(users=200, items=80, events=6_000, dirty_rate=0.0, categories=5)


def test_the_world_ends_where_the_event_log_does(tmp_path):
    manifest, shop, last = generate_world(SMALL, tmp_path / "landing")
    events = pq.read_table(sorted((tmp_path / "landing" / "events").glob("*.parquet")))
    views = events.filter(pc.equal(events["event_type"], "view")).sort_by([("ts", "ascending")])
    latest = dict(zip(views["user_id"].to_pylist(), views["item_id"].to_pylist()))  # the last view wins
    assert {f"u{u}": f"i{i}" for u, i in enumerate(last) if i >= 0} == latest
    assert manifest["clean_events"] == SMALL.events and shop.taste.shape == (SMALL.users, SMALL.categories)


def test_a_step_clicks_exactly_what_the_list_holds(tmp_path):
    _, shop, last = generate_world(SMALL, tmp_path / "landing")
    world = World(SMALL, shop, last)
    rng = np.random.default_rng(0)
    everything = [f"i{j}" for j in range(SMALL.items)]
    for _ in range(50):  # every item shown: the law's whole mass, and always a click from the list
        x, mass, events = user_step(world, rng, 3, -1, everything, "rid")
        assert abs(mass - 1.0) < 1e-9 and (events[0]["event_type"], events[0]["user_id"]) == ("click", "u3")
        assert {(e["item_id"], e["request_id"]) for e in events} == {(f"i{x}", "rid")}  # funnel steps too
    x, mass, events = user_step(world, rng, 3, -1, [], "rid")  # nothing shown: found by themselves
    assert mass == 0 and len(events) == 1 and events[0]["event_type"] == "view" and "request_id" not in events[0]

    # over many steps, clicks from a list come at the rate of the law's mass on it
    shown = [f"i{j}" for j in np.argsort(-world.next_item_probs(3, -1))[:10]]
    steps = [user_step(world, rng, 3, -1, shown, "rid") for _ in range(2_000)]
    rate = np.mean([events[0]["event_type"] == "click" for _, _, events in steps])
    assert abs(rate - steps[0][1]) < 0.04
