"""The model being served, and the watcher that reloads serving state while the API runs: the
model when the registry's pointer moves, the catalog when the item marts change."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from model.inference import Recommender
from model.registry import Registry
from serving import metrics

log = logging.getLogger("rtrec.serving")
RETRY_SECONDS = 30.0  # a version that failed to load is tried again after this, or when the pointer moves


class ModelHolder:
    """The current model, swapped for a new one when the registry's pointer changes.

    Requests take the recommender they find (it carries its version); a switch replaces it in one
    assignment, so a request runs entirely on the old model or entirely on the new one. Loading
    never raises: when the version the pointer names is missing or damaged, the previous model
    stays (none at startup: the API answers with the popular list) and `error` says why."""

    def __init__(self, registry: Registry, retry_seconds: float = RETRY_SECONDS) -> None:
        self.registry, self.retry_seconds = registry, retry_seconds
        self.recommender: Recommender | None = None
        self.error: str | None = None
        self._failed: tuple[str, float] | None = None  # (version, when) of the last failed load
        self.refresh()

    @property
    def version(self) -> str | None:
        recommender = self.recommender
        return recommender.version if recommender is not None else None

    @property
    def degraded(self) -> bool:
        """True when the requests are not answered by the model the registry names."""
        return self.recommender is None or self.error is not None

    def refresh(self) -> None:
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
            recommender = Recommender.load(self.registry.path(current))
            known = recommender.vocab.item_ids[:1]
            recommender.recommend([(known[0], "view")] if known else [], k=1)  # it must answer, not just load
        except Exception as err:
            metrics.MODEL_LOAD_FAILURES.inc()
            self._fail(current, f"model {current} could not be loaded: {type(err).__name__}: {err}")
            return
        old = self.version
        self.recommender, self.error, self._failed = recommender, None, None
        metrics.serving_version(current, old)
        log.info("serving model %s", current)

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
