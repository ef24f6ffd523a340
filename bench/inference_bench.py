"""Model inference latency: one user (50 recent items) and batches, for a 10k-item catalog, in
the float32 form and the compressed one (ONNX Runtime, model/export.py) side by side, and the
compressed one with successor counts blended in (model/successors.py) as versions are served.

    python bench/inference_bench.py [--items 10000] [--preset cpu]
Weights are random: latency does not depend on their values. The counts come from random
sequences of 50 items, one per 5 catalog items of users, and boost what followed the last 5.
The caption adds the model time alone (the scores of every item and the top-10, no history
encoding or exclusions), the two forms taking turns: what training's compression check times.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from rich.console import Console
from rich.table import Table

from bench.common import percentiles
from model.config import PRESETS
from model.data import Vocabulary
from model.export import ONNX_FILE, OnnxScores, export_onnx, model_ms
from model.inference import Recommender
from model.sasrec import SASRec
from model.successors import RECENTS, Successors
from rtrec.events import EVENT_TYPES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (serving runs one per worker)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset][0]
    n = args.items
    vocab = Vocabulary(
        [f"i{k}" for k in range(n)],
        [0] + [k % 20 + 1 for k in range(n)],
        [0] + [k % 10 + 1 for k in range(n)],
        [f"c{k}" for k in range(20)],
    )
    model = SASRec.from_vocab(cfg, vocab)
    history = lambda: [(f"i{random.randrange(n)}", random.choice(EVENT_TYPES[:4])) for _ in range(cfg.max_len)]  # noqa: E731
    table = Table(
        "form",
        "call",
        "p50 ms",
        "p99 ms",
        "users/s",
        title=f"SASRec '{args.preset}' inference, {n:,} items, {args.threads} thread(s)",
    )
    with tempfile.TemporaryDirectory() as scratch:
        export_onnx(model, Path(scratch) / ONNX_FILE)
        onnx = OnnxScores(Path(scratch) / ONNX_FILE)
        counts = Successors.count([torch.randint(1, n + 1, (cfg.max_len,)).numpy() for _ in range(n // 5)], n)
        counts.weight, counts.recent = 1.0, max(RECENTS)
        forms = {
            "float32": Recommender(model, vocab, "bench"),
            "onnx": Recommender(model, vocab, "bench", onnx),
            "onnx + successors": Recommender(model, vocab, "bench", onnx, successors=counts),
        }
        p50 = {}
        for form, rec in forms.items():
            for _ in range(50):
                rec.recommend(history(), k=10)
            single = []
            for _ in range(1000):
                h = history()
                start = time.perf_counter()
                rec.recommend(h, k=10, exclude=[i for i, _ in h])
                single.append(time.perf_counter() - start)
            p = percentiles(single)
            p50[form] = p["p50"]
            row = "recommend (1 user, 50 recent items, top-10)"
            table.add_row(form, row, f"{p['p50']:.2f}", f"{p['p99']:.2f}", f"{1000 / p['p50']:,.0f}")
            for batch in (16, 64, 256):
                histories = [history() for _ in range(batch)]
                times = []
                for _ in range(20):
                    start = time.perf_counter()
                    rec.recommend_batch(histories, k=10)
                    times.append(time.perf_counter() - start)
                p = percentiles(times)
                table.add_row(
                    form,
                    f"recommend_batch ({batch} users)",
                    f"{p['p50']:.2f}",
                    f"{p['p99']:.2f}",
                    f"{batch * 1000 / p['p50']:,.0f}",
                )
        float_ms, onnx_ms = model_ms([model.scores, onnx], model, histories=1000)
        table.caption = (
            f"one user, p50: float32 / onnx = {p50['float32'] / p50['onnx']:.2f}x; model time alone,"
            f" as training's compression check times it: {float_ms:.2f} / {onnx_ms:.2f} ms = {float_ms / onnx_ms:.2f}x"
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
