"""Recommendation quality from the defaults (what `rtrec pipeline` trains without flags): MostPop,
EASE, the item-to-item transition baseline and our SASRec (alone, and as served: with its successor
counts blended in, model/successors.py) by the same full-ranking harness
(leave-last-out, history masked), beside the oracle ceiling of the generated shop.

    python bench/quality.py [--datasets generated movielens] [--seeds 0 1 2] [--events 200000 1000000]
                            [--replay 5] [--cold-start 0.1]

SASRec is trained as the train flow trains it (preset `cpu`, its alternatives tried and the best
kept on validation, model/tuning.py, within RTREC_TRAIN_BUDGET_SECONDS), once per seed: the table
gives the mean and its standard error over the seeds. --events lists the generated shop's sizes
(same users and catalog), so the share of the oracle shows whether the limit is data or model.
--replay N also replays each user's last N interactions (model/replay.py): live state against
frozen, for MostPop, the transition baseline and SASRec. --cold-start SHARE (0.1 by default) holds
out the items first seen last (model/cold_start.py) and scores the interactions that target them:
the chosen SASRec setting (content-aware), trained before their first interaction, against MostPop
and random.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from bench.common import dbt, mean_and_error, use_data_dir
from flows.embed import embed_catalog
from model.baselines import most_popular, tuned_ease
from model.blends import fit_blends
from model.cold_start import cold_start_table
from model.config import alternatives, preset
from model.data import load_marts
from model.evaluate import evaluate
from model.replay import before_cut, transitions
from model.report import REPLAY_COLUMNS, replay_cells, replay_table
from model.scorer import sasrec_scorer
from model.tuning import choose
from rtrec.generate import ShopConfig, generate
from rtrec.movielens import fetch_sample, import_movielens
from rtrec.settings import get_settings

METRICS = ("hr@10", "ndcg@10", "mrr@10")


def load(name: str, events: int, data: Path, cache: Path):
    """The data set through dbt and the embed step, as the nightly flow prepares it."""
    use_data_dir(data)
    if name == "generated":
        generate(ShopConfig(events=events), data / "landing")
    else:
        import_movielens(fetch_sample("ml-100k", cache), data / "landing")
    dbt(data)
    embed_catalog(get_settings().marts_dir)
    return load_marts(get_settings().marts_dir)


def default_settings(seed: int) -> list:
    """The train flow's settings (its preset, then the alternatives), for one seed."""
    overrides = {"seed": seed, "budget_seconds": get_settings().train_budget_seconds}
    return [preset("cpu", **overrides), *alternatives("cpu", **overrides)]


def spread(seconds: list[float]) -> str:
    """The median and, over several seeds, the range."""
    median = f"{np.median(seconds):.0f}"
    return median if len(seconds) == 1 else f"{median} ({min(seconds):.0f}-{max(seconds):.0f})"


def per_seed(seeds: list[int], chosen: list[str]) -> str:
    """What each seed chose, once when they all chose the same."""
    if len(set(chosen)) == 1:
        return chosen[0] if len(chosen) == 1 else f"every seed: {chosen[0]}"
    return "; ".join(f"seed {seed}: {choice}" for seed, choice in zip(seeds, chosen))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["generated", "movielens"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--events", nargs="+", type=int, default=[ShopConfig().events], help="generated shop sizes")
    parser.add_argument("--replay", type=int, default=None, metavar="N")
    parser.add_argument(
        "--cold-start", type=float, default=0.1, metavar="SHARE", help="share of items held out as new (0: skip)"
    )
    args = parser.parse_args()
    console = Console(width=170)
    table = Table(
        "data",
        "model",
        "HR@10",
        "NDCG@10",
        "MRR@10",
        "% of oracle NDCG@10",
        "train s",
        "chosen",
        title=f"test split, full ranking, history masked; SASRec: mean ± standard error over seeds {args.seeds}",
    )
    replays, colds = [], []
    runs = [(name, events) for name in args.datasets for events in (args.events if name == "generated" else [0])]
    with tempfile.TemporaryDirectory() as tmp:
        for name, events in runs:
            label = f"generated ({events:,} events)" if events else "MovieLens-100k"
            data = load(name, events, Path(tmp) / f"{name}-{events}", Path(tmp) / "cache")
            oracle_path = Path(tmp) / f"{name}-{events}" / "landing" / "oracle.json"
            oracle = json.loads(oracle_path.read_text())["masked"] if oracle_path.exists() else None

            def share(ndcg: float, oracle=oracle) -> str:
                return f"{100 * ndcg / oracle['ndcg@10']:.0f}%" if oracle else "-"

            def row(model: str, m: dict, seconds: float | None, chosen: str = "", label=label) -> None:
                cells = [f"{m[k]:.4f}" for k in METRICS]
                table.add_row(label, model, *cells, share(m["ndcg@10"]), f"{seconds:.0f}" if seconds else "-", chosen)

            start = time.perf_counter()
            row("MostPop", evaluate(most_popular(data, "test"), data), time.perf_counter() - start)
            start = time.perf_counter()
            scorer, l2 = tuned_ease(data, "test")
            row(f"EASE (l2={l2:g})", evaluate(scorer, data), time.perf_counter() - start)
            start = time.perf_counter()
            row("item-to-item transitions", evaluate(transitions(before_cut(data, 1)), data), None)
            alone, served, seconds, chosen, choices = [], [], [], [], []
            for seed in args.seeds:
                choice = choose(data, default_settings(seed), progress=True)
                choices.append(choice)
                scorer = sasrec_scorer(choice.result.model, torch.device("cpu"))
                blends = fit_blends(scorer, data)
                alone.append(evaluate(scorer, data))
                served.append(evaluate(blends.served(scorer), data))
                seconds.append(choice.result.seconds)
                chosen.append(f"{json.dumps(choice.changes)}; {blends}")
                console.print(
                    f"{label} seed {seed}: test NDCG@10 {served[-1]['ndcg@10']:.4f} as served, "
                    f"{alone[-1]['ndcg@10']:.4f} alone; tried {choice.tried}"
                )
            for model, figures in (("SASRec alone", alone), ("SASRec as served (defaults)", served)):
                cells = []
                for key in METRICS:
                    mean, error = mean_and_error([m[key] for m in figures])
                    cells.append(f"{mean:.4f} ± {error:.4f}")
                ndcg = float(np.mean([m["ndcg@10"] for m in figures]))
                table.add_row(label, model, *cells, share(ndcg), spread(seconds), per_seed(args.seeds, chosen))
            if oracle:
                table.add_row(label, "oracle ceiling", *[f"{oracle[k]:.4f}" for k in METRICS], "100%", "-", "")
            if args.replay:
                for replayed in replay_table(data, args.replay, default_settings(args.seeds[0])):
                    replays.append((label, replayed))
            if args.cold_start:
                chosen_setting = (choices[0].model_cfg, choices[0].train_cfg)
                for row in cold_start_table(data, chosen_setting, args.cold_start):
                    colds.append((label, row))
    console.print(table)
    if replays:
        replay_view = Table("data", *REPLAY_COLUMNS, title=f"replay of each user's last {args.replay} interactions")
        for label, replayed in replays:
            replay_view.add_row(label, *replay_cells(replayed))
        console.print(replay_view)
    if colds:
        cold_view = Table(
            "data",
            "model",
            "new items",
            "HR@10",
            "NDCG@10",
            "cases",
            title=f"cold start: the {args.cold_start:.0%} of items first seen last, held out of training; "
            "interactions that target them, full ranking, history masked",
        )
        for label, row in colds:
            cold_view.add_row(
                label,
                row["model"],
                str(row["new items"]),
                f"{row['hr@10']:.4f}",
                f"{row['ndcg@10']:.4f}",
                str(row["cases"]),
            )
        console.print(cold_view)


if __name__ == "__main__":
    main()
