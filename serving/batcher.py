"""Micro-batching: the model calls of concurrent requests, made as one call per model.

Recommendation handlers run on the event loop. When several requests are ready in one turn of the
loop (a worker under load), each reaches `Batcher.recommend` and waits; at the next turn every
waiting history of the same model is scored in one `recommend_batch` (serving/turns.py holds the
mechanism; a failed batch is tried request by request, so one request's failure, its fallback, is
its own). One call for 16 users costs about half of 16 single calls (the encoder's operators are
dispatched once).
"""

from __future__ import annotations

from collections.abc import Iterable

from model.inference import Recommender
from serving.turns import PerTurn


class Batcher:
    def __init__(self) -> None:
        self.turns = PerTurn(self._score, "model call")

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
        requests of this turn of the loop for the same model; raises when the model failed."""
        return await self.turns.call(recommender, (history, k, exclude, idle_seconds, seen))

    @staticmethod
    def _score(recommender: Recommender, calls: list[tuple]) -> list[list[tuple[str, float]]]:
        histories, ks, excludes, idle, seen = zip(*calls)
        results = recommender.recommend_batch(histories, max(ks), excludes, idle, seen)
        return [result[:k] for k, result in zip(ks, results)]
