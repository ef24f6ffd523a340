"""The online click-through rate: lists served and clicks on them over a sliding window, per
model version and arm, so that a dashboard shows a bad model within minutes.

Each worker counts what it sees in time slots and publishes its window sums as gauges that the
multiprocess collector adds up across workers (a click may reach another worker than the list it
answers); `/metrics` divides the sums (`ctr_family`), since rates of separate workers do not add.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from serving import metrics

SLOTS = 30  # the window moves in steps of a thirtieth of its length


class SlidingWindow:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.width, self.clock = seconds / SLOTS, clock
        self.slots: deque[tuple[int, Counter]] = deque()
        self.keys: set[tuple[str, str]] = set()  # every (version, arm) seen: an emptied window publishes 0
        self.mutex = threading.Lock()

    def impression(self, version: str, arm: str) -> None:
        self._add("lists", version, arm)

    def click(self, version: str, arm: str) -> None:
        self._add("clicks", version, arm)

    def _add(self, kind: str, version: str, arm: str) -> None:
        with self.mutex:
            slot = int(self.clock() // self.width)
            if not self.slots or self.slots[-1][0] != slot:
                self.slots.append((slot, Counter()))
            self.slots[-1][1][kind, version, arm] += 1
            self.keys.add((version, arm))

    def totals(self) -> Counter:
        with self.mutex:
            oldest = int(self.clock() // self.width) - SLOTS + 1
            while self.slots and self.slots[0][0] < oldest:
                self.slots.popleft()
            total: Counter = Counter()
            for _, counts in self.slots:
                total.update(counts)
            return total

    def publish(self) -> None:
        """Set this worker's window gauges: on the watcher's tick, not per request (a window also
        empties with time alone)."""
        total = self.totals()
        for version, arm in list(self.keys):
            metrics.WINDOW_IMPRESSIONS.labels(version, arm).set(total["lists", version, arm])
            metrics.WINDOW_CLICKS.labels(version, arm).set(total["clicks", version, arm])


def ctr_family(families: Iterable[Metric]) -> GaugeMetricFamily:
    """rtrec_online_ctr per (version, arm) from the window gauges summed over the workers."""
    sums: dict[str, dict[tuple[str, str], float]] = {"rtrec_window_impressions": {}, "rtrec_window_clicks": {}}
    for family in families:
        if family.name in sums:
            for sample in family.samples:
                key = (sample.labels["version"], sample.labels["arm"])
                sums[family.name][key] = sums[family.name].get(key, 0.0) + sample.value
    ctr = GaugeMetricFamily(
        metrics.ONLINE_CTR,
        "Attributed clicks per list served within the online CTR window, all workers; absent without lists.",
        labels=["version", "arm"],
    )
    for key, lists in sorted(sums["rtrec_window_impressions"].items()):
        if lists > 0:
            ctr.add_metric(list(key), sums["rtrec_window_clicks"].get(key, 0.0) / lists)
    return ctr
