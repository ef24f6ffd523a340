"""The calls made during one turn of the event loop, run as one: the mechanism under the
micro-batching of the model calls (serving/batcher.py) and of the online reads
(serving/state_reader.py).

Each caller awaits `PerTurn.call(target, args)`; the first call for a target in a turn schedules
that target's flush for the next turn, which passes the arguments of every call still wanted (a
cancelled request's are dropped) to `run(target, arguments)` at once. A lone call waits one turn
of the loop, nothing more: no timer holds it back. When a batch fails, each call is run alone, so
one call's failure is its own, unless the error is one of `fail_together` (a store known to be
down): then each call gets it at once. Whatever `run` raises or returns, no caller is left waiting:
an answer of the wrong length is an error, and even a BaseException answers every caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any


class PerTurn:
    def __init__(
        self,
        run: Callable[[Any, list], Sequence],
        what: str,
        fail_together: tuple[type[Exception], ...] = (),
    ) -> None:
        self.run, self.what, self.fail_together = run, what, fail_together
        self.waiting: dict[int, tuple[Any, list[tuple[Any, asyncio.Future]]]] = {}  # by id() of the target

    async def call(self, target: Any, args: Any) -> Any:
        """`run(target, [args])[0]`, run with the other calls for `target` of this turn of the loop;
        raises a RuntimeError of its own (the cause chained) when the call failed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        batch = self.waiting.get(id(target))
        if batch is None:
            batch = self.waiting[id(target)] = (target, [])
            loop.call_soon(self._flush, id(target))
        batch[1].append((args, future))
        return await future

    def _flush(self, key: int) -> None:
        target, waiting = self.waiting.pop(key)
        calls = [(args, future) for args, future in waiting if not future.done()]  # not for a cancelled one
        try:
            self._run(target, calls)
        finally:  # even a BaseException from `run` leaves no caller waiting
            for _, future in calls:
                if not future.done():
                    future.set_exception(RuntimeError(f"{self.what} interrupted"))

    def _run(self, target: Any, calls: list[tuple[Any, asyncio.Future]]) -> None:
        if not calls:
            return
        try:
            answers = self.run(target, [args for args, _ in calls])
            if len(answers) != len(calls):
                raise RuntimeError(f"{len(answers)} answers for {len(calls)} calls")
        except Exception as err:
            if len(calls) > 1 and not isinstance(err, self.fail_together):  # one call's failure is not the others'
                for call in calls:
                    self._run(target, [call])
                return
            for _, future in calls:
                failure = RuntimeError(f"{self.what} failed: {err!r}")  # each its own: raised and logged once each
                failure.__cause__ = err
                future.set_exception(failure)
            return
        for (_, future), answer in zip(calls, answers, strict=True):
            future.set_result(answer)
