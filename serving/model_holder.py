"""The model being served, and the watcher that reloads serving state while the API runs: the
model when the registry's pointer moves or an experiment starts or stops, the catalog when the
item marts change."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.experiments import POPULAR, Experiment, Experiments
from model.inference import Recommender
from model.registry import Registry
from rtrec.content import read_content
from serving import metrics

log = logging.getLogger("rtrec.serving")
RETRY_SECONDS = 30.0  # a version that failed to load is tried again after this, or when the pointer moves


@dataclass(frozen=True)
class Route:
    """Who answers one user's request: a model (None: the popular list) and, in an experiment, the
    user's arm and the shadow model scored beside it."""

    recommender: Recommender | None
    version: str | None
    arm: str | None = None
    experiment: Experiment | None = None
    shadow: Recommender | None = None
    shadow_version: str | None = None


@dataclass(frozen=True)
class Running:
    experiment: Experiment
    models: dict[str, Recommender | None]  # version -> its model (None for the popular list)


class ModelHolder:
    """The current model, swapped for a new one when the registry's pointer changes.

    Requests take the recommender they find (it carries its version); a switch replaces it in one
    assignment, so a request runs entirely on the old model or entirely on the new one. Loading
    never raises: when the version the pointer names is missing or damaged, the previous model
    stays (none at startup: the API answers with the popular list) and `error` says why."""

    def __init__(
        self,
        registry: Registry,
        experiments: Experiments | None = None,
        retry_seconds: float = RETRY_SECONDS,
        content_path: Path | None = None,
    ) -> None:
        self.registry, self.experiments, self.retry_seconds = registry, experiments, retry_seconds
        # items' text embeddings (rtrec/content.py): a model that reads them also scores the items
        # it was never trained on, taken up again by every loaded model whenever the file changes
        self.content_path = content_path
        self.recommender: Recommender | None = None
        self.running: Running | None = None  # the experiment being served, its models loaded
        self.error: str | None = None
        self.experiment_error: str | None = None
        self._failed: tuple[str, float] | None = None  # (version, when) of the last failed load
        self._experiment_failed: tuple[str, float] | None = None  # (experiment id, when) of the last failed load
        self.refresh()

    @property
    def version(self) -> str | None:
        recommender = self.recommender
        return recommender.version if recommender is not None else None

    @property
    def degraded(self) -> bool:
        """True when the requests are not answered by the model the registry names."""
        return self.recommender is None or self.error is not None

    def route(self, user_id: str) -> Route:
        """The model that answers this user: the served one, or in an experiment their arm's."""
        running, recommender = self.running, self.recommender  # each read once: a swap mid-request is not seen
        if running is None:
            return Route(recommender, recommender.version if recommender is not None else None)
        experiment = running.experiment
        arm = experiment.arm(user_id)
        shown = experiment.control if experiment.shadow else experiment.version(arm)
        shadow = experiment.treatment if experiment.shadow and arm == "treatment" else None
        return Route(
            running.models[shown],
            shown,
            arm,
            experiment,
            running.models[shadow] if shadow else None,
            shadow,
        )

    def refresh(self) -> None:
        self._refresh_model()
        if self.experiments is not None:
            self._refresh_experiment()
        self._refresh_content()

    def _refresh_content(self) -> None:
        """Give every loaded model (the served one, an experiment's) the content file as it is now."""
        stamp = self._content_file_stamp()
        served = self.recommender
        if served is not None and served.content_stamp != stamp:
            self.recommender = self._with_new_items(served)
        running = self.running
        if running is not None and any(m is not None and m.content_stamp != stamp for m in running.models.values()):
            models = {
                v: m if m is None or m.content_stamp == stamp else self._with_new_items(m)
                for v, m in running.models.items()
            }
            self.running = Running(running.experiment, models)

    def _refresh_experiment(self) -> None:
        """Serve the running experiment once both its versions are loaded; until then (or while one
        cannot be loaded) everyone gets the served model, and `experiment_error` says why."""
        experiment = self.experiments.current()
        running = self.running
        if experiment is None:
            if running is not None:
                self.running, self.experiment_error = None, None
                log.info("experiment %s stopped; serving %s", running.experiment.id, self.version)
            return
        if running is not None and running.experiment == experiment:
            return
        failed = self._experiment_failed
        if failed and failed[0] == experiment.id and time.monotonic() - failed[1] < self.retry_seconds:
            return
        models: dict[str, Recommender | None] = {}
        for version in {experiment.control, experiment.treatment}:
            try:
                models[version] = None if version == POPULAR else self._load(version)
            except Exception as err:
                metrics.MODEL_LOAD_FAILURES.inc()
                self.experiment_error = f"experiment {experiment.id}: model {version} could not be loaded: {err}"[:500]
                self._experiment_failed = (experiment.id, time.monotonic())
                log.error("%s; not serving the experiment", self.experiment_error)
                return
        self.running, self.experiment_error, self._experiment_failed = Running(experiment, models), None, None
        log.info("experiment %s: control %s, treatment %s", experiment.id, experiment.control, experiment.treatment)

    def _load(self, version: str) -> Recommender:
        """The version loaded and answering (the served one is reused), or an exception."""
        if version == self.version:
            return self.recommender
        running = self.running
        if running is not None and running.models.get(version) is not None:  # an experiment's winner
            return running.models[version]
        recommender = self._with_new_items(Recommender.load(self.registry.path(version)))
        known = recommender.vocab.item_ids[:1]
        recommender.recommend([(known[0], "view")] if known else [], k=1)  # it must answer, not just load
        return recommender

    def _refresh_model(self) -> None:
        try:
            current = self.registry.current()
        except Exception as err:  # an unreadable pointer: keep what is served
            self._fail(None, f"registry pointer unreadable: {err}")
            return
        if current == self.version:  # nothing new (a rollback to the served version clears an error)
            self.error = None
            return
        if current is None:  # the pointer is gone: keep serving what is served
            return
        if self._failed and self._failed[0] == current and time.monotonic() - self._failed[1] < self.retry_seconds:
            return
        try:
            recommender = self._load(current)
        except Exception as err:
            metrics.MODEL_LOAD_FAILURES.inc()
            self._fail(current, f"model {current} could not be loaded: {type(err).__name__}: {err}")
            return
        old = self.version
        self.recommender, self.error, self._failed = recommender, None, None
        metrics.serving_version(current, old)
        log.info("serving model %s", current)

    def _content_file_stamp(self) -> tuple[int, int, int] | None:
        if self.content_path is None:
            return None
        try:
            stat = self.content_path.stat()
        except OSError:  # no file yet, or one that cannot be read: the models keep what they have
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _with_new_items(self, recommender: Recommender) -> Recommender:
        """The recommender scoring the content file's new items too (itself when there is none),
        stamped with the file's state. An unreadable file keeps the items it had and is tried
        again when it changes."""
        stamp = self._content_file_stamp()
        extended = recommender
        if stamp is not None:
            try:
                extended = recommender.with_new_items(read_content(self.content_path))
            except Exception as err:
                log.error(
                    "%s could not be read (%s: %s); new items stay as they were",
                    self.content_path,
                    type(err).__name__,
                    err,
                )
        extended.content_stamp = stamp
        return extended

    def _fail(self, version: str | None, error: str) -> None:
        self.error = error[:500]
        if version is not None:
            self._failed = (version, time.monotonic())
        still = f"still serving {self.version}" if self.recommender else "answering with the popular list"
        log.error("%s; %s", self.error, still)


def watch(stop: threading.Event, every: float, *refreshers: Callable[[], object]) -> None:
    """Call each refresher every `every` seconds until `stop` is set; a failure waits for the next tick."""
    while not stop.wait(every):
        for refresh in refreshers:
            try:
                refresh()
            except Exception:  # a half-written registry or mart must not kill the watcher
                log.exception("reloading serving state failed; retrying next tick")
