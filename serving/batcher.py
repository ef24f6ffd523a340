"""Micro-batching: the model calls of concurrent requests, made as one call per model.

Recommendation handlers run on the event loop. When several requests are ready in one turn of the
loop (a worker under load), each reaches `Batcher.recommend` and waits; the first schedules a flush
for the next turn, which scores every waiting history of the same model in one `recommend_batch`.
One call for 16 users costs about half of 16 single calls (the encoder's operators are dispatched
once). A lone request waits one turn of the loop, nothing more: no timer holds it back. When a
batch fails, each of its requests is tried alone, so one request's failure (its fallback) is its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from model.inference import Recommender


@dataclass
class _Waiting:
    recommender: Recommender
    calls: list[tuple[list, int, Iterable[str], float | None, Iterable[str] | None, asyncio.Future]] = field(
        default_factory=list
    )


class Batcher:
    def __init__(self) -> None:
        self.waiting: dict[int, _Waiting] = {}  # by id() of the model, held here until the flush

    async def recommend(
        self,
        recommender: Recommender,
        history: list,
        k: int,
        exclude: Iterable[str],
        idle_seconds: float | None,
        seen: Iterable[str] | None,
    ) -> list[tuple[str, float]]:
        """`recommender.recommend(history, k, exclude, idle_seconds, seen)`, batched with the other
        requests of this turn of the loop for the same model; raises what the batch raised."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        waiting = self.waiting.get(id(recommender))
        if waiting is None:
            waiting = self.waiting[id(recommender)] = _Waiting(recommender)
            loop.call_soon(self._flush, id(recommender))
        waiting.calls.append((history, k, exclude, idle_seconds, seen, future))
        return await future

    def _flush(self, key: int) -> None:
        waiting = self.waiting.pop(key)
        calls = [call for call in waiting.calls if not call[-1].done()]  # a cancelled request is not scored
        if calls:
            self._run(waiting.recommender, calls)

    def _run(self, recommender: Recommender, calls: list) -> None:
        try:
            histories, ks, excludes, idle, seen, _ = zip(*calls)
            results = recommender.recommend_batch(histories, max(ks), excludes, idle, seen)
        except Exception as err:
            if len(calls) > 1:  # one request's failure is not the others': each is tried on its own
                for call in calls:
                    self._run(recommender, [call])
                return
            failure = RuntimeError(f"model call failed: {err!r}")  # its own error: raised once, one traceback
            failure.__cause__ = err
            calls[0][-1].set_exception(failure)
            return
        for (_, k, _, _, _, future), result in zip(calls, results):
            future.set_result(result[:k])
