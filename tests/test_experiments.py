"""Experiments: users split between two versions, sticky across workers; events attributed to the
arm that served the list; the report's counts and intervals; shadow mode; the online CTR."""

import json
import math
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from model.experiment_report import experiment_report, ratio_estimate
from model.experiments import Experiment, ExperimentError, Experiments, request_id, served_by
from model.registry import Registry, RegistryError
from rtrec.settings import get_settings
from serving.app import create_app
from serving.metrics import forget_dead_workers
from serving.online_ctr import SlidingWindow, ctr_family
from tests.http_server import AUTH, Server
from tests.sites import add_version, make_site, settle

RTREC = str(Path(sys.executable).with_name("rtrec"))


@pytest.fixture(autouse=True)
def fresh_settings():
    yield
    get_settings.cache_clear()


def two_versions(tmp_path, monkeypatch, good_model):
    """A site whose registry holds v-a (current) and v-b, and its experiments."""
    data = make_site(tmp_path, monkeypatch)
    registry = Registry(data / "models")
    registry.promote(add_version(data, good_model, "v-a"))
    add_version(data, good_model, "v-b")
    return data, Experiments(data / "experiments", registry)


def cli(data, *args):
    run = subprocess.run([RTREC, *args], env={"RTREC_DATA_DIR": str(data), "PATH": ""}, capture_output=True, text=True)
    return run.returncode, run.stdout + run.stderr


def test_arms_are_sticky_balanced_and_independent_between_experiments():
    users = [f"user-{n}" for n in range(20_000)]
    first = Experiment("x1", "v-a", "v-b", 0.3, False, "")
    arms = [first.arm(u) for u in users]
    assert arms == [first.arm(u) for u in users]  # the same user, the same arm, every time
    assert abs(arms.count("treatment") / len(users) - 0.3) < 0.015
    second = Experiment("x2", "v-a", "v-b", 0.3, False, "")
    both = Counter((a, second.arm(u)) for a, u in zip(arms, users))
    assert abs(both["treatment", "treatment"] / len(users) - 0.09) < 0.01  # a new experiment, a new draw


def test_request_ids_name_only_versions_the_registry_holds(tmp_path):
    registry = Registry(tmp_path)
    (registry.versions / "v-a").mkdir(parents=True)
    token = uuid.uuid4().hex
    assert served_by(request_id("treatment", "v-a"), registry) == ("v-a", "treatment")
    assert served_by(f"{token}.none.popular", registry) == ("popular", "none")
    made_up = ["", "abc", f"{token}.treatment.v-z", f"{token}.winner.v-a", f"{token}.control..", "abc.control.v-a"]
    for rid in [None, *made_up, f"{token}.control.v-a.x", f"{token}.control.{'../' * 3}"]:
        assert served_by(rid, registry) is None, rid


def test_intervals_are_per_user_not_per_list():
    # one list per user: the delta method is the binomial standard error (with Bessel's correction)
    clicked = np.array([1.0] * 30 + [0.0] * 70)
    ctr, variance = ratio_estimate(clicked, np.ones(100))
    assert ctr == 0.3 and variance == pytest.approx(0.3 * 0.7 / 99)
    # the same 100 users with 10 lists each, all clicked or none: 1,000 lists but still 100 users
    ctr, clustered = ratio_estimate(clicked * 10, np.full(100, 10.0))
    assert ctr == 0.3 and clustered == pytest.approx(variance)
    # against 1,000 independent users the interval would be sqrt(10) times narrower
    _, independent = ratio_estimate(np.repeat(clicked, 10), np.ones(1000))
    assert clustered / independent == pytest.approx(10 * 999 / 990, rel=1e-6)
    assert ratio_estimate(np.array([1.0]), np.array([2.0])) == (0.5, math.inf)  # one user bounds nothing


def test_starting_and_stopping_check_what_they_are_given(tmp_path, monkeypatch, good_model):
    data, experiments = two_versions(tmp_path, monkeypatch, good_model)
    with pytest.raises(RegistryError, match="v-missing"):
        experiments.start("v-a", "v-missing", 0.5)
    with pytest.raises(ExperimentError, match="share"):
        experiments.start("v-a", "v-b", 1.0)
    with pytest.raises(ExperimentError, match=r"treatment: '\.\./models' is not a version name"):
        experiments.start("v-a", "../models", 0.5)
    assert experiments.current() is None
    running = experiments.start("v-a", "v-b", 0.5)
    with pytest.raises(ExperimentError, match=f"{running.id} is running"):
        experiments.start("v-a", "v-b", 0.5)
    code, out = cli(data, "experiment", "stop", "--winner", "v-c")
    assert code == 2 and "winner: 'v-c' is not in experiment" in out
    assert experiments.current() == running  # a refused stop changes nothing
    code, out = cli(data, "experiment", "stop", "--winner", "v-b")
    assert code == 0 and "v-b is current" in out, out
    assert experiments.current() is None and Registry(data / "models").current() == "v-b"
    promotion = json.loads((data / "models" / "promotions.jsonl").read_text().splitlines()[-1])
    assert promotion["reason"] == f"experiment {running.id}"
    assert experiments.get().id == running.id  # the last one stays reportable...
    assert running.salt and running.salt not in experiments.log.read_text()  # ...its user keys unlinkable
    with experiments.log.open("a") as log:
        log.write('{"action": "start", "experim')  # a start a crash cut short
    assert experiments.get().id == running.id


def test_arms_are_served_attributed_reported_and_measured_across_workers(tmp_path, monkeypatch, good_model):
    data, experiments = two_versions(tmp_path, monkeypatch, good_model)
    server = Server(data, workers=2, RTREC_SERVING_TICK_SECONDS="0.2")
    try:
        url = server.url
        users = [f"shopper-{n}" for n in range(40)]
        views = [{"user_id": u, "item_id": f"i{n % 30}", "event_type": "view"} for n, u in enumerate(users)]
        assert httpx.post(f"{url}/v1/events", json={"events": views}, headers=AUTH).status_code == 202

        code, out = cli(data, "experiment", "start", "--control", "popular", "--treatment", "v-b", "--share", "0.5")
        assert code == 0, out
        experiment = experiments.current()
        settle(lambda: httpx.get(f"{url}/healthz").json()["experiment"] == experiment.id)  # on both workers

        lists = {"control": [], "treatment": []}
        for user in users:
            for _ in range(3):  # requests spread over both workers
                body = httpx.get(f"{url}/v1/recommendations/{user}").json()
                arm = experiment.arm(user)
                assert body["arm"] == arm  # sticky, whichever worker answers
                assert body["model_version"] == ("popular" if arm == "control" else "v-b")
                assert len(body["items"]) == 10
                lists[arm].append(body)
        assert min(len(v) for v in lists.values()) >= 30

        # treatment: a click on every list, carts on half; control: a click on every other list
        events = []
        for arm, bodies in lists.items():
            for n, body in enumerate(bodies):
                clicked = n % 2 == 0 or arm == "treatment"
                base = {"user_id": body["user_id"], "item_id": body["items"][0]["item_id"]}
                base["request_id"] = body["request_id"]
                if clicked:
                    events.append(base | {"event_id": f"click-{arm}-{n}", "event_type": "click"})
                if arm == "treatment" and n % 2:
                    events.append(base | {"event_id": f"cart-{arm}-{n}", "event_type": "add_to_cart"})
        made_up = {"user_id": users[0], "item_id": "i1", "event_type": "click", "request_id": "nothing-we-served"}
        forged = made_up | {"request_id": f"{uuid.uuid4().hex}.treatment.v-b"}  # well-formed, no such list
        for batch in (events[: len(events) // 2], events[len(events) // 2 :], events[:5], [made_up, forged]):
            assert httpx.post(f"{url}/v1/events", json={"events": batch}, headers=AUTH).status_code == 202

        code, out = cli(data, "experiment", "report", "--json")
        assert code == 0, out
        report = json.loads(out)
        assert report["experiment"]["id"] == experiment.id and report["running"]
        control, treatment = report["arms"]
        n_c, n_t = len(lists["control"]), len(lists["treatment"])
        assert (control["arm"], control["version"], control["requests"]) == ("control", "popular", n_c)
        assert (treatment["arm"], treatment["version"], treatment["requests"]) == ("treatment", "v-b", n_t)
        assert control["users"] + treatment["users"] == len(users)
        assert control["clicks"] == (n_c + 1) // 2  # repeated event ids count once
        assert treatment["clicks"] == n_t  # the forged id names no list: its click counts nowhere here...
        assert treatment["add_to_carts"] == n_t // 2
        assert control["ctr"] == pytest.approx(((n_c + 1) // 2) / n_c) and treatment["ctr"] == 1.0
        assert control["ctr_low"] < control["ctr"] < control["ctr_high"]
        assert report["difference"]["low"] > 0  # a treatment clicked every time beats one clicked half the time

        # ...while the live counters attribute by the request id alone (it names a real version)
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}

        def value(name, **labels):
            return sum(s.value for s in families[name].samples if labels.items() <= s.labels.items())

        assert value("rtrec_impressions", version="v-b", arm="treatment") == n_t
        assert value("rtrec_impressions", version="popular", arm="control") == n_c
        assert value("rtrec_attributed_events", version="v-b", arm="treatment", event_type="click") == n_t + 1
        assert value("rtrec_attributed_events", version="popular", arm="control", event_type="click") == (n_c + 1) // 2
        assert value("rtrec_online_ctr", version="popular", arm="control") == pytest.approx(((n_c + 1) // 2) / n_c)
        assert 0.9 < value("rtrec_online_ctr", version="v-b", arm="treatment") <= (n_t + 1) / n_t

        code, out = cli(data, "experiment", "stop", "--winner", "v-b")
        assert code == 0, out
        settle(lambda: httpx.get(f"{url}/v1/recommendations/{users[0]}").json()["arm"] is None)
        body = httpx.get(f"{url}/v1/recommendations/{users[0]}").json()
        assert body["model_version"] == "v-b" and body["request_id"].endswith(".none.v-b")
        assert httpx.get(f"{url}/healthz").json()["experiment"] is None
        assert experiment_report(experiments, data / "landing" / "feedback").running is False
    finally:
        server.kill()


def test_shadow_mode_shows_the_control_and_logs_the_treatment(tmp_path, monkeypatch, good_model):
    data, experiments = two_versions(tmp_path, monkeypatch, good_model)
    add_version(data, good_model, "v-broken", damage=True)
    settings = get_settings().model_copy(update={"serving_tick_seconds": 3600})
    with TestClient(create_app(settings)) as client:
        models = client.app.state.models
        experiments.start("v-a", "v-broken", 0.5)
        models.refresh()  # a treatment that cannot be loaded: no experiment, everyone on the served model
        health = client.get("/healthz").json()
        assert health["experiment"] is None and "v-broken" in health["experiment_error"]
        assert client.get("/v1/recommendations/anyone").json()["arm"] is None
        experiments.stop()

        experiment = experiments.start("v-a", "popular", 0.5, shadow=True)  # the treatment: MostPop, unseen
        models.refresh()
        users = [f"shadowed-{n}" for n in range(30)]
        views = [{"user_id": u, "item_id": f"i{n % 30}", "event_type": "view"} for n, u in enumerate(users)]
        assert client.post("/v1/events", json={"events": views}, headers=AUTH).status_code == 202
        bodies = [client.get(f"/v1/recommendations/{u}").json() for u in users]
        assert {b["model_version"] for b in bodies} == {"v-a"}  # everyone is shown the control
        assert {b["arm"] for b in bodies} == {"control", "treatment"}

        files = sorted(experiments.impressions_dir(experiment.id).glob("*.jsonl"))
        lines = [json.loads(line) for path in files for line in path.open()]
        by_id = {line["request_id"]: line for line in lines}
        treated = [b for b in bodies if b["arm"] == "treatment"]
        for body in bodies:
            line = by_id[body["request_id"]]
            assert line["items"] == [i["item_id"] for i in body["items"]] and "user_id" not in line
            assert line["user_key"] == experiment.user_key(body["user_id"]) != body["user_id"]
            assert ("shadow_items" in line) == (body["arm"] == "treatment")
        popular = client.app.state.catalog.current.top(10, set())
        assert all(len(by_id[b["request_id"]]["shadow_items"]) == 10 for b in treated)

        # a click on a shown item the unseen list also held is a shadow hit; one it did not hold is not
        clicks = []
        for kind in ("shared", "model only"):
            for body in treated:
                shadow_list = set(by_id[body["request_id"]]["shadow_items"])
                hits = [i["item_id"] for i in body["items"] if (i["item_id"] in shadow_list) == (kind == "shared")]
                if hits:
                    click = {"user_id": body["user_id"], "item_id": hits[0], "event_type": "click"}
                    clicks.append(click | {"request_id": body["request_id"]})
                    break
            else:
                raise AssertionError(f"no treated list with a {kind} item (popular: {popular})")
        assert client.post("/v1/events", json={"events": clicks}, headers=AUTH).status_code == 202
        # a line a crash cut short, and an event line repeated on another host, change nothing
        with files[0].open("a") as torn:
            torn.write('{"request_id": "' + treated[0]["request_id"][:20])
        repeated = sorted((data / "landing" / "feedback").glob("api-*.jsonl"))[-1].read_text().splitlines()[-1]
        (data / "landing" / "feedback" / "other-host.jsonl").write_text(repeated + "\n")

        report = experiment_report(experiments, data / "landing" / "feedback")
        control, treatment = report.arms
        assert (treatment.version, treatment.requests, treatment.clicks, treatment.shadow_hits) == (
            "popular",
            len(treated),
            2,
            1,
        )
        assert treatment.ctr == pytest.approx(1 / len(treated))  # the shadow's figure: its hits per list
        assert control.requests == len(bodies) - len(treated) and control.shadow_hits == 0
        rows = report.rows()
        assert "shadow hits" in rows[0] and [r["arm"] for r in rows] == ["control", "treatment (shadow)"]


def test_the_online_ctr_window_slides_and_adds_up_over_workers():
    now = [0.0]
    window = SlidingWindow(300, clock=lambda: now[0])
    for _ in range(4):
        window.impression("v-w", "treatment")
    window.click("v-w", "treatment")
    now[0] = 200.0
    window.impression("v-w", "treatment")
    window.click("v-w", "treatment")
    assert window.totals()["lists", "v-w", "treatment"] == 5
    now[0] = 320.0  # the first four lists and their click left the window
    window.publish()
    assert REGISTRY.get_sample_value("rtrec_window_impressions", {"version": "v-w", "arm": "treatment"}) == 1
    assert REGISTRY.get_sample_value("rtrec_window_clicks", {"version": "v-w", "arm": "treatment"}) == 1
    now[0] = 1000.0
    window.publish()
    assert REGISTRY.get_sample_value("rtrec_window_impressions", {"version": "v-w", "arm": "treatment"}) == 0

    # two workers' windows: the rate of the sums, not the sum of the rates
    text = "\n".join(
        [
            'rtrec_window_impressions{version="v",arm="control",pid="1"} 10',
            'rtrec_window_impressions{version="v",arm="control",pid="2"} 30',
            'rtrec_window_clicks{version="v",arm="control",pid="2"} 4',
            'rtrec_window_impressions{version="q",arm="none",pid="1"} 0',
        ]
    )
    ctr = ctr_family(text_string_to_metric_families(text))
    assert [(s.labels, s.value) for s in ctr.samples] == [({"version": "v", "arm": "control"}, 0.1)]


def test_nightly_reports_a_running_experiment_as_an_artifact(tmp_path, monkeypatch, good_model, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.nightly import report_experiment

    _, experiments = two_versions(tmp_path, monkeypatch, good_model)
    assert report_experiment() is None  # no experiment, no report
    experiment = experiments.start("popular", "v-b", 0.5)
    with TestClient(create_app(get_settings().model_copy(update={"serving_tick_seconds": 3600}))) as client:
        for n in range(20):  # both arms serve lists
            client.get(f"/v1/recommendations/another-user-{n}")
        body = client.get("/v1/recommendations/reported-user").json()
        click = {"user_id": "reported-user", "item_id": body["items"][0]["item_id"], "event_type": "click"}
        click["request_id"] = body["request_id"]
        assert client.post("/v1/events", json=click, headers=AUTH).status_code == 202
    report = report_experiment()
    arm = next(a for a in report["arms"] if a["arm"] == body["arm"])
    assert arm["clicks"] == 1 and sum(a["requests"] for a in report["arms"]) == 21
    assert report["experiment"]["id"] == experiment.id
    with get_client(sync_client=True) as prefect:
        keyed = ArtifactFilter(key=ArtifactFilterKey(any_=["experiment-report"]))
        artifact = prefect.read_artifacts(artifact_filter=keyed)[-1]
    assert experiment.id in artifact.description
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert [r["arm"] for r in rows] == ["control", "treatment", "treatment - control"]


def test_a_killed_workers_live_gauges_leave_the_sums(tmp_path):
    script = (
        "from serving import metrics; metrics.WINDOW_IMPRESSIONS.labels('v', 'control').set(7); "
        "import os; os._exit(0)"  # gone without a word, as after a SIGKILL
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=Path(__file__).parents[1])
    assert list(tmp_path.glob("gauge_livesum_*.db"))
    forget_dead_workers(tmp_path)
    assert not list(tmp_path.glob("gauge_livesum_*.db"))


def test_a_failing_shadow_model_is_counted_and_never_touches_the_users_list(tmp_path, monkeypatch, good_model):
    _, experiments = two_versions(tmp_path, monkeypatch, good_model)
    with TestClient(create_app(get_settings().model_copy(update={"serving_tick_seconds": 3600}))) as client:
        experiment = experiments.start("v-a", "v-b", 0.5, shadow=True)
        client.app.state.models.refresh()
        user = next(f"shadow-broken-{n}" for n in range(100) if experiment.arm(f"shadow-broken-{n}") == "treatment")
        view = {"user_id": user, "item_id": "i3", "event_type": "view"}
        assert client.post("/v1/events", json=view, headers=AUTH).status_code == 202
        shadow = client.app.state.models.running.models["v-b"]

        def broken(*args, **kwargs):
            raise RuntimeError("shadow exploded")

        monkeypatch.setattr(shadow, "recommend_batch", broken)  # what the batched route calls
        before = REGISTRY.get_sample_value("rtrec_shadow_errors_total") or 0.0
        body = client.get(f"/v1/recommendations/{user}").json()
        assert (body["model_version"], body["arm"], body["fallback"]) == ("v-a", "treatment", False)
        assert len(body["items"]) == 10
        assert REGISTRY.get_sample_value("rtrec_shadow_errors_total") == before + 1
        files = experiments.impressions_dir(experiment.id).glob("*.jsonl")
        (line,) = [json.loads(line) for path in files for line in path.open()]
        assert line["shadow_items"] is None and len(line["items"]) == 10  # the list is logged, the shadow is not


def test_a_failing_experiment_report_never_fails_the_nightly_run(data_dir, monkeypatch, prefect_harness):
    import flows.nightly

    for step, result in (("forget_in_landing", {}), ("etl", {}), ("materialize", {}), ("train", "trained")):
        monkeypatch.setattr(flows.nightly, step, lambda result=result, **_: result)

    def broken():
        raise OSError("impressions unreadable")

    monkeypatch.setattr(flows.nightly, "report_experiment", broken)
    results = flows.nightly.nightly(preset_name="tiny")
    assert results["train"] == "trained" and "experiment" not in results
