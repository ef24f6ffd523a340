"""Simulated users close the loop: two A/B experiments on the running API, without real traffic.

    python bench/simulate.py [--data-dir DIR] [--sessions 1500] [--users 2000] [--items 500] [--events 100000]
                             [--epochs 30] [--port 8097] [--seed 42]

The users come from the generated shop's own law (rtrec.generate), picked up where generation left
them: their final taste and their last item. At each step of a session a user asks for 10
recommendations and draws their true next item from the exact law (taste, the session's previous
item, their last item). Shown, it is clicked from the list (then added to the cart and bought with
the item's funnel odds), all with the list's request id; not shown, the user goes to it by
themselves: a view without a request id. Two experiments run on `rtrec serve --workers 2`:

- A: MostPop (the catalog's popularity list) vs the current model, all users live;
- B: the current model in both arms; control users are frozen (their session's events reach the API
  only when the session ends, so during it they are served the state from before it, as from a
  nightly snapshot) and treatment users live.

Every CTR and interval printed comes from `rtrec experiment report`, i.e. the API's impression and
feedback logs. The simulator's own counts, and the law's expected CTR of the lists it was shown
(the probability that a list holds the next item), are printed beside them as a cross-check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from bench.common import prepare, start_api
from model.registry import Registry
from rtrec.generate import Shop, ShopConfig, generate_world, next_item_probs
from rtrec.settings import get_settings

RTREC = str(Path(sys.executable).with_name("rtrec"))
K = 10
EXTRA_STEPS_MEAN = 3.0  # a session is 1 + Poisson(3) steps: the generated shop's mean of 4 ...
MAX_STEPS = 8  # ... cut shorter than the shop's 20, to keep the run short
CONCURRENCY = 8  # sessions in flight: enough to keep 2 API workers busy on 2 cores
MIN_INTERACTIONS = 3  # sessions go to users with some history (the marts' n_interactions)
TICK_SECONDS = 1.0  # RTREC_SERVING_TICK_SECONDS of the API: how soon workers see an experiment
WORLD_CHECK_USERS = 20


@dataclass
class World:
    """The simulated users: the shop's law as generation left it."""

    cfg: ShopConfig
    shop: Shop  # shop.taste: each user's taste, drifting on at every session as in generation
    last: np.ndarray  # [U] each user's last item (-1: none)

    def begin_session(self, u: int, rng: np.random.Generator) -> None:
        """Tastes drift a little at every session, as in `rtrec.generate._simulate_day`."""
        drift = rng.dirichlet(np.full(self.cfg.categories, self.cfg.taste_concentration)).astype(np.float32)
        self.shop.taste[u] = (1 - self.cfg.drift) * self.shop.taste[u] + self.cfg.drift * drift

    def next_item_probs(self, u: int, prev: int) -> np.ndarray:
        """[M] the exact law of user u's next item."""
        taste, last = self.shop.taste[u : u + 1], self.last[u : u + 1]
        return next_item_probs(self.shop, self.cfg, taste, np.array([prev]), last)[0]


@dataclass
class Tally:
    """The simulator's own counts for one arm: a cross-check of the API's report."""

    sessions: int = 0
    requests: int = 0
    clicked: int = 0
    mass: float = 0.0  # sum over requests of the law's probability that the list holds the next item
    first_requests: int = 0  # the same two for the first request of each session (no previous item yet)
    first_mass: float = 0.0
    arm_changes: int = 0  # sessions whose arm changed midway (assignment is meant to be sticky)


def event(user: str, item: str, kind: str, request_id: str | None = None, value: float | None = None) -> dict:
    body = {"event_id": f"sim-{uuid.uuid4().hex}", "user_id": user, "item_id": item, "event_type": kind}
    if request_id is not None:
        body["request_id"] = request_id
    if value is not None:
        body["value"] = value
    return body


def user_step(
    world: World, rng: np.random.Generator, u: int, prev: int, shown: list[str], request_id: str
) -> tuple[int, float, list[dict]]:
    """One step of user u, shown `shown` (item ids): their true next item x drawn from the law, the
    law's probability that `shown` holds it, and the events they make. Does not move the world."""
    probs = world.next_item_probs(u, prev)
    x = int(rng.choice(len(probs), p=probs))
    mass = float(probs[[int(item[1:]) for item in shown]].sum())  # item ids are i<index>
    user, item = f"u{u}", f"i{x}"
    if item not in shown:
        return x, mass, [event(user, item, "view")]  # found by themselves: nothing to attribute
    events = [event(user, item, "click", request_id)]
    if rng.random() < world.shop.cart_p[x]:
        events.append(event(user, item, "add_to_cart", request_id))
        if rng.random() < world.shop.buy_p[x]:
            events.append(event(user, item, "purchase", request_id, float(world.shop.price[x])))
    return x, mass, events


async def post_events(client: httpx.AsyncClient, events: list[dict]) -> None:
    reply = await client.post("/v1/events", json={"events": events})
    if reply.status_code != 202:
        raise RuntimeError(f"POST /v1/events: {reply.status_code} {reply.text[:300]}")


async def session(
    client: httpx.AsyncClient,
    world: World,
    rng: np.random.Generator,
    u: int,
    frozen_arm: str | None,
    tallies: dict[str, Tally],
) -> None:
    """One session of user u. A user in `frozen_arm` holds their events back until the session ends."""
    world.begin_session(u, rng)
    steps = min(1 + int(rng.poisson(EXTRA_STEPS_MEAN)), MAX_STEPS)
    prev, held, first_arm, changed = -1, [], None, False
    for step in range(steps):
        reply = await client.get(f"/v1/recommendations/u{u}", params={"k": K})
        reply.raise_for_status()
        body = reply.json()
        arm = body.get("arm")
        if first_arm is None:
            first_arm = arm
            tallies[arm].sessions += 1
        changed |= arm != first_arm
        shown = [item["item_id"] for item in body["items"]]
        x, mass, events = user_step(world, rng, u, prev, shown, body["request_id"])
        tally = tallies[arm]
        tally.requests += 1
        tally.clicked += events[0]["event_type"] == "click"
        tally.mass += mass
        if step == 0:
            tally.first_requests += 1
            tally.first_mass += mass
        if first_arm == frozen_arm:
            held += events
        else:
            await post_events(client, events)  # before the next GET: the API's state is live
        prev = world.last[u] = x
    tallies[first_arm].arm_changes += changed
    if held:
        await post_events(client, held)


async def simulate(
    url: str, headers: dict, world: World, users: np.ndarray, sessions: int, seed: list[int], frozen_arm: str | None
) -> dict[str, Tally]:
    """`sessions` sessions of users drawn uniformly from `users` (without replacement when there are
    enough), CONCURRENCY at a time; a user's sessions never overlap."""
    chosen = np.random.default_rng(seed).choice(users, size=sessions, replace=sessions > len(users))
    todo = iter(enumerate(chosen.tolist()))
    locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
    tallies: dict[str, Tally] = defaultdict(Tally)
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as client:

        async def worker() -> None:
            for index, u in todo:  # shared iterator: each session is taken once
                async with locks[u]:
                    rng = np.random.default_rng([*seed, index])  # a session's draws depend on its index only
                    await session(client, world, rng, u, frozen_arm, tallies)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return dict(tallies)


def load_world(cfg: ShopConfig, data_dir: Path) -> World:
    """Generate the same shop again, off to the side, and keep the world it ends in; check that it is
    the data set the API serves (same manifest, catalog ids i<index>)."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest, shop, last = generate_world(cfg, Path(tmp) / "landing")
    landing = data_dir / "landing"
    if json.loads(json.dumps(manifest)) != json.loads((landing / "manifest.json").read_text()):
        raise RuntimeError("the regenerated shop differs from the data set that was prepared")
    items = pq.read_table(landing / "items.parquet", columns=["item_id"]).column("item_id").to_pylist()
    if items != [f"i{j}" for j in range(cfg.items)]:
        raise RuntimeError("catalog item ids are not i<index>")
    return World(cfg, shop, last)


def users_with_history(marts_dir: Path, cfg: ShopConfig) -> np.ndarray:
    table = pq.read_table(marts_dir / "user_features.parquet", columns=["user_id", "n_interactions"])
    ids = table.filter(pc.greater_equal(table["n_interactions"], MIN_INTERACTIONS)).column("user_id").to_pylist()
    users = np.array(sorted(int(u[1:]) for u in ids if u.startswith("u") and u[1:].isdigit()))
    return users[users < cfg.users]


def check_world(url: str, headers: dict, world: World, users: np.ndarray) -> tuple[int, int]:
    """(agree, checked): users whose last item in the API's online state is the world's last item."""
    agree = 0
    for u in users[:: max(1, len(users) // WORLD_CHECK_USERS)][:WORLD_CHECK_USERS]:
        recent = httpx.get(f"{url}/v1/users/u{u}/history", headers=headers, timeout=10).json()["recent_items"]
        agree += bool(recent) and recent[-1] == f"i{world.last[u]}"
    return agree, min(len(users), WORLD_CHECK_USERS)


def start_api_on_free_port(env: dict, port: int, log: Path) -> subprocess.Popen:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        raise RuntimeError(f"something already answers on port {port}")
    except httpx.TransportError:
        return start_api(env, port, log)


def cli(env: dict, *args: str) -> str:
    done = subprocess.run([RTREC, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"rtrec {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_for_arms(url: str) -> None:
    """Until a GET comes back with an arm, then one more tick for the other worker. The probe is a user
    outside the shop, whose one list in an arm is never clicked (one request off that arm's CTR)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/v1/recommendations/sim-probe", params={"k": K}, timeout=10).json().get("arm"):
            time.sleep(2 * TICK_SECONDS)
            return
        time.sleep(0.25)
    raise RuntimeError("the API did not pick up the experiment")


@dataclass
class Outcome:
    name: str
    report: dict
    tallies: dict[str, Tally]
    frozen_arm: str | None
    seconds: float


@dataclass
class Loop:
    """What the experiments drive: the API (and the CLI's environment) and the simulated users."""

    env: dict
    url: str
    headers: dict
    world: World
    users: np.ndarray  # who sessions are drawn among
    sessions: int  # per experiment


def experiment(loop: Loop, name: str, control: str, treatment: str, frozen_arm: str | None, seed: list[int]) -> Outcome:
    """Start an experiment, run the sessions, read its report from the API's logs, stop it."""
    cli(loop.env, "experiment", "start", "--control", control, "--treatment", treatment, "--share", "0.5")
    try:
        wait_for_arms(loop.url)
        start = time.perf_counter()
        tallies = asyncio.run(simulate(loop.url, loop.headers, loop.world, loop.users, loop.sessions, seed, frozen_arm))
        seconds = time.perf_counter() - start
        report = json.loads(cli(loop.env, "experiment", "report", "--json"))
    finally:
        cli(loop.env, "experiment", "stop")
    return Outcome(name, report, tallies, frozen_arm, seconds)


def what(outcome: Outcome, arm: dict) -> str:
    if arm["version"] == "popular":
        return "MostPop"
    return "model frozen" if arm["arm"] == outcome.frozen_arm else "model live"


def ci(ctr: float, low: float, high: float) -> str:
    return f"{ctr:.3f} [{low:.3f}, {high:.3f}]"


def verdict(outcome: Outcome, better: str, worse: str) -> str:
    """Whether the `better` arm's interval lies wholly above the `worse` arm's."""
    arms = {what(outcome, arm): arm for arm in outcome.report["arms"]}
    hi, lo = arms[better], arms[worse]
    holds = hi["ctr_low"] > lo["ctr_high"]
    diff = outcome.report["difference"]
    mark = "[green]holds[/green]" if holds else "[red]does not hold[/red]"
    return (
        f"{outcome.name}: {better} beats {worse} with disjoint 95% intervals: {mark} "
        f"({ci(hi['ctr'], hi['ctr_low'], hi['ctr_high'])} vs {ci(lo['ctr'], lo['ctr_low'], lo['ctr_high'])}; "
        f"treatment - control {ci(diff['ctr'], diff['low'], diff['high'])})"
    )


def law_ctr(tally: Tally) -> str:
    """The law's expected CTR of the lists the arm showed: over all requests, over the first of each
    session, over the later ones (where the session's previous item is known)."""
    later = tally.requests - tally.first_requests
    rates = (
        tally.mass / max(tally.requests, 1),
        tally.first_mass / max(tally.first_requests, 1),
        (tally.mass - tally.first_mass) / max(later, 1),
    )
    return " / ".join(f"{rate:.3f}" for rate in rates)


def show(console: Console, outcomes: list[Outcome], title: str) -> None:
    table = Table(
        "experiment",
        "arm",
        "version",
        "what",
        "users",
        "requests",
        "CTR [95% CI]",
        "purchases",
        "sim requests",
        "sim CTR",
        "law's CTR: all / 1st / later",
        title=title,
    )
    for outcome in outcomes:
        for arm in outcome.report["arms"]:
            tally = outcome.tallies.get(arm["arm"], Tally())
            table.add_row(
                outcome.name,
                arm["arm"],
                arm["version"],
                what(outcome, arm),
                f"{arm['users']:,}" if "users" in arm else "",
                f"{arm['requests']:,}",
                ci(arm["ctr"], arm["ctr_low"], arm["ctr_high"]),
                f"{arm['purchases']:,}",
                f"{tally.requests:,}",
                f"{tally.clicked / max(tally.requests, 1):.3f}",
                law_ctr(tally),
            )
    console.print(table)
    changes = sum(t.arm_changes for o in outcomes for t in o.tallies.values())
    if changes:
        console.print(f"[yellow]{changes} sessions saw their arm change midway[/yellow]")


def run(args: argparse.Namespace, data_dir: Path, console: Console) -> None:
    cfg = ShopConfig(users=args.users, items=args.items, events=args.events, seed=args.seed)
    start = time.perf_counter()
    with console.status("generate -> dbt -> Feast -> train"):
        prepare(data_dir, cfg, train_preset="cpu", epochs=args.epochs)
        world = load_world(cfg, data_dir)
    settings = get_settings()
    version = Registry(settings.models_dir).current()
    if version is None:
        raise RuntimeError("no current model after training")
    users = users_with_history(settings.marts_dir, cfg)
    console.print(
        f"prepared in {time.perf_counter() - start:.0f} s: model {version}, "
        f"{len(users):,} users with >= {MIN_INTERACTIONS} interactions"
    )
    token = settings.api_token
    loop = Loop(
        env={**os.environ, "RTREC_DATA_DIR": str(data_dir), "RTREC_SERVING_TICK_SECONDS": str(TICK_SECONDS)},
        url=f"http://127.0.0.1:{args.port}",
        headers={"Authorization": f"Bearer {token.get_secret_value()}"} if token else {},
        world=world,
        users=users,
        sessions=args.sessions,
    )
    api = start_api_on_free_port(loop.env, args.port, data_dir / "serve.log")
    try:
        agree, checked = check_world(loop.url, loop.headers, world, users)
        console.print(f"world check: the API's last item is the simulated user's for {agree}/{checked} users")
        outcomes = []
        with console.status("experiment A: MostPop vs the model"):
            outcomes.append(experiment(loop, "A", "popular", version, None, [args.seed, 1]))
        console.print(f"A: {args.sessions} sessions in {outcomes[-1].seconds:.0f} s")
        with console.status("experiment B: the model frozen vs live"):
            outcomes.append(experiment(loop, "B", version, version, "control", [args.seed, 2]))
        console.print(f"B: {args.sessions} sessions in {outcomes[-1].seconds:.0f} s")
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(30)
    title = f"simulated users: {args.sessions} sessions per experiment, k={K}, {cfg.users:,} users, {cfg.items:,} items"
    show(console, outcomes, title)
    console.print(verdict(outcomes[0], "model live", "MostPop"))
    console.print(verdict(outcomes[1], "model live", "model frozen"))
    console.print(f"total {time.perf_counter() - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="an empty or new folder (default: a temporary one)")
    parser.add_argument("--sessions", type=int, default=1_500, help="per experiment (at 600, A can overlap)")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=30, help="fewer leave the model close to MostPop")
    parser.add_argument("--port", type=int, default=8097)
    parser.add_argument("--seed", type=int, default=42, help="of the shop and of the simulated sessions")
    args = parser.parse_args()
    console = Console(width=180)
    if args.data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="rtrec-simulate-"))
        try:
            run(args, data_dir, console)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        return
    if args.data_dir.exists() and any(args.data_dir.iterdir()):
        parser.error(f"--data-dir {args.data_dir} is not empty: a kept feedback log would change the data set")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    run(args, args.data_dir.resolve(), console)


if __name__ == "__main__":
    main()
