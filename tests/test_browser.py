"""The storefront page (GET /demo) and the endpoints it uses (GET /v1/items, GET /v1/users/{id}/history).

Plain HTTP tests run in `make test`. The tests marked `browser` drive a real headless Chromium
(Debian's /usr/bin/chromium, through Playwright) over a served shop with a trained model; pytest's
addopts leave them out, and `make test-browser` runs only them. The browser test saves a screenshot
to $RTREC_ARTIFACTS_DIR (default tests/artifacts/, git-ignored).
"""

import asyncio
import json
import os
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.etl import etl
from flows.materialize import materialize
from model.config import preset
from model.data import load_marts
from model.lifecycle import train_and_register
from model.registry import Registry
from rtrec.generate import ShopConfig, generate
from rtrec.settings import Settings, get_settings
from serving.app import create_app
from serving.feedback_log import FeedbackLog
from serving.routes.items import CatalogTable
from tests.http_server import AUTH, TOKEN, Server

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("RTREC_ARTIFACTS_DIR") or Path(__file__).parent / "artifacts")


@pytest.fixture(scope="module")
def shop(tmp_path_factory, prefect_harness):
    """Generated shop -> dbt -> Feast, no model yet. Strong category tastes (as in test_serving), so
    that a few clicks in one category visibly move a user's recommendations once a model is trained."""
    data = tmp_path_factory.mktemp("storefront")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RTREC_DATA_DIR", str(data))
        get_settings.cache_clear()
        cfg = ShopConfig(users=800, items=150, events=80_000, dirty_rate=0.0, categories=6, p_next=0.3, p_taste=0.5)
        generate(cfg, data / "landing")
        etl()
        materialize()
        yield data
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def server(shop):
    srv = Server(shop, workers=1)
    yield srv
    srv.kill()


def catalog_frame(data):
    return pq.read_table(data / "marts" / "item_features.parquet").to_pandas().set_index("item_id")


# ---- plain HTTP: run in `make test` ------------------------------------------------------------


def test_demo_page_and_its_assets_are_served_from_the_package(server):
    page = httpx.get(f"{server.url}/demo")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="demo/demo.js"' in page.text and 'href="demo/demo.css"' in page.text
    script = httpx.get(f"{server.url}/demo/demo.js")
    style = httpx.get(f"{server.url}/demo/demo.css")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    for text in (page.text, script.text, style.text):  # no CDN, nothing fetched from elsewhere
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert "/demo" in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_items_returns_title_category_and_price_from_the_catalog(shop, server):
    frame = catalog_frame(shop)
    known = list(frame.index[:3])
    asked = [known[2], "no-such-item", known[0], known[1], known[0]]
    reply = httpx.get(f"{server.url}/v1/items", params={"ids": ",".join(asked)})
    assert reply.status_code == 200
    body = reply.json()
    assert [i["item_id"] for i in body["items"]] == [known[2], known[0], known[1]]  # order asked, once each
    assert body["missing"] == ["no-such-item"]
    for item in body["items"]:
        row = frame.loc[item["item_id"]]
        assert item["title"] == row["title"] and item["title"]
        assert item["category"] == row["category"]
        assert item["price"] == pytest.approx(row["price"])


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"ids": ""},
        {"ids": "i1,,i2"},
        {"ids": "i1," + "x" * 129},
        {"ids": ",".join(f"i{n}" for n in range(101))},
    ],
    ids=["absent", "empty", "empty-id", "id-too-long", "too-many-ids"],
)
def test_items_rejects_bad_ids_with_a_4xx_naming_the_field(server, params):
    reply = httpx.get(f"{server.url}/v1/items", params=params)
    assert reply.status_code == 422
    assert "ids" in json.dumps(reply.json()["detail"])


def test_items_follow_a_new_catalog_file(tmp_path):
    path = tmp_path / "item_features.parquet"
    write = lambda title: pq.write_table(  # noqa: E731
        pa.table({"item_id": ["a"], "title": [title], "category": ["c"], "price": [1.5]}), path
    )
    write("old")
    table = CatalogTable(path)
    assert table.get()["a"].title == "old"
    write("a newer, longer title")  # a different size, so it shows even within one mtime tick
    assert table.get()["a"].title == "a newer, longer title"
    assert CatalogTable(tmp_path / "absent.parquet").get() == {}


def test_history_reflects_a_posted_event(server):
    user = f"hist-{uuid.uuid4().hex[:8]}"
    empty = httpx.get(f"{server.url}/v1/users/{user}/history")
    assert empty.status_code == 200
    assert empty.json() == {"user_id": user, "recent_items": [], "recent_event_types": [], "last_event_ts": None}
    ts = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    events = [
        {"user_id": user, "item_id": "i3", "event_type": "view", "ts": ts.isoformat()},
        {"user_id": user, "item_id": "i7", "event_type": "click", "ts": ts.isoformat(), "request_id": "r-1"},
    ]
    assert httpx.post(f"{server.url}/v1/events", json={"events": events}, headers=AUTH).status_code == 202
    body = httpx.get(f"{server.url}/v1/users/{user}/history").json()
    assert body["recent_items"] == ["i3", "i7"] and body["recent_event_types"] == ["view", "click"]
    assert datetime.fromisoformat(body["last_event_ts"].replace("Z", "+00:00")) == ts
    assert httpx.get(f"{server.url}/v1/users/{'u' * 129}/history").status_code == 422


def test_history_says_503_with_a_reason_when_the_store_is_down(tmp_path):
    class DownStore:
        def read(self, user_id):
            raise ConnectionError("redis: connection refused")

    async def get(path):
        transport = httpx.ASGITransport(app)  # no lifespan: the route reads only what the test puts on app.state
        async with httpx.AsyncClient(transport=transport, base_url="http://rtrec") as client:
            return await client.get(path)

    app = create_app(Settings(data_dir=tmp_path))
    app.state.user_state = DownStore()
    app.state.feedback = FeedbackLog(tmp_path / "feedback")
    reply = asyncio.run(get("/v1/users/u1/history"))
    assert reply.status_code == 503
    assert "online store unavailable" in reply.json()["detail"]


# ---- browser: `make test-browser` --------------------------------------------------------------


@pytest.fixture(scope="module")
def served_model(shop):
    """A trained, promoted model over the shop, and a server that answers with it."""
    model_cfg, train_cfg = preset("cpu", epochs=40, patience=10, lr=2e-3)
    train_and_register(load_marts(shop / "marts"), Registry(shop / "models"), model_cfg, train_cfg, progress=False)
    srv = Server(shop, workers=1)
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: apt-get install -y chromium (.ci/run does)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    yield tab
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def wait_for_list(page, generation):
    """Wait until the page has shown list number `generation`; its state must be ready."""
    page.wait_for_function(
        "g => Number(document.body.dataset.generation) >= g && document.body.dataset.state !== 'loading'",
        arg=generation,
        timeout=20_000,
    )
    assert page.get_attribute("body", "data-state") == "ready", page.inner_text("#status")


def shown(page):
    """The list on the page: (item_id, category, highlighted) per item, in order."""
    return page.eval_on_selector_all(
        "#items li.item",
        "rows => rows.map(r => [r.dataset.itemId, r.dataset.category, r.classList.contains('entered')])",
    )


def share(rows, category):
    return sum(c == category for _, c, _ in rows) / len(rows)


@pytest.mark.browser
@pytest.mark.timeout(1200)  # its setup trains the model
def test_clicks_in_one_category_raise_its_share_and_show_in_the_history(shop, served_model, page):
    user = "u5"
    posted = []  # (body, Authorization header) of each POST /v1/events the page sends

    def record(request):
        if request.method == "POST" and request.url.endswith("/v1/events"):
            posted.append((request.post_data_json, request.headers.get("authorization")))

    page.on("request", record)
    page.goto(f"{served_model.url}/demo?users=u5,u12,u40")
    assert page.locator("#example-users button").all_inner_texts() == ["u5", "u12", "u40"]
    page.fill("#token", TOKEN)
    page.fill("#user-id", user)
    page.click("#show")
    wait_for_list(page, 1)
    first = shown(page)
    assert len(first) == 10 and not any(h for _, _, h in first)  # nothing is new in the first list
    assert page.inner_text("#model-version") == Registry(shop / "models").current()
    assert page.inner_text("#arm") == "no experiment"
    assert page.inner_text("#list-kind") == "personalized"
    frame = catalog_frame(shop)
    assert all(frame.loc[i, "category"] == c for i, c, _ in first)  # categories come from the catalog

    counts = Counter(c for _, c, _ in first)
    category = min(sorted(counts), key=lambda c: counts[c])  # the least recommended of those shown
    before, rows, clicked, request_ids, generation = share(first, category), first, [], [], 1
    for _ in range(5):
        target = next((i for i, c, _ in rows if c == category and i not in clicked), None)
        if target is None:
            break
        request_ids.append(page.inner_text("#request-id"))
        page.click(f'#items li[data-item-id="{target}"] button')
        generation += 1
        wait_for_list(page, generation)
        clicked.append(target)
        previous, rows = rows, shown(page)
        entered = {i for i, _, _ in rows} - {i for i, _, _ in previous}
        assert {i for i, _, h in rows if h} == entered  # exactly the items that entered are highlighted
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # before the assertions below, so a failure leaves one too
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
    after = share(rows, category)
    assert len(clicked) >= 3, f"only {len(clicked)} '{category}' items to click"
    assert after > before, f"'{category}' share {before:.0%} -> {after:.0%} after clicking {clicked}"

    # the history panel: the clicks, newest first, as the online store holds them
    history = page.eval_on_selector_all(
        "#history-items li[data-item-id]", "rows => rows.map(r => [r.dataset.itemId, r.dataset.eventType])"
    )
    assert history[: len(clicked)] == [[i, "click"] for i in reversed(clicked)]
    online = httpx.get(f"{served_model.url}/v1/users/{user}/history").json()
    assert [i for i, _ in history] == list(reversed(online["recent_items"]))
    assert page.inner_text("#last-event") == online["last_event_ts"]

    # each click went out as POST /v1/events with the token and the request_id of the list it came from
    assert [(e["user_id"], e["item_id"], e["event_type"], e["request_id"]) for e, _ in posted] == [
        (user, i, "click", r) for i, r in zip(clicked, request_ids)
    ]
    assert {auth for _, auth in posted} == {f"Bearer {TOKEN}"}


@pytest.mark.browser
@pytest.mark.timeout(1200)
def test_an_anonymous_user_gets_a_cold_start_list_and_a_missing_token_is_reported(served_model, page):
    page.goto(f"{served_model.url}/demo")
    page.click("#anonymous")
    wait_for_list(page, 1)
    user = page.input_value("#user-id")
    assert user.startswith("anon-") and page.inner_text("#shown-user") == user
    assert page.inner_text("#list-kind") == "cold start: popular items"
    assert len(shown(page)) == 10
    assert page.locator("#history-items li.empty").count() == 1
    page.click("#items li.item:first-child button")  # no token typed: the API says 401, the page shows why
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=20_000)
    assert page.inner_text("#status").startswith("401")
    assert httpx.get(f"{served_model.url}/v1/users/{user}/history").json()["recent_items"] == []
