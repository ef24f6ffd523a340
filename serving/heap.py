"""A worker's long-lived objects kept out of the garbage collector's full passes.

A worker holds some 360k objects that live as long as it does: the libraries' modules and
functions, the model, the catalog. CPython's full collection walks every one of them with all
threads stopped, 100-270 ms on the development machine, at moments set by allocation counts: under
paced traffic that pause was the p99 of requests. Once the serving state is built, at startup and
after each swap of a model or the catalog, `settle` moves the heap to the permanent generation
(`gc.freeze`), which collections skip. Each settle first thaws and collects, so the reference
cycles of a state that was swapped out are freed then rather than kept for the worker's life. It
also turns the collector on, which `serving.worker` keeps off while the libraries load. A settle
is one full pass (about 150 ms here), paid once per swap instead of whenever allocations add up.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable


class Heap:
    """`served` returns the objects whose replacement calls for a new settle (None where absent)."""

    def __init__(self, served: Callable[[], tuple[object | None, ...]]) -> None:
        self.served = served
        self._settled: tuple[Callable[[], object | None], ...] | None = None  # weak: a swapped-out model must go

    def settle(self) -> bool:
        """Freeze the heap unless the served objects are those of the last settle; True when it froze."""
        served = self.served()
        settled = self._settled
        if settled is not None and all(ref() is obj for ref, obj in zip(settled, served, strict=True)):
            return False
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        gc.enable()
        self._settled = tuple(_none if obj is None else weakref.ref(obj) for obj in served)
        return True


def _none() -> None:
    return None
