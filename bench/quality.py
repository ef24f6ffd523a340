"""Recommendation quality on the generated sample (beside its oracle ceiling) and on MovieLens-100k:
MostPop, EASE and our SASRec by the same full-ranking harness (leave-last-out, history masked).

    python bench/quality.py [--datasets generated movielens] [--seed 0] [--replay 5]

With --replay N it also replays each user's last N interactions (model/replay.py): live state
against frozen, for MostPop, the item-to-item transition baseline and SASRec with the same settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from rich.console import Console
from rich.table import Table

from bench.common import dbt, use_data_dir
from model.baselines import most_popular, tuned_ease
from model.config import preset
from model.data import load_marts
from model.evaluate import evaluate
from model.report import REPLAY_COLUMNS, replay_cells, replay_table
from model.scorer import sasrec_scorer
from model.train import train
from rtrec.generate import ShopConfig, generate
from rtrec.movielens import fetch_sample, import_movielens
from rtrec.settings import get_settings

# Per data set: (preset, TrainConfig overrides, ModelConfig overrides), chosen on the validation split.
SETTINGS = {
    "generated": ("cpu", {"lr": 2e-3, "patience": 10}, {}),
    "movielens": ("cpu", {"lr": 2e-3, "patience": 15, "all_windows": False}, {"dropout": 0.5}),
}


def load(name: str, data: Path, cache: Path):
    use_data_dir(data)
    if name == "generated":
        generate(ShopConfig(), data / "landing")
    else:
        import_movielens(fetch_sample("ml-100k", cache), data / "landing")
    dbt(data)
    return load_marts(get_settings().marts_dir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["generated", "movielens"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replay", type=int, default=None, metavar="N")
    args = parser.parse_args()
    replays = []
    table = Table(
        "data",
        "model",
        "HR@10",
        "NDCG@10",
        "MRR@10",
        "coverage",
        "train s",
        title="test split, full ranking, history masked",
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            data = load(name, Path(tmp) / name, Path(tmp) / "cache")
            rows = []
            start = time.perf_counter()
            rows.append(("MostPop", evaluate(most_popular(data, "test"), data), time.perf_counter() - start))
            start = time.perf_counter()
            scorer, l2 = tuned_ease(data, "test")
            rows.append((f"EASE (l2={l2:g})", evaluate(scorer, data), time.perf_counter() - start))
            preset_name, train_over, model_over = SETTINGS[name]
            model_cfg, train_cfg = preset(preset_name, seed=args.seed, **train_over)
            result = train(data, replace(model_cfg, **model_over), train_cfg, progress=True)
            ours = evaluate(sasrec_scorer(result.model, torch.device("cpu")), data)
            rows.append((f"SASRec ({preset_name}, {len(result.history)} epochs)", ours, result.seconds))
            oracle_path = Path(tmp) / name / "landing" / "oracle.json"
            if oracle_path.exists():
                oracle = json.loads(oracle_path.read_text())["masked"]
                rows.append(("oracle ceiling", oracle, None))
                rows.append(("SASRec / oracle", {k: ours[k] / oracle[k] for k in ("hr@10", "ndcg@10", "mrr@10")}, None))
            if args.replay:
                for row in replay_table(data, args.replay, replace(model_cfg, **model_over), train_cfg):
                    replays.append((name, row))
            for model, m, seconds in rows:
                table.add_row(
                    name,
                    model,
                    f"{m['hr@10']:.4f}",
                    f"{m['ndcg@10']:.4f}",
                    f"{m['mrr@10']:.4f}",
                    f"{m['coverage']:.3f}" if "coverage" in m else "-",
                    f"{seconds:.1f}" if seconds is not None else "-",
                )
    console = Console(width=160)
    console.print(table)
    if replays:
        replay_view = Table("data", *REPLAY_COLUMNS, title=f"replay of each user's last {args.replay} interactions")
        for name, row in replays:
            replay_view.add_row(name, *replay_cells(row))
        console.print(replay_view)


if __name__ == "__main__":
    main()
