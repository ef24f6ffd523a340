"""The entry point of an API worker (`serving.worker:create_app`, what `rtrec serve` runs).

The libraries a worker loads (Feast, torch, pandas) leave some 360k long-lived objects, and while
they load the garbage collector walks them all again and again: about 1.2 of the 5.9 s a worker
took to start on the development machine. So the collector stays off until the serving state is
built, when `serving.heap.Heap.settle` collects once, moves that heap out of the collector's way
and turns it back on.
"""

import gc

gc.disable()

from serving.app import create_app  # noqa: E402

__all__ = ["create_app"]
