"""Experiments: two model versions served side by side, each user in one arm.

Files, under ``$RTREC_DATA_DIR/experiments``: ``current.json`` (the running experiment, replaced
atomically; every worker reads it on its tick), ``log.jsonl`` (every start and stop, fsynced) and
``impressions/<experiment id>/*.jsonl`` (the lists served while it ran, see `serving.impressions`).

Assignment is a hash of the experiment id and the user id: sticky across requests and workers,
and independent between experiments. An arm's version is a registry version, or ``popular``: the
catalog's popularity list (the list cold starts get), to measure a model against MostPop. In
shadow mode everyone is shown the control's list; the treatment's list is scored and logged too
for the treatment share, never shown.

A request id says which version and arm answered (``<uuid hex>.<arm>.<version>``), so whichever
worker receives the click attributes it without a lookup; the report joins on the impression log
instead, so a made-up request id counts for nothing there.

The report's intervals are per user (users are what is randomised), so each impression carries a
user key: an HMAC of the user id under the experiment's salt. The salt lives only in
``current.json``, never in the log: once the experiment stops, the keys cannot be linked to a user
by anyone, the service included; while it runs, only the service can.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from model.registry import Registry
from rtrec.durable import append_json_line, fsync_dir, replace_durably

POPULAR = "popular"
ARMS = ("control", "treatment")
NO_ARM = "none"  # the Prometheus label of lists served outside an experiment
SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a version name that is a plain directory name
TOKEN = re.compile(r"[0-9a-f]{32}")  # the random part of a request id


class ExperimentError(RuntimeError):
    pass


@dataclass(frozen=True)
class Experiment:
    id: str
    control: str
    treatment: str
    share: float  # of users in the treatment arm
    shadow: bool
    started_at: str
    salt: str | None = None  # of the user keys; only the running experiment has it

    def arm(self, user_id: str) -> str:
        digest = hashlib.sha256(f"{self.id}\x00{user_id}".encode()).digest()
        return "treatment" if int.from_bytes(digest[:8], "big") < self.share * 2**64 else "control"

    def user_key(self, user_id: str) -> str:
        return hmac.new(bytes.fromhex(self.salt), user_id.encode(), "sha256").hexdigest()[:24]

    def version(self, arm: str) -> str:
        return self.treatment if arm == "treatment" else self.control


def request_id(arm: str, version: str) -> str:
    return f"{uuid.uuid4().hex}.{arm}.{version}"


def served_by(request_id: str | None, registry: Registry) -> tuple[str, str] | None:
    """(version, arm) that a request id names when it has this API's form and the version is
    `popular` or in the registry; else None. So a metric label never holds arbitrary client text."""
    parts = (request_id or "").split(".")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or parts[1] not in (*ARMS, NO_ARM):
        return None
    if not SAFE_NAME.fullmatch(parts[2]):
        return None
    version = parts[2]
    return (version, parts[1]) if version == POPULAR or (registry.versions / version).is_dir() else None


class Experiments:
    def __init__(self, root: Path, registry: Registry) -> None:
        self.root, self.registry = root, registry
        self.pointer = root / "current.json"
        self.log = root / "log.jsonl"

    def impressions_dir(self, experiment_id: str) -> Path:
        return self.root / "impressions" / experiment_id

    def current(self) -> Experiment | None:
        try:
            return Experiment(**json.loads(self.pointer.read_text()))
        except FileNotFoundError:
            return None

    def get(self, experiment_id: str | None = None) -> Experiment:
        """The experiment of that id, or the running one (else the last one) when no id is given."""
        started = [Experiment(**e["experiment"]) for e in self._entries() if e["action"] == "start"]
        if experiment_id is None:
            current = self.current()
            if current is not None:
                return current
            if not started:
                raise ExperimentError("no experiment has been started")
            return started[-1]
        for experiment in started:
            if experiment.id == experiment_id:
                return experiment
        raise ExperimentError(f"no experiment {experiment_id!r}")

    def start(self, control: str, treatment: str, share: float, shadow: bool = False) -> Experiment:
        """Start an experiment (the same version in both arms is an A/A test)."""
        if not 0.0 < share < 1.0:
            raise ExperimentError(f"share: must be between 0 and 1 (exclusive), got {share}")
        for arm, version in (("control", control), ("treatment", treatment)):
            if version == POPULAR:
                continue
            if not SAFE_NAME.fullmatch(version):
                raise ExperimentError(f"{arm}: {version!r} is not a version name")
            self.registry.path(version)  # RegistryError names the missing version
        with self._locked():
            running = self.current()
            if running is not None:
                raise ExperimentError(f"experiment {running.id} is running: stop it first")
            now = datetime.now(UTC)
            experiment = Experiment(
                id=now.strftime("x%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4],
                control=control,
                treatment=treatment,
                share=share,
                shadow=shadow,
                started_at=now.isoformat(),
                salt=secrets.token_hex(16),
            )
            self.impressions_dir(experiment.id).mkdir(parents=True, exist_ok=True)
            self._record({"action": "start", "experiment": asdict(replace(experiment, salt=None))})
            replace_durably(self.pointer, json.dumps(asdict(experiment)))  # workers read all of it or none
        return experiment

    def stop(self, winner: str | None = None) -> Experiment:
        """End the running experiment; `winner` (one of its versions) is promoted through the
        registry first, so serving goes from the experiment straight to the winner."""
        with self._locked():
            experiment = self.current()
            if experiment is None:
                raise ExperimentError("no experiment is running")
            if winner is not None:
                if winner not in (experiment.control, experiment.treatment):
                    raise ExperimentError(
                        f"winner: {winner!r} is not in experiment {experiment.id} "
                        f"({experiment.control} vs {experiment.treatment})"
                    )
                if winner == POPULAR:
                    raise ExperimentError("winner: the popularity list is not a registry version to promote")
                self.registry.promote(winner, reason=f"experiment {experiment.id}")
            self._record({"action": "stop", "id": experiment.id, "winner": winner})
            self.pointer.unlink()  # and the salt with it: the user keys can no longer be linked
            fsync_dir(self.root)
        return experiment

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One start or stop at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _entries(self) -> list[dict]:
        if not self.log.exists():
            return []
        entries = []
        for line in self.log.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:  # a line a crash cut short: that start or stop never finished
                continue
        return entries

    def _record(self, entry: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        entry["at"] = datetime.now(UTC).isoformat()
        append_json_line(self.log, entry)
