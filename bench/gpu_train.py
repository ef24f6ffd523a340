"""Train on a GPU as the nightly-gpu deployment does, and report quality, time and throughput.

For each preset and seed: its settings and alternatives tried in turn and the best kept on
validation (model/tuning.py), then the successor and EASE blends fitted as the registry serves them;
a line per run with test NDCG@10 and HR@10 as served and of the model alone, the settings chosen,
seconds, sequences/s and achieved TFLOP/s. Used by bench/gpu_train.sh.

  python bench/gpu_train.py [--marts DIR] [--presets gpu-large cpu] [--seeds 0 1 2] [--budget S]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import mean_and_error
from model.blends import fit_blends
from model.config import alternatives, preset
from model.data import SequenceData, load_marts
from model.evaluate import evaluate
from model.scorer import sasrec_scorer
from model.tuning import Choice, choose
from model.windows import training_windows
from rtrec.settings import get_settings


def achieved_tflops(data: SequenceData, choice: Choice, settings: list, seconds: float) -> tuple[float, float]:
    """(sequences/s, TFLOP/s) over every setting tried: forward + backward ~ 6 FLOP per parameter per
    token the encoder reads (padding left out), plus attention and the catalog softmax."""
    sequences = flops = 0.0
    for tried, (model_cfg, _) in zip(choice.tried, settings, strict=False):
        inputs = training_windows(data, model_cfg.max_len)[0]
        tokens = int((inputs > 0).sum()) * tried["epochs"]
        params = sum(p.numel() for p in choice.result.model.parameters())
        d, n, v = model_cfg.dim, model_cfg.max_len, data.vocab.n_items
        flops += tokens * (6 * params + 6 * model_cfg.layers * n * d + 6 * d * v)
        sequences += len(inputs) * tried["epochs"]
    return sequences / seconds, flops / seconds / 1e12


def run(data: SequenceData, name: str, seed: int, budget: float | None, device: str) -> dict:
    overrides = {"seed": seed, "device": device, "budget_seconds": budget}
    settings = [preset(name, **overrides), *alternatives(name, **overrides)]
    started = time.perf_counter()
    choice = choose(data, settings, progress=False)
    seconds = time.perf_counter() - started
    model = choice.result.model.to("cpu")
    alone = sasrec_scorer(model, torch.device("cpu"))
    served = fit_blends(alone, data).served(alone)
    rate, tflops = achieved_tflops(data, choice, settings, seconds)
    return {
        "preset": name,
        "seed": seed,
        "served": {k: round(v, 4) for k, v in evaluate(served, data).items()},
        "alone": {k: round(v, 4) for k, v in evaluate(alone, data).items()},
        "chosen": choice.changes or "the preset's",
        "epochs": [t["epochs"] for t in choice.tried],
        "seconds": round(seconds, 1),
        "sequences/s": round(rate),
        "TFLOP/s": round(tflops, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--marts", type=Path, default=None, help="default: the marts of RTREC_DATA_DIR")
    parser.add_argument("--presets", nargs="+", default=["gpu-large"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--budget", type=float, default=None, help="seconds per run (default: none)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to try the bench where there is none")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this bench measures training on a GPU (--device cpu to try it)")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    data = load_marts(args.marts or get_settings().marts_dir)
    print(f"marts: {data.vocab.n_items:,} items, {len(data.user_ids):,} users", flush=True)
    results = []
    for name in args.presets:
        for seed in args.seeds:
            results.append(run(data, name, seed, args.budget, args.device))
            print(json.dumps(results[-1]), flush=True)
    for name in args.presets:
        runs = [r for r in results if r["preset"] == name]
        for form in ("served", "alone"):
            ndcg, error = mean_and_error([r[form]["ndcg@10"] for r in runs])
            hr, _ = mean_and_error([r[form]["hr@10"] for r in runs])
            print(
                f"{name} {form}: NDCG@10 {ndcg:.4f} ± {error:.4f}, HR@10 {hr:.4f} "
                f"over {len(runs)} seed(s); median {statistics.median(r['seconds'] for r in runs):.0f} s"
            )


if __name__ == "__main__":
    main()
