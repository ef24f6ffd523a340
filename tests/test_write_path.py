"""The write path's promises, each shown by injecting its fault: a torn write leaves the feedback
log as it was and is answered 503; rewrites and new files are fsynced in order; forgetting a user
touches only the files holding the user's lines; received_at and deleted_at come from one clock;
bodies, batches, tokens and bind addresses are checked before they can hurt."""

import asyncio
import ipaddress
import json
import os
import resource
import signal
import socket
import sqlite3
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials
from typer.testing import CliRunner

from rtrec.feature_store import definitions, open_store
from rtrec.landing import ensure_landing_zone
from rtrec.settings import Settings, get_settings
from rtrec.shared_log import iso
from serving import deps
from serving import feedback_log as feedback_module
from serving.feedback_log import FeedbackLog, NotDurable
from tests.http_server import AUTH, TOKEN, Server


def event(user, item="i1", **fields):
    return {"event_id": f"e-{uuid.uuid4()}", "user_id": user, "item_id": item, "event_type": "view", **fields}


def log_lines(feedback_dir):
    """Every line of every feedback file, parsed: a partial or merged line fails here."""
    rows = []
    for path in sorted(Path(feedback_dir).glob("*.jsonl")):
        text = path.read_text()
        if text and not text.endswith("\n"):
            pytest.fail(f"{path.name} ends in a partial line: ...{text[-60:]!r}")
        rows += [json.loads(line) for line in text.splitlines()]
    return rows


def snapshot(feedback_dir):
    return {p.name: p.read_bytes() for p in sorted(Path(feedback_dir).glob("*.jsonl"))}


def make_site(data, settings=None):
    """A data directory a server starts on: the landing zone and the Feast registry, no model."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RTREC_DATA_DIR", str(data))
        get_settings.cache_clear()
        ensure_landing_zone(get_settings().landing_dir)
        open_store(settings or get_settings()).apply(definitions())
    get_settings.cache_clear()
    return data


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(make_site(tmp_path_factory.mktemp("write-path") / "data"), workers=1)
    yield srv
    srv.kill()


# -- a failed append leaves the log as it was -----------------------------------------------------


class Commits:
    """The index connection, counting its commits; the one numbered `fail` fails (as on a full disk)."""

    def __init__(self, con, fail=None):
        self.con, self.count, self.fail = con, 0, fail

    def execute(self, sql, *args):
        if sql == "commit":
            self.count += 1
            if self.count == self.fail:
                raise sqlite3.OperationalError("database or disk is full")
        return self.con.execute(sql, *args)

    def executemany(self, *args):
        return self.con.executemany(*args)


def half_then_fail(real_write, err):
    """os.write that writes half of what it is given, then fails: a torn write."""
    state = {"done": False}

    def write(fd, data):
        if state["done"]:
            raise OSError(err, os.strerror(err))
        state["done"] = True
        return real_write(fd, bytes(data[: max(1, len(data) // 2)]))

    return write


@pytest.mark.parametrize("fault", ["torn write", "fsync", "commit"])
def test_a_failed_append_leaves_the_log_as_it_was(tmp_path, monkeypatch, fault):
    feedback = FeedbackLog(tmp_path / "feedback")
    feedback.append([event("u1")])
    before = snapshot(feedback.dir)
    retry = [event("u2"), event("u3")]
    with monkeypatch.context() as patch:
        if fault == "torn write":
            patch.setattr(os, "write", half_then_fail(os.write, 28))  # ENOSPC
        elif fault == "fsync":
            real_fsync = os.fsync

            def fsync(fd):
                if os.fstat(fd).st_size > len(before[feedback.path.name]):
                    raise OSError(5, "Input/output error")
                real_fsync(fd)

            patch.setattr(os, "fsync", fsync)
        else:
            feedback.index = Commits(feedback.index, fail=1)
        with pytest.raises(NotDurable):
            feedback.append(retry)
    feedback.index = getattr(feedback.index, "con", feedback.index)
    assert snapshot(feedback.dir) == before  # not a byte more: no partial line, no unacknowledged line
    assert len(feedback.append(retry)) == 2  # the index never recorded them
    ids = [row["event_id"] for row in log_lines(feedback.dir)]
    assert sorted(ids) == sorted({*ids}) and {e["event_id"] for e in retry} <= set(ids)


def concurrent_appends(feedback, calls):
    """Append each list of `calls` from its own thread: the first alone, its fsync held back until
    all the others wait behind it; returns each call's answer (or its NotDurable), in order."""
    real_fsync, held, release = os.fsync, threading.Event(), threading.Event()

    def slow_fsync(fd):
        if not held.is_set():
            held.set()
            release.wait(10)
        real_fsync(fd)

    answers = [None] * len(calls)

    def run(n):
        try:
            answers[n] = feedback.append(calls[n])
        except NotDurable as err:
            answers[n] = err

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", slow_fsync)
        threads[0].start()
        assert held.wait(10)
        for queued, thread in enumerate(threads[1:], start=1):
            thread.start()  # once the one before it waits: the calls queue in order
            deadline = time.monotonic() + 10
            while len(feedback.waiting) < queued and time.monotonic() < deadline:
                time.sleep(0.002)
        release.set()
        for thread in threads:
            thread.join(10)
    return answers


def test_concurrent_appends_share_one_commit_and_each_gets_its_own_events(tmp_path):
    feedback = FeedbackLog(tmp_path / "feedback")
    feedback.append([event("u0")])
    feedback.index = Commits(feedback.index)
    shared = event("u1")  # one id in three calls: accepted once, for the first of them
    calls = [[event("lead")], *([event(f"u{n}"), event(f"u{n}")] for n in range(2, 9)), [shared], [shared], [shared]]
    answers = concurrent_appends(feedback, calls)
    expected = [[e["event_id"] for e in call] for call in calls[:-2]] + [[], []]
    assert [[e["event_id"] for e in answer] for answer in answers] == expected
    assert feedback.index.count == 2  # the lead alone, then every call that waited behind it, in one commit
    logged = log_lines(feedback.dir)
    assert [r["event_id"] for r in logged[1:]] == [i for ids in expected for i in ids]  # each once, none lost
    assert [r["seq"] for r in logged] == list(range(1, len(logged) + 1))


def test_a_failed_group_commit_fails_every_call_in_it_and_keeps_nothing_of_them(tmp_path):
    feedback = FeedbackLog(tmp_path / "feedback")
    feedback.append([event("u0")])
    feedback.index = Commits(feedback.index, fail=2)  # the group's commit, after the lead's
    lead, *queued = [[event(f"u{n}")] for n in range(6)]
    answers = concurrent_appends(feedback, [lead, *queued])
    assert [e["event_id"] for e in answers[0]] == [lead[0]["event_id"]]
    assert all(isinstance(answer, NotDurable) for answer in answers[1:])
    assert [r["event_id"] for r in log_lines(feedback.dir)][1:] == [lead[0]["event_id"]]  # not a byte of theirs
    assert all(len(feedback.append(call)) == 1 for call in queued)  # the retries land, once each
    assert len(log_lines(feedback.dir)) == 2 + len(queued)


def test_a_file_that_cannot_be_cut_back_is_never_appended_to_again(tmp_path, monkeypatch):
    feedback = FeedbackLog(tmp_path / "feedback")
    feedback.append([event("u1")])
    damaged = feedback.path
    committed = damaged.read_bytes()
    retry = [event("u2")]
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", half_then_fail(os.write, 5))
        patch.setattr(os, "ftruncate", lambda fd, size: (_ for _ in ()).throw(OSError(5, "Input/output error")))
        with pytest.raises(NotDurable):
            feedback.append(retry)
    assert damaged.read_bytes() != committed  # the torn tail is still there...
    assert len(feedback.append(retry)) == 1
    assert feedback.path != damaged and damaged.read_bytes().startswith(committed)  # ...and nothing went after it
    FeedbackLog(feedback.dir)  # the next worker start cuts the uncommitted tail off
    assert damaged.read_bytes() == committed
    assert [row["event_id"] for row in log_lines(feedback.dir)].count(retry[0]["event_id"]) == 1


def test_a_crash_between_append_and_commit_is_cut_off_at_the_next_start(tmp_path):
    feedback = FeedbackLog(tmp_path / "feedback")
    feedback.append([event("u1")])
    committed = feedback.path.read_bytes()
    with open(feedback.path, "ab") as crashed:  # what a worker killed before its commit leaves behind
        crashed.write((json.dumps(event("ghost")) + "\n" + '{"event_id": "half').encode())
    FeedbackLog(feedback.dir)
    assert feedback.path.read_bytes() == committed


def test_a_torn_write_over_http_is_a_503_and_the_retry_lands_once(tmp_path, redis_url):
    """RLIMIT_FSIZE lowered on the running server (SIGXFSZ ignored): its next append to the feedback
    log fails part-way with EFBIG, as on a full disk. The online store is Redis, out of process."""
    site = tmp_path / "data"
    make_site(site, Settings(data_dir=site, online_store="redis", redis_url=redis_url))
    feedback = site / "landing" / "feedback"

    def big(n):  # long ids: a few hundred events make a file of a few hundred KB
        return [event(f"torn-{n}", "i" * 128, request_id="r" * 128) for _ in range(n)]

    srv = Server(
        site,
        workers=1,
        preexec=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
        RTREC_ONLINE_STORE="redis",
        RTREC_REDIS_URL=redis_url,
    )
    try:
        first, second = big(300), big(301)
        assert httpx.post(f"{srv.url}/v1/events", json={"events": first}, headers=AUTH).status_code == 202
        largest = max(p.stat().st_size for p in feedback.glob("*.jsonl"))
        _, hard = resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (largest + 4096, hard))  # the fault
        before = snapshot(feedback)
        for _ in range(2):  # the failure, then a retry while the fault persists
            reply = httpx.post(f"{srv.url}/v1/events", json={"events": second}, headers=AUTH)
            assert 500 <= reply.status_code < 600
            log_lines(feedback)  # no partial line
            assert snapshot(feedback) == before  # no line at all
            assert reply.status_code == 503, reply.text
            assert "retry" in reply.json()["detail"] and "EFBIG" in reply.json()["detail"]
        resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))  # the fault clears
        reply = httpx.post(f"{srv.url}/v1/events", json={"events": second}, headers=AUTH)
        assert reply.status_code == 202 and reply.json()["accepted"] == len(second)
        logged = [row["event_id"] for row in log_lines(feedback)]
        for sent in first + second:
            assert logged.count(sent["event_id"]) == 1
        assert httpx.post(f"{srv.url}/v1/events", json={"events": second}, headers=AUTH).json()["accepted"] == 0
    finally:
        srv.kill()


# -- rewrites and new files are fsynced -----------------------------------------------------------


def test_rewrites_and_new_files_are_fsynced_in_order(tmp_path, monkeypatch):
    feedback_dir = (tmp_path / "feedback").resolve()
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    feedback = FeedbackLog(feedback_dir)
    feedback.append([event("u1"), event("u2")])
    path = str(feedback.path)
    # a new file's name is durable (its folder fsynced) before a line in it is acknowledged
    assert calls.index(("fsync", str(feedback_dir))) < calls.index(("fsync", path))

    calls.clear()
    assert feedback.forget_user("u1").removed == 1
    tmp = path + ".tmp"
    fsynced_tmp, replaced = calls.index(("fsync", tmp)), calls.index(("replace", tmp, path))
    assert fsynced_tmp < replaced < calls.index(("fsync", str(feedback_dir)), replaced)


# -- forgetting costs what the user has, not what the log has -------------------------------------


def test_forget_rewrites_only_the_files_holding_the_user(tmp_path, monkeypatch):
    feedback = FeedbackLog(tmp_path / "feedback", max_file_bytes=2_000)
    target_lines = 0
    for n in range(80):
        user = "target" if n in (5, 6, 47) else f"u{n % 7}"
        target_lines += user == "target"
        feedback.append([event(user, f"i{n}")])
    files = sorted(feedback.dir.glob("*.jsonl"))
    holding = {p.name for p in files if '"target"' in p.read_text()}
    assert len(files) > 5 and 0 < len(holding) < len(files) - 2  # rotated; the user is in a few files
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    others_before = [row for row in log_lines(feedback.dir) if row["user_id"] != "target"]

    read = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.name) or real_read_bytes(self))
    time.sleep(0.01)  # a rewrite would show in mtime_ns
    forgetting = feedback.forget_user("target")

    assert forgetting.removed == target_lines
    assert set(read) == holding  # not one other file was read, let alone parsed or rewritten
    for path in sorted(feedback.dir.glob("*.jsonl")):
        if path.name not in holding:
            assert (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes()) == before[path.name]
    assert [row for row in log_lines(feedback.dir) if row["user_id"] != "target"] == others_before
    assert not [row for row in log_lines(feedback.dir) if row["user_id"] == "target"]
    assert feedback.forget_user("target").removed == 0


def test_an_index_from_before_files_were_recorded_is_adopted(tmp_path):
    """Files written before the index recorded which users they hold are indexed at the first start."""
    feedback_dir = tmp_path / "feedback"
    feedback_dir.mkdir()
    old = [event("u1"), event("u2"), event("u1")]
    (feedback_dir / "api-old.jsonl").write_text("".join(json.dumps(e) + "\n" for e in old))
    with sqlite3.connect(feedback_dir / "event_ids.sqlite") as con:
        con.execute("create table event_ids (event_id text primary key, user_id text)")
        con.executemany("insert into event_ids values (?, ?)", [(e["event_id"], e["user_id"]) for e in old])
    feedback = FeedbackLog(feedback_dir)
    assert feedback.forget_user("u1").removed == 2
    assert [row["user_id"] for row in log_lines(feedback_dir)] == ["u2"]


# -- one clock for received_at and deleted_at -----------------------------------------------------


def test_received_at_and_deleted_at_are_ordered_across_workers_even_when_time_stands_still(tmp_path, monkeypatch):
    monkeypatch.setattr(feedback_module.time, "time_ns", lambda: 1_800_000_000_000_000_000)
    one, two = FeedbackLog(tmp_path / "feedback"), FeedbackLog(tmp_path / "feedback")  # two workers
    before = one.append([event("u1")])[0]["received_at"]
    forgetting = two.forget_user("u1")
    after = one.append([event("u1")])[0]["received_at"]
    assert before < iso(forgetting.deleted_at) < after
    assert datetime.fromisoformat(before) < forgetting.deleted_at < datetime.fromisoformat(after)
    assert forgetting.removed == 1
    recorded = [json.loads(line) for line in (tmp_path / "deletions.jsonl").read_text().splitlines()]
    assert recorded == [{"user_id": "u1", "deleted_at": iso(forgetting.deleted_at)}]
    assert [row["received_at"] for row in log_lines(tmp_path / "feedback")] == [after]


# -- bodies, batches, tokens ---------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_is_cut_off_without_being_read(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"x" * 65_536
        for _ in range(17):  # 1.1 MB of a 2 MB body; the rest is never sent
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = b""
        while b"}" not in reply:  # a server that reads the whole body first would never answer
            got = conn.recv(65_536)
            assert got, f"connection closed after {reply!r}"
            reply += got
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"larger than 1000000 bytes" in reply

    def two_megabytes():
        for _ in range(32):
            yield b"x" * 65_536

    reply = httpx.post(
        f"{server.url}/v1/events", content=two_megabytes(), headers={**AUTH, "content-type": "application/json"}
    )
    assert reply.status_code == 413
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.post(f"{server.url}/v1/events", json=event("u1"), headers=AUTH).status_code == 202


def test_an_oversized_batch_is_refused_before_any_event_is_validated(server):
    invalid = {"events": [{"user_id": "", "event_type": "teleport"}] * 501}
    reply = httpx.post(f"{server.url}/v1/events", json=invalid, headers=AUTH)
    assert reply.status_code == 413
    assert reply.json() == {"detail": "events: at most 500 events per request, got 501"}
    valid = {"events": [event("u1") for _ in range(500)]}
    assert httpx.post(f"{server.url}/v1/events", json=valid, headers=AUTH).json()["accepted"] == 500


def test_the_token_check_accepts_the_token_and_nothing_else(server):
    url = f"{server.url}/v1/events"
    assert httpx.post(url, json=event("u1"), headers=AUTH).status_code == 202
    same_length = TOKEN[:-1] + chr(ord(TOKEN[-1]) + 1)
    for wrong in (same_length, TOKEN + "x", TOKEN[:-1]):
        assert httpx.post(url, json=event("u1"), headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    not_ascii = {"Authorization": "Bearer t\xe9st-token".encode("latin-1")}
    assert httpx.post(url, json=event("u1"), headers=not_ascii).status_code == 401  # a 401, not a 500


def test_the_token_is_compared_in_constant_time(monkeypatch):
    compared = []
    real = deps.hmac.compare_digest
    monkeypatch.setattr(deps.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    settings = Settings(api_token="s3cret-token")
    asyncio.run(deps.require_token(settings, HTTPAuthorizationCredentials(scheme="Bearer", credentials="s3cret-token")))
    with pytest.raises(HTTPException) as refused:
        asyncio.run(
            deps.require_token(settings, HTTPAuthorizationCredentials(scheme="Bearer", credentials="s3cret-tokem"))
        )
    assert refused.value.status_code == 401
    assert compared == [(b"s3cret-token", b"s3cret-token"), (b"s3cret-tokem", b"s3cret-token")]


# -- rtrec serve refuses an open write path --------------------------------------------------------


@pytest.fixture(params=["uvicorn", "granian"])
def served(data_dir, monkeypatch, request):
    """`rtrec serve` on each server, with the server's start replaced: the host it would have bound, or None."""
    import granian
    import uvicorn

    from cli.main import app

    bound = []
    monkeypatch.setenv("RTREC_API_SERVER", request.param)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: bound.append(kwargs["host"]))

    def granian_server(target, **kwargs):  # granian binds an IP address: a name would fail at start
        return SimpleNamespace(serve=lambda: bound.append(str(ipaddress.ip_address(kwargs["address"]))))

    monkeypatch.setattr(granian, "Granian", granian_server)
    monkeypatch.delenv("RTREC_API_TOKEN", raising=False)
    # `serve --workers 2` points Prometheus at its files through the environment: undone after the test
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")

    def serve(*options, token=None):
        if token:
            monkeypatch.setenv("RTREC_API_TOKEN", token)
        get_settings.cache_clear()
        done = CliRunner().invoke(app, ["serve", *options])
        get_settings.cache_clear()
        return done, (bound.pop() if bound else None)

    serve.server = request.param
    return serve


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_serve_refuses_a_network_address_without_a_token(served, host):
    done, bound = served("--host", host)
    assert done.exit_code == 2 and bound is None
    assert "RTREC_API_TOKEN" in done.output and "--insecure" in done.output


def test_serve_names_a_host_that_does_not_resolve(served):
    done, bound = served("--host", "no-such-host.invalid", "--insecure")
    if served.server == "uvicorn":  # uvicorn finds out when it binds (replaced here)
        assert bound == "no-such-host.invalid"
    else:  # granian binds an address: the name is resolved first, and a clear error names it
        assert done.exit_code == 2 and bound is None
        assert "--host 'no-such-host.invalid' does not resolve" in done.output


@pytest.mark.parametrize(
    ("options", "token", "host"),
    [
        ((), None, "127.0.0.1"),
        (("--host", "localhost"), None, "localhost"),
        (("--host", "::1"), None, "::1"),
        (("--host", "0.0.0.0"), "a-token", "0.0.0.0"),
        (("--host", "0.0.0.0", "--insecure"), None, "0.0.0.0"),
    ],
)
def test_serve_binds_loopback_or_with_a_token_or_when_told(served, options, token, host):
    done, bound = served(*options, token=token)
    assert done.exit_code == 0, done.output
    if served.server == "granian" and host == "localhost":
        assert ipaddress.ip_address(bound).is_loopback  # the name, resolved
    else:
        assert bound == host
