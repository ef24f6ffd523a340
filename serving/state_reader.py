"""Micro-batching of the online state reads: the users of the requests ready in one turn of the
loop, read from the store in one call.

Like the model calls (serving/batcher.py): each recommendation handler reaches `StateReader.read`
and waits; the first schedules a flush for the next turn of the loop, which reads every waiting
user at once (`read_users`: one `online_read` of the store, then each user's pending deletion).
A lone request waits one turn of the loop, nothing more. When the read fails, each request gets
an error of its own (its fallback answer), as when it had read alone.
"""

from __future__ import annotations

import asyncio

from rtrec.online_state import UserState, UserStateTable
from serving.feedback_log import FeedbackLog
from serving.forgetting import read_users


class StateReader:
    def __init__(self, table: UserStateTable, feedback: FeedbackLog) -> None:
        self.table, self.feedback = table, feedback
        self.waiting: list[tuple[str, asyncio.Future]] = []

    async def read(self, user_id: str) -> UserState:
        """`read_user(table, feedback, user_id)`, read with the other requests of this turn of the loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self.waiting:
            loop.call_soon(self._flush)
        self.waiting.append((user_id, future))
        return await future

    def _flush(self) -> None:
        waiting, self.waiting = self.waiting, []
        calls = [(user_id, future) for user_id, future in waiting if not future.done()]  # not for a cancelled one
        if not calls:
            return
        try:
            states = read_users(self.table, self.feedback, [user_id for user_id, _ in calls])
        except Exception as err:
            for _, future in calls:
                failure = RuntimeError(f"online state read failed: {err}")  # each its own: raised once each
                failure.__cause__ = err
                future.set_exception(failure)
            return
        for (_, future), state in zip(calls, states, strict=True):
            future.set_result(state)
