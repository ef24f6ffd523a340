"""A worker's long-lived objects kept out of the garbage collector's full passes.

A worker holds some 360k objects that live as long as it does: the libraries' modules and
functions, the model, the catalog. CPython's full collection walks every one of them with all
threads stopped, at moments set by allocation counts: 94-177 ms each on the development machine,
and one of 265 ms under paced POSTs set that run's p99. Once the serving state is built, at
startup and after each swap of a model, experiment or catalog, `settle` moves the heap to the
permanent generation (`gc.freeze`), which collections skip. It also turns the collector on, which
`serving.worker` keeps off while the libraries load.

Each settle first thaws and collects, so the reference cycles of a state that was swapped out are
freed then. A swap is settled on the watcher's tick after the one that made it, when the requests
that were still using the old state are done; whatever else is alive at a settle (a connection, a
request in flight) is frozen with the heap, and its cycles wait for the next settle. A settle is
one full pass (about 150-200 ms here), paid once per swap instead of whenever allocations add up.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

Refs = tuple[weakref.ref | None, ...]  # one per served object, None where none is served


class Heap:
    """`served` returns the objects whose replacement calls for a settle (None where absent)."""

    def __init__(self, served: Callable[[], tuple[object | None, ...]]) -> None:
        self.served = served
        self._settled: Refs | None = None  # weak: a swapped-out model must be free to go
        self._seen: Refs | None = None  # a change seen on the last tick, settled on this one

    def settle(self, wait: bool = True) -> bool:
        """Freeze the heap if the served objects changed and stayed so since the last call (at once
        with `wait=False`); True when it froze."""
        served = self.served()
        if _same(self._settled, served):
            self._seen = None
            return False
        if wait and not _same(self._seen, served):
            self._seen = _refs(served)
            return False
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        gc.enable()
        self._settled, self._seen = _refs(served), None
        return True


def _refs(served: tuple[object | None, ...]) -> Refs:
    return tuple(None if obj is None else weakref.ref(obj) for obj in served)


def _same(refs: Refs | None, served: tuple[object | None, ...]) -> bool:
    """True when `refs` name exactly the objects of `served` (a dead reference names none)."""
    if refs is None:
        return False
    return all(obj is None if ref is None else ref() is obj is not None for ref, obj in zip(refs, served, strict=True))
