"""A million-item catalog: the index the nightly run builds, its recall against exact scoring, and
serving from it (latency beside `/healthz`, memory per worker).

    python bench/ann_bench.py [--items 1000000] [--users 10000] [--events 3000000] [--data DIR]

The shop is generated, cleaned by dbt, materialized into Feast and trained on (sampled softmax, the
index built at registration) as the pipeline does; `--data` keeps that directory for a rerun.
Then, for `--queries` users of the test split (history masked): recall@10 of the served top-10
(index candidates re-scored exactly) against exact scoring of the whole table, and single-user
latency of both. `--compare` rows of the table go into usearch, faiss HNSW and (where installed)
hnswlib indexes built with the same graph settings, for their build time and recall@10 of inner-product search.
Last, `rtrec serve` with 2 workers: GET and `/healthz` p99 at `--rate` requests/s (wrk), and each
worker's resident (RSS) and proportional (PSS: shared pages split between the processes) memory.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import psutil
import torch
from rich.console import Console
from rich.table import Table

from bench import wrk
from bench.common import prepare, start_api, use_data_dir
from model import ann
from model.data import load_marts
from model.inference import Recommender
from model.registry import Registry
from rtrec.generate import ShopConfig
from rtrec.redis_server import free_port


def top10(scores: torch.Tensor, rows: np.ndarray | None, inputs: list[np.ndarray]) -> list[set[int]]:
    """The best 10 rows per user, the user's history and the padding row left out."""
    out = []
    for r, history in enumerate(inputs):
        candidates = np.arange(scores.shape[1]) if rows is None else rows[r]
        hidden = np.isin(candidates, history) | (candidates == 0)
        row = scores[r].masked_fill(torch.from_numpy(hidden), float("-inf"))
        out.append({int(candidates[i]) for i in row.topk(10).indices.tolist()})
    return out


def recall(served: Recommender, exact: Recommender, data, queries: int) -> tuple[float, int, list, list]:
    """Recall@10 of the served top-10 against the exact one over `queries` users (at most), the
    number of users, and single-user timings of both (s)."""
    _, inputs, events, gaps, _ = data.holdout("test")
    inputs, events, gaps = inputs[:queries], events[:queries], gaps[:queries]
    hits, ann_s, exact_s = [], [], []
    for start in range(0, len(inputs), 50):
        part = slice(start, start + 50)
        seen = [list(h) for h in inputs[part]]
        rows, scores = served.candidates(inputs[part], events[part], gaps[part], seen, 10)
        found = top10(scores, rows, inputs[part])
        truth = top10(exact.scores(inputs[part], events[part], gaps[part]), None, inputs[part])
        hits += [len(f & t) / 10 for f, t in zip(found, truth)]
    for i in range(min(200, len(inputs))):
        for model, times in ((served, ann_s), (exact, exact_s)):
            start = time.perf_counter()
            if model is served:
                model.candidates([inputs[i]], [events[i]], gaps[i : i + 1], [list(inputs[i])], 10)
            else:
                model.scores([inputs[i]], [events[i]], gaps[i : i + 1]).topk(10 + len(inputs[i]))
            times.append(time.perf_counter() - start)
    return float(np.mean(hits)), len(hits), ann_s, exact_s


def compare_libraries(table: np.ndarray, rows: int, queries: int) -> list[tuple[str, float, float]]:
    """(library, build seconds, recall@10 of inner-product search) on `rows` rows of the table."""
    import faiss
    from usearch.index import Index

    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(len(table) - 1, min(rows, len(table) - 1), False))
    sample = np.ascontiguousarray(table[1:][chosen], dtype=np.float32)
    probe = sample[rng.choice(len(sample), queries, False)] + rng.normal(0, 0.1, (queries, sample.shape[1])).astype(
        np.float32
    )
    truth = np.argsort(-(probe @ sample.T), axis=1)[:, :10]
    results = []

    def score(found: np.ndarray) -> float:
        return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))

    start = time.perf_counter()
    index = Index(ndim=sample.shape[1], metric="ip", dtype="f32", connectivity=ann.CONNECTIVITY)
    index.expansion_add, index.expansion_search = ann.EXPANSION_ADD, ann.EXPANSION_SEARCH
    index.add(np.arange(len(sample), dtype=np.uint64), sample)
    built = time.perf_counter() - start
    results.append(("usearch (memory-mapped)", built, score(np.asarray(index.search(probe, 10).keys))))

    try:
        import hnswlib  # not pinned: it ships only as source
    except ImportError:
        results.append(("hnswlib", float("nan"), float("nan")))
    else:
        start = time.perf_counter()
        hnsw = hnswlib.Index(space="ip", dim=sample.shape[1])
        hnsw.init_index(len(sample), M=ann.CONNECTIVITY, ef_construction=ann.EXPANSION_ADD)
        hnsw.add_items(sample, np.arange(len(sample)))
        built = time.perf_counter() - start
        hnsw.set_ef(ann.EXPANSION_SEARCH)
        results.append(("hnswlib (private copy)", built, score(hnsw.knn_query(probe, 10)[0])))

    start = time.perf_counter()
    flat = faiss.IndexHNSWFlat(sample.shape[1], ann.CONNECTIVITY, faiss.METRIC_INNER_PRODUCT)
    flat.hnsw.efConstruction = ann.EXPANSION_ADD
    flat.add(sample)
    built = time.perf_counter() - start
    flat.hnsw.efSearch = ann.EXPANSION_SEARCH
    results.append(("faiss HNSW (private copy)", built, score(flat.search(probe, 10)[1])))
    return results


def memory(pid: int) -> tuple[float, float]:
    """Resident and proportional memory of a process, MiB."""
    info = psutil.Process(pid).memory_full_info()
    return info.rss / 2**20, info.pss / 2**20


def ms(samples: list[float]) -> str:
    return f"p50 {1000 * statistics.median(samples):.2f} ms, p99 {1000 * np.percentile(samples, 99):.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--compare", type=int, default=200_000, help="table rows for the library comparison")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--data", type=Path, help="data directory to build in (or reuse)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a serving worker
    console = Console(width=150)
    data_dir = (args.data or Path(tempfile.mkdtemp(prefix="ann-bench-"))).resolve()
    cfg = ShopConfig(users=args.users, items=args.items, events=args.events)
    use_data_dir(data_dir, RTREC_ONLINE_STORE="sqlite")
    registry = Registry(data_dir / "models")
    if registry.current() is None:
        start = time.perf_counter()
        prepare(data_dir, cfg, train_preset="cpu", epochs=args.epochs)
        console.print(f"generate, dbt, materialize, train and index: {time.perf_counter() - start:.0f} s")
    version = registry.path(registry.current())
    metrics = registry.metrics(registry.current())
    if "forms" not in metrics.get("ann", {}):
        raise SystemExit(f"{version} has no index in two forms (too few items, or registered before them)")
    data = load_marts(data_dir / "marts")
    served = Recommender.load(version)
    # the same served scores (the model's, successor counts blended in) over the whole table
    exact = Recommender(served.model, served.vocab, "exact", successors=served.successors)
    hits, users, ann_s, exact_s = recall(served, exact, data, args.queries)

    table = Table("what", "figure", title=f"{data.vocab.n_items:,}-item model ({cfg.items:,}-item catalog)")
    forms, check = metrics["ann"]["forms"], metrics["compressed"]
    table.add_row(
        "index build at registration (usearch HNSW), float32 / float16",
        f"{forms['float32']['build_seconds']:.0f} / {forms['float16']['build_seconds']:.0f} s",
    )
    table.add_row("test NDCG@10 as served (exact scoring)", f"{metrics['test_ndcg@10']:.4f}")
    table.add_row("test NDCG@10 of the model alone", f"{metrics['model_alone']['test_ndcg@10']:.4f}")
    if "error" in check:
        table.add_row("the float16 form's check at registration", f"failed to run: {check['error']}")
    else:
        loss = -100 * check["relative_ndcg_loss"]
        table.add_row(
            "test NDCG@10 through the index, float32 / float16 table and index",
            f"{check['float_test_ndcg@10']:.4f} / {check['test_ndcg@10']:.4f} ({loss:+.2f}%)",
        )
        table.add_row(
            "model call through the index, 1 user (p50), float32 / float16",
            f"{check['float_model_ms']:.2f} / {check['model_ms']:.2f} ms ({check['speedup']:.2f}×)",
        )
        table.add_row(
            "the float16 form's check at registration (every test user, both forms)", f"{check['seconds']:.0f} s"
        )
    mb = {name: form["bytes"] / 1e6 for name, form in forms.items()}
    table.add_row(
        "table + index files, float32 / float16",
        f"{mb['float32']:.0f} / {mb['float16']:.0f} MB ({mb['float32'] / mb['float16']:.2f}× smaller)",
    )
    table.add_row("form served (passed its check at registration)", served.form)
    table.add_row(f"recall@10 of the served top-10 vs exact, {users:,} users", f"{hits:.3f}")
    table.add_row("model call, 1 user: index candidates + exact re-scoring", ms(ann_s))
    table.add_row("model call, 1 user: the whole table scored", ms(exact_s))
    float_table = np.load(version / ann.FORMS[ann.FULL].table, mmap_mode="r")
    for library, built, found in compare_libraries(float_table, args.compare, args.queries):
        table.add_row(f"{library}, {args.compare:,} rows: build / recall@10", f"{built:.1f} s / {found:.3f}")
    del exact

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_api(dict(os.environ), port, data_dir / "serve.log", 2)
    try:
        wrk.run(url, "get", args.seconds, 20, cfg.users, cfg.items)  # warm-up: pages of the table and index
        health = wrk.run(url, "healthz", args.seconds, 20, cfg.users, cfg.items, rate=args.rate)
        get = wrk.run(url, "get", args.seconds, 20, cfg.users, cfg.items, rate=args.rate)
        table.add_row(f"HTTP GET p99 at {args.rate}/s, 2 workers", f"{get.p99_ms:.2f} ms ({get.rate:.0f} req/s)")
        table.add_row(f"HTTP /healthz p99 at {args.rate}/s", f"{health.p99_ms:.2f} ms")
        workers = psutil.Process(server.pid).children(recursive=True)
        for n, worker in enumerate(w for w in workers if "spawn_main" in " ".join(w.cmdline())):
            rss, pss = memory(worker.pid)
            table.add_row(f"worker {n + 1} memory: resident / proportional", f"{rss:,.0f} / {pss:,.0f} MiB")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    console.print(table)
    console.print(f"data directory: {data_dir}")


if __name__ == "__main__":
    main()
