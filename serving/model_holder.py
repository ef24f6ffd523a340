"""The model being served, and the watcher that switches it when the registry's pointer moves."""

import logging
import threading

from model.inference import Recommender
from model.registry import Registry
from serving import metrics

log = logging.getLogger("rtrec.serving")
RELOAD_SECONDS = 1.0


class ModelHolder:
    """The current model, swapped for a new one when the registry's pointer changes.

    Requests take the reference they find; a switch replaces it in one assignment, so a request
    runs entirely on the old model or entirely on the new one."""

    def __init__(self, registry: Registry) -> None:
        self.registry, self.recommender, self.version = registry, None, None
        self.refresh()

    def refresh(self) -> None:
        current = self.registry.current()
        if current and current != self.version:
            self.recommender = Recommender.load(self.registry.path(current))
            metrics.serving_version(current, self.version)
            self.version = current
            log.info("serving model %s", current)

    def watch(self, stop: threading.Event) -> None:
        while not stop.wait(RELOAD_SECONDS):
            try:
                self.refresh()
            except Exception:  # a half-written registry must not kill the watcher; retry next tick
                log.exception("model reload failed; still serving %s", self.version)
