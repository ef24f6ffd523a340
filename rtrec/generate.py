"""A synthetic shop from a known generative process: the embedded sample data set.

The process, one session per active user per day:
- each user has a taste over categories that drifts a little at every session;
- item popularity is heavy-tailed (Zipf) globally and within each category;
- each category is cut into collections (product lines) of about ``collection_size`` items, named
  in the titles and descriptions, so an item's text tells its category and what tends to follow it;
- each interaction picks the next item from a mixture: with probability ``p_next`` one of the
  ``successors`` items that follow the previous item of the session (a sequence signal that
  popularity cannot see; most successors are of the item's collection), with ``p_taste`` an item of a
  category drawn from the taste, otherwise a globally popular item; an immediate repeat of the
  user's last item is redrawn;
- every interaction is a view, which funnels on to click, add_to_cart and purchase.

Because the law of the next item is known, the oracle ceiling for the held-out last interaction of
each user is computed exactly (see :mod:`rtrec.oracle`). Days are simulated in order and written as
they are made, so memory stays bounded and the event log is in time order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rtrec.landing import (
    EVENT_SCHEMA,
    ITEM_SCHEMA,
    USER_SCHEMA,
    fsync_dir,
    reset_batch_data,
    write_json,
    write_parquet_atomically,
)
from rtrec.oracle import expected_metrics

CATEGORIES = (
    "books",
    "electronics",
    "garden",
    "toys",
    "kitchen",
    "sports",
    "beauty",
    "music",
    "games",
    "fashion",
    "shoes",
    "office",
    "pets",
    "baby",
    "auto",
    "tools",
    "grocery",
    "health",
    "outdoor",
    "home",
    "jewelry",
    "movies",
    "art",
    "travel",
)
ADJECTIVES = ("classic", "compact", "deluxe", "eco", "smart", "vintage", "pro", "mini", "bold", "soft")
# collection names: a colour and an animal, 24 x 24 of them
COLOURS = (
    "amber",
    "azure",
    "black",
    "bronze",
    "copper",
    "coral",
    "crimson",
    "cyan",
    "emerald",
    "golden",
    "gray",
    "indigo",
    "ivory",
    "jade",
    "lemon",
    "lilac",
    "magenta",
    "maroon",
    "navy",
    "olive",
    "orange",
    "pearl",
    "ruby",
    "silver",
)
ANIMALS = (
    "badger",
    "bear",
    "beaver",
    "bison",
    "cobra",
    "condor",
    "crane",
    "dolphin",
    "eagle",
    "falcon",
    "fox",
    "gecko",
    "heron",
    "jaguar",
    "koala",
    "lynx",
    "moose",
    "otter",
    "owl",
    "panda",
    "raven",
    "salmon",
    "tiger",
    "wolf",
)
FUNNEL = ("view", "click", "add_to_cart", "purchase")
DIRTY_KINDS = ("duplicate_event_id", "null_id", "unknown_event_type", "malformed_ts", "future_ts", "unknown_item")
BAD_EVENT_TYPES = ("wishlist", "share", "hover")
BAD_TIMESTAMPS = ("not-a-timestamp", "2026-13-01T00:00:00Z", "2026-02-30T25:61:00Z", "31/12/2026 10:00")
ROWS_PER_FILE = 2_000_000
MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class ShopConfig:
    users: int = 5_000
    items: int = 2_000
    events: int = 200_000
    seed: int = 42
    dirty_rate: float = 0.01
    categories: int = 20
    start: str = "2026-06-01"
    days: int = 60  # nominal span; more days are simulated if activity falls short of `events`
    p_next: float = 0.45
    p_taste: float = 0.35
    successors: int = 8
    successor_same_collection: float = 0.8
    collection_size: int = 10
    drift: float = 0.15
    taste_concentration: float = 0.3
    mean_session_length: float = 4.0
    max_session_length: int = 20
    oracle_users: int = 5_000
    oracle_min_interactions: int = 3  # users the evaluation keeps: train, validation and test

    def __post_init__(self) -> None:
        checks = {
            "users": self.users >= 1,
            "items": self.items >= max(self.successors + 2, self.categories),
            "events": self.events >= 1,
            "dirty_rate": 0.0 <= self.dirty_rate < 1.0,
            "categories": 1 <= self.categories <= len(CATEGORIES),
            "p_next": self.p_next >= 0.0 and self.p_next + self.p_taste <= 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid generator setting {name}={getattr(self, name)!r}")


@dataclass
class Shop:
    """The fixed world: catalog, users and the parameters of the next-item law."""

    category: np.ndarray  # [M] category index of each item
    price: np.ndarray  # [M]
    pop_global: np.ndarray  # [M] global popularity law, sums to 1
    pop_cdf: np.ndarray  # [M] cumulative of pop_global, for sampling
    pop_in_category: np.ndarray  # [M] popularity within the item's category, sums to 1 per category
    cat_cdf: np.ndarray  # [M] category index + cumulative within-category law, items sorted by category
    cat_order: np.ndarray  # [M] item index for each position of cat_cdf
    collection: np.ndarray  # [M] collection index of each item (collections never span categories)
    successors: np.ndarray  # [M, K] the items that may follow each item
    click_p: np.ndarray  # [M] funnel probabilities per item
    cart_p: np.ndarray
    buy_p: np.ndarray
    activity: np.ndarray  # [U] share of daily sessions each user gets
    taste: np.ndarray  # [U, C] current taste over categories (drifts)


def build_shop(cfg: ShopConfig, rng: np.random.Generator) -> Shop:
    m, c = cfg.items, cfg.categories
    category = np.concatenate([np.arange(c), rng.integers(0, c, m - c)])  # no category left empty
    zipf = 1.0 / np.arange(1, m + 1) ** 1.1
    pop_global = zipf[rng.permutation(m)]
    pop_global /= pop_global.sum()
    cat_mass = np.bincount(category, weights=pop_global, minlength=c)
    pop_in_category = pop_global / cat_mass[category]
    cat_order = np.lexsort((np.arange(m), category))
    cat_cdf = category[cat_order] + np.concatenate(
        [np.cumsum(pop_in_category[cat_order][category[cat_order] == k]) for k in range(c)]
    )
    # collections: consecutive runs of each category's items in cat_order (no random draw, so the
    # rest of the world is what the same seed always made)
    sorted_category = category[cat_order]
    within = np.arange(m) - np.searchsorted(sorted_category, sorted_category)  # rank inside the category
    collection = np.empty(m, dtype=np.int64)
    collection[cat_order] = np.unique(sorted_category * m + within // cfg.collection_size, return_inverse=True)[1]
    # successors mostly stay in the item's collection, as "viewed next" does in real shops
    size = np.bincount(collection)
    first = np.concatenate([[0], np.cumsum(size)[:-1]])
    same = cat_order[
        first[collection][:, None] + (rng.random((m, cfg.successors)) * size[collection][:, None]).astype(np.int64)
    ]
    anywhere = (np.arange(m)[:, None] + rng.integers(1, m, (m, cfg.successors))) % m
    successors = np.where(rng.random((m, cfg.successors)) < cfg.successor_same_collection, same, anywhere)
    quality = rng.beta(2.0, 5.0, m)
    activity = rng.lognormal(0.0, 1.0, cfg.users)
    return Shop(
        category=category,
        price=np.round(rng.lognormal(3.0 + 0.1 * category, 0.5), 2),
        pop_global=pop_global,
        pop_cdf=np.cumsum(pop_global),
        pop_in_category=pop_in_category,
        cat_cdf=np.minimum(cat_cdf, category[cat_order] + 1 - 1e-12),
        cat_order=cat_order,
        collection=collection,
        successors=successors,
        click_p=0.2 + 0.5 * quality,
        cart_p=0.15 + 0.4 * quality,
        buy_p=0.3 + 0.4 * quality,
        activity=activity / activity.sum(),
        taste=rng.dirichlet(np.full(c, cfg.taste_concentration), cfg.users).astype(np.float32),
    )


def next_item_probs(shop: Shop, cfg: ShopConfig, taste: np.ndarray, prev: np.ndarray, last: np.ndarray) -> np.ndarray:
    """[B, M] exact law of the next item given taste [B, C], the session's previous item and the
    user's last item (both -1 when absent)."""
    b = len(prev)
    has_prev = prev >= 0
    p_taste = np.where(has_prev, cfg.p_taste, cfg.p_taste + cfg.p_next)[:, None]
    probs = p_taste * taste[:, shop.category] * shop.pop_in_category[None, :]
    probs += (1.0 - cfg.p_next - cfg.p_taste) * shop.pop_global[None, :]
    rows = np.repeat(np.arange(b)[has_prev], cfg.successors)
    np.add.at(probs, (rows, shop.successors[prev[has_prev]].ravel()), cfg.p_next / cfg.successors)
    has_last = last >= 0
    probs[np.arange(b)[has_last], last[has_last]] = 0.0  # immediate repeats are redrawn
    return probs / probs.sum(axis=1, keepdims=True)


def sample_next_items(
    shop: Shop, cfg: ShopConfig, rng: np.random.Generator, taste: np.ndarray, prev: np.ndarray, last: np.ndarray
) -> np.ndarray:
    """Draw from :func:`next_item_probs` without building the [B, M] matrix."""
    out = np.empty(len(prev), dtype=np.int64)
    todo = np.arange(len(prev))
    while len(todo):
        r = rng.random(len(todo))
        p_next = np.where(prev[todo] >= 0, cfg.p_next, 0.0)
        via_next = r < p_next
        via_taste = ~via_next & (r < cfg.p_next + cfg.p_taste)
        via_pop = ~via_next & ~via_taste
        items = np.empty(len(todo), dtype=np.int64)
        items[via_next] = shop.successors[prev[todo[via_next]], rng.integers(0, cfg.successors, via_next.sum())]
        cum = np.cumsum(taste[todo[via_taste]], axis=1)
        cats = (cum < rng.random(len(cum))[:, None] * cum[:, -1:]).sum(axis=1)
        cats = np.minimum(cats, cfg.categories - 1)
        pos = np.searchsorted(shop.cat_cdf, cats + rng.random(len(cats)))
        items[via_taste] = shop.cat_order[np.minimum(pos, len(shop.cat_order) - 1)]
        items[via_pop] = np.minimum(np.searchsorted(shop.pop_cdf, rng.random(via_pop.sum())), cfg.items - 1)
        out[todo] = items
        todo = todo[items == last[todo]]
    return out


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pa.array(numbers).cast(pa.string()), "")


class _EventWriter:
    """Appends event tables to parquet files, starting a new file every ROWS_PER_FILE rows. A file is
    written under a temporary name and renamed into place once complete: the landing zone never
    holds part of a batch file."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.writer, self.rows_in_file, self.files = directory, None, 0, []

    def write(self, table: pa.Table) -> None:
        if self.writer is None or self.rows_in_file >= ROWS_PER_FILE:
            self.close()
            path = self.directory / f"events-{len(self.files):05d}.parquet.tmp"
            self.writer, self.rows_in_file = pq.ParquetWriter(path, EVENT_SCHEMA), 0
            self.files.append(path.name.removesuffix(".tmp"))
        self.writer.write_table(table)
        self.rows_in_file += table.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            done = self.directory / self.files[-1]
            os.replace(done.with_name(done.name + ".tmp"), done)
            fsync_dir(self.directory)


@dataclass
class _OracleTrack:
    """State before the last interaction of a sample of users, kept to compute the oracle."""

    users: np.ndarray  # sorted user indices in the sample
    count: np.ndarray  # interactions so far, per sampled user
    taste: np.ndarray  # [S, C] taste at the last interaction
    prev: np.ndarray  # session's previous item at the last interaction
    last: np.ndarray  # user's last item before the last interaction
    history: list  # per sampled user: items before the last interaction, in order
    target: np.ndarray


def _simulate_day(
    shop: Shop, cfg: ShopConfig, rng: np.random.Generator, day: int, sessions: int, last_item: np.ndarray
):
    """One day of sessions: interactions (user, item, time, prev, last-before) in time order."""
    users = np.unique(rng.choice(cfg.users, size=sessions, p=shop.activity))
    n = len(users)
    drift = rng.dirichlet(np.full(cfg.categories, cfg.taste_concentration), n).astype(np.float32)
    shop.taste[users] = (1 - cfg.drift) * shop.taste[users] + cfg.drift * drift
    length = np.minimum(1 + rng.poisson(cfg.mean_session_length - 1, n), cfg.max_session_length)
    clock = day * MS_PER_DAY + rng.integers(0, MS_PER_DAY - 3_600_000, n)
    prev = np.full(n, -1, dtype=np.int64)
    parts = []
    for step in range(int(length.max())):
        live = np.flatnonzero(length > step)
        u = users[live]
        before = last_item[u].copy()
        items = sample_next_items(shop, cfg, rng, shop.taste[u], prev[live], before)
        parts.append((u, items, clock[live].copy(), prev[live].copy(), before))
        prev[live] = items
        last_item[u] = items
        clock[live] += 30_000 + rng.exponential(45_000, len(live)).astype(np.int64)
    cols = [np.concatenate(col) for col in zip(*parts)]
    order = np.lexsort((cols[0], cols[2]))
    return [col[order] for col in cols]


def _funnel_events(shop: Shop, rng: np.random.Generator, users, items, times) -> tuple[np.ndarray, ...]:
    """Expand interactions into view/click/cart/purchase events, returned in time order.

    Funnel steps come 1-9 s apart, always before the next interaction (at least 30 s later)."""
    n = len(items)
    click = rng.random(n) < shop.click_p[items]
    cart = click & (rng.random(n) < shop.cart_p[items])
    buy = cart & (rng.random(n) < shop.buy_p[items])
    offsets = np.cumsum(rng.integers(1_000, 9_000, (n, 3)), axis=1)
    idx = [np.arange(n), *(np.flatnonzero(mask) for mask in (click, cart, buy))]
    kind = np.concatenate([np.full(len(ix), k, dtype=np.int8) for k, ix in enumerate(idx)])
    inter = np.concatenate(idx)
    ts = times[inter] + np.concatenate([np.zeros(n, dtype=np.int64), *(offsets[ix, k] for k, ix in enumerate(idx[1:]))])
    order = np.lexsort((kind, users[inter], ts))
    return inter[order], kind[order], ts[order]


def _event_table(
    cfg: ShopConfig, shop: Shop, rng: np.random.Generator, user, item, kind, ts, first_id: int, origin_ms: int
) -> tuple[pa.Table, dict[str, int]]:
    """Build the raw event rows of one chunk and inject dirty rows at the configured rate."""
    n = len(user)
    counts = rng.multinomial(rng.binomial(n, cfg.dirty_rate), [1 / len(DIRTY_KINDS)] * len(DIRTY_KINDS))
    template = rng.integers(0, n, int(counts.sum()))
    rows = np.concatenate([np.arange(n), template])
    dirty_kind = np.concatenate([np.full(n, -1), np.repeat(np.arange(len(DIRTY_KINDS)), counts)])
    # Dirty rows arrive right after the row they copy: a duplicate's original always comes first.
    order = np.lexsort((np.arange(len(rows)), ts[rows]))
    rows, dirty_kind = rows[order], dirty_kind[order]
    # A dirty row other than a duplicate gets an id of its own.
    numbers = np.where(dirty_kind > DIRTY_KINDS.index("duplicate_event_id"), -1 - np.arange(len(rows)), first_id + rows)

    ts_ms = pa.array(origin_ms + ts[rows]).cast(pa.timestamp("ms", tz="UTC"))
    columns = {
        "event_id": pc.if_else(numbers >= 0, _ids("ev-", numbers), _ids(f"ev-d{first_id}", numbers)),
        "user_id": _ids("u", user[rows]),
        "item_id": _ids("i", item[rows]),
        "event_type": pa.array(np.asarray(FUNNEL, dtype=object)[kind[rows]], pa.string()),
        "ts": pc.strftime(ts_ms, format="%Y-%m-%dT%H:%M:%SZ"),
        "value": pa.array(
            np.where(kind[rows] == FUNNEL.index("purchase"), shop.price[item[rows]], np.nan), from_pandas=True
        ),
        "request_id": pa.nulls(len(rows), pa.string()),
    }

    def corrupt(kind_name: str, column: str, make) -> None:
        at = np.flatnonzero(dirty_kind == DIRTY_KINDS.index(kind_name))
        if len(at):
            mask = np.zeros(len(rows), dtype=bool)
            mask[at] = True
            values = pa.array([make(j, k) for j, k in enumerate(at)], pa.string())
            columns[column] = pc.replace_with_mask(columns[column], pa.array(mask), values)

    null_at = np.flatnonzero(dirty_kind == DIRTY_KINDS.index("null_id"))
    for j, column in enumerate(("user_id", "item_id", "event_id")):
        mask = np.zeros(len(rows), dtype=bool)
        mask[null_at[j::3]] = True
        columns[column] = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), columns[column])
    corrupt("unknown_event_type", "event_type", lambda j, k: BAD_EVENT_TYPES[j % len(BAD_EVENT_TYPES)])
    corrupt("malformed_ts", "ts", lambda j, k: BAD_TIMESTAMPS[j % len(BAD_TIMESTAMPS)])
    corrupt("future_ts", "ts", lambda j, k: "2099" + columns["ts"][int(k)].as_py()[4:])
    corrupt("unknown_item", "item_id", lambda j, k: f"i-unknown-{first_id}-{j}")
    return pa.table(columns, schema=EVENT_SCHEMA), dict(zip(DIRTY_KINDS, (int(x) for x in counts)))


def _write_catalog(cfg: ShopConfig, shop: Shop, landing: Path) -> None:
    m = cfg.items
    cats = np.asarray(CATEGORIES)[shop.category]
    adjs = np.asarray(ADJECTIVES)[np.arange(m) % len(ADJECTIVES)]
    kinds = len(COLOURS) * len(ANIMALS)  # past that many collections, a number tells them apart
    names = [
        f"{COLOURS[k // len(ANIMALS) % len(COLOURS)]} {ANIMALS[k % len(ANIMALS)]}"
        + (f" {k // kinds + 1}" if k >= kinds else "")
        for k in shop.collection
    ]
    titles = [f"{a.title()} {n.title()} {c} item {i}" for i, (a, n, c) in enumerate(zip(adjs, names, cats))]
    items = pa.table(
        {
            "item_id": _ids("i", np.arange(m)),
            "title": titles,
            "category": cats,
            "price": shop.price,
            "description": [f"A {a} {c} product from the {n} collection." for a, n, c in zip(adjs, names, cats)],
        },
        schema=ITEM_SCHEMA,
    )
    write_parquet_atomically(items, landing / "items.parquet")
    rank = np.argsort(np.argsort(-shop.activity))
    segment = np.where(rank < cfg.users * 0.05, "vip", np.where(rank < cfg.users * 0.5, "regular", "casual"))
    nulls = pa.nulls(cfg.users, pa.string())
    users = pa.table(
        {
            "user_id": _ids("u", np.arange(cfg.users)),
            "segment": segment,
            "age": pa.nulls(cfg.users, pa.int32()),
            "gender": nulls,
            "occupation": nulls,
        },
        schema=USER_SCHEMA,
    )
    write_parquet_atomically(users, landing / "users.parquet")


def _track_oracle(track: _OracleTrack, taste: np.ndarray, user, item, prev, before) -> None:
    """Record, for sampled users, the state before each interaction that made it into the log."""
    pos = np.searchsorted(track.users, user)
    pos = np.minimum(pos, len(track.users) - 1)
    hit = np.flatnonzero(track.users[pos] == user)
    for k in hit:  # in time order; the last write per user wins
        s = pos[k]
        if track.count[s] > 0:
            track.history[s].append(int(track.target[s]))
        track.count[s] += 1
        track.taste[s] = taste[user[k]]
        track.prev[s], track.last[s], track.target[s] = prev[k], before[k], item[k]


def _oracle_report(cfg: ShopConfig, shop: Shop, track: _OracleTrack) -> dict:
    keep = np.flatnonzero(track.count >= cfg.oracle_min_interactions)
    report = {"users": len(keep), "min_interactions": cfg.oracle_min_interactions, "k": 10}
    if not len(keep):
        return report
    sums: dict[str, dict[str, float]] = {"masked": {}, "unmasked": {}}
    chunk = max(1, min(1024, 2**25 // cfg.items))  # [rows, M] float64 laws of at most 256 MB at once
    for start in range(0, len(keep), chunk):
        rows = keep[start : start + chunk]
        probs = next_item_probs(shop, cfg, track.taste[rows], track.prev[rows], track.last[rows])
        seen = np.zeros_like(probs, dtype=bool)
        for r, s in enumerate(rows):
            seen[r, track.history[s]] = True
        for name, mask in (("masked", seen), ("unmasked", None)):
            for metric, value in expected_metrics(probs, mask).items():
                sums[name][metric] = sums[name].get(metric, 0.0) + value * len(rows)
    for name, metrics in sums.items():
        report[name] = {metric: total / len(keep) for metric, total in metrics.items()}
    return report


def generate(cfg: ShopConfig, landing: Path, progress: Callable[[int], None] | None = None) -> dict:
    """Write the catalog, users, event log, manifest and oracle of a synthetic shop to ``landing``."""
    return generate_world(cfg, landing, progress)[0]


def generate_world(
    cfg: ShopConfig, landing: Path, progress: Callable[[int], None] | None = None
) -> tuple[dict, Shop, np.ndarray]:
    """:func:`generate`, also returning the world it ends in, for simulated users that carry on from
    there: the shop (its ``taste`` holds each user's final taste) and each user's last logged item
    (-1 for a user without one)."""
    rng = np.random.default_rng(cfg.seed)
    shop = build_shop(cfg, rng)
    reset_batch_data(landing)
    _write_catalog(cfg, shop, landing)
    origin_ms = int(datetime.fromisoformat(cfg.start).replace(tzinfo=UTC).timestamp() * 1000)

    sample = np.sort(rng.permutation(cfg.users)[: cfg.oracle_users])
    s = len(sample)
    track = _OracleTrack(
        sample,
        np.zeros(s, np.int64),
        np.zeros((s, cfg.categories), np.float32),
        np.full(s, -1),
        np.full(s, -1),
        [[] for _ in range(s)],
        np.full(s, -1),
    )
    events_per_interaction = 1 + shop.click_p.mean() * (1 + shop.cart_p.mean() * (1 + shop.buy_p.mean()))
    sessions = max(1, round(cfg.events / (cfg.days * cfg.mean_session_length * events_per_interaction)))
    last_item = np.full(cfg.users, -1, dtype=np.int64)
    last_logged = last_item.copy()
    writer = _EventWriter(landing / "events")
    dirty_total = dict.fromkeys(DIRTY_KINDS, 0)
    clean, day = 0, 0
    while clean < cfg.events:
        user, item, times, prev, before = _simulate_day(shop, cfg, rng, day, sessions, last_item)
        inter, kind, ts = _funnel_events(shop, rng, user, item, times)
        keep = min(len(inter), cfg.events - clean)
        inter, kind, ts = inter[:keep], kind[:keep], ts[:keep]
        logged = np.unique(inter)  # an interaction is in the log once its view is (views come first)
        _track_oracle(track, shop.taste, user[logged], item[logged], prev[logged], before[logged])
        # last_item also holds the final day's interactions cut from the log; the world keeps the logged one
        who, latest = np.unique(user[logged][::-1], return_index=True)
        last_logged[who] = item[logged][::-1][latest]
        table, dirty = _event_table(cfg, shop, rng, user[inter], item[inter], kind, ts, clean, origin_ms)
        writer.write(table)
        for name, count in dirty.items():
            dirty_total[name] += count
        clean += keep
        day += 1
        if progress:
            progress(keep)
    writer.close()

    manifest = {
        "generator": "rtrec.generate",
        "config": asdict(cfg),
        "clean_events": clean,
        "dirty": dirty_total,
        "total_rows": clean + sum(dirty_total.values()),
        "days": day,
        "files": writer.files,
    }
    write_json(landing / "manifest.json", manifest)
    write_json(landing / "oracle.json", _oracle_report(cfg, shop, track))
    return manifest, shop, last_logged
