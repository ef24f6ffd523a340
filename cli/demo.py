"""The demo's online part: start the API, show recommendations, send feedback, show the change."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from rtrec.api_process import serve_in_background
from rtrec.settings import Settings


def start_api(settings: Settings, port: int) -> tuple[subprocess.Popen, str, Path]:
    """The demo's API (2 workers), its log in a file (it would interleave with the demo's tables)."""
    url = f"http://{settings.api_host}:{port}"
    try:  # a server there already (an earlier demo's, say) would answer in place of this one
        httpx.get(f"{url}/healthz", timeout=1)
    except httpx.TransportError:
        pass
    else:
        raise RuntimeError(f"{url} already answers: stop that server or pass --port")
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    log = settings.logs_dir / "api.log"  # appended to, run after run
    return serve_in_background(settings.api_host, port, log), url, log


def show(console: Console, title: str, body: dict, category_of: dict[str, str]) -> None:
    table = Table("rank", "item", "category", "score", title=title)
    for rank, item in enumerate(body["items"], 1):
        table.add_row(str(rank), item["item_id"], category_of.get(item["item_id"], "?"), f"{item['score']:.2f}")
    console.print(table)


def run_demo(settings: Settings, port: int | None, console: Console) -> None:
    port = port or settings.api_port
    proc, url, log = start_api(settings, port)
    items = pq.read_table(settings.marts_dir / "item_features.parquet").to_pandas()
    category_of = dict(zip(items.item_id, items.category))
    users = pq.read_table(settings.marts_dir / "user_features.parquet").to_pandas()
    active = users.sort_values(["n_interactions", "user_id"], ascending=[False, True]).user_id[:3].tolist()
    headers = {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"} if settings.api_token else {}
    for user in active:
        show(console, f"{user}: recommendations", httpx.get(f"{url}/v1/recommendations/{user}").json(), category_of)

    user = active[0]
    before = httpx.get(f"{url}/v1/recommendations/{user}").json()
    shares = Counter(category_of.get(i["item_id"]) for i in before["items"])
    category = min(sorted(set(category_of.values())), key=lambda c: shares[c])
    chosen = items[items.category == category].sort_values("popularity_all", ascending=False).item_id[:8].tolist()
    events = [{"user_id": user, "item_id": i, "event_type": "click"} for i in chosen]
    accepted = httpx.post(f"{url}/v1/events", json={"events": events}, headers=headers).json()
    console.print(f"sent {len(events)} clicks on '{category}' items for {user}: {accepted}")
    after = httpx.get(f"{url}/v1/recommendations/{user}").json()
    show(console, f"{user}: after the feedback", after, category_of)
    share = lambda body: sum(category_of.get(i["item_id"]) == category for i in body["items"])  # noqa: E731
    console.print(f"'{category}' items in {user}'s top-10: {share(before)} before, {share(after)} after")
    console.print(f"\nAPI running at {url} (docs: {url}/docs; log: {log}); Ctrl-C stops it.", soft_wrap=True)
    if settings.api_token:
        console.print("The page sends clicks with a bearer token: paste RTREC_API_TOKEN into its token field.")
    query = urlencode({"users": ",".join(active), "user": user}, safe=",")
    console.print(f"Storefront page: {url}/demo?{query}", soft_wrap=True)
    try:
        if proc.wait() != 0:
            console.print(f"[red]the API exited (status {proc.returncode}); see {log}[/red]", soft_wrap=True)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(10)
