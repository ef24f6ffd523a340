"""Micro-batching of the online state reads: the users of the requests ready in one turn of the
loop, read from the store in one call.

Like the model calls (serving/batcher.py): each recommendation handler reaches `StateReader.read`
and waits; the first schedules a flush for the next turn of the loop, which reads every waiting
user at once (`read_users`: one `online_read` of the store, then each user's pending deletion).
A lone request waits one turn of the loop, nothing more. When a batch's read fails, each user is
read alone, so one user's unreadable row is their own fallback answer; a store that is down
fails the batch at once (the breaker is open), each request with its own error. Whatever a read
raises, no request is left waiting.
"""

from __future__ import annotations

import asyncio

from rtrec.online_state import StoreUnavailable, UserState, UserStateTable
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
        try:
            self._read(calls)
        finally:  # even a BaseException from the read leaves no request waiting
            for _, future in calls:
                if not future.done():
                    future.set_exception(RuntimeError("online state read interrupted"))

    def _read(self, calls: list[tuple[str, asyncio.Future]]) -> None:
        if not calls:
            return
        try:
            states = read_users(self.table, self.feedback, [user_id for user_id, _ in calls])
            if len(states) != len(calls):
                raise RuntimeError(f"{len(states)} states read for {len(calls)} users")
        except Exception as err:
            if len(calls) > 1 and not isinstance(err, StoreUnavailable):  # one user's failure is not the others'
                for call in calls:
                    self._read([call])
                return
            for _, future in calls:
                failure = RuntimeError(f"online state read failed: {err}")  # each its own: raised once each
                failure.__cause__ = err
                future.set_exception(failure)
            return
        for (_, future), state in zip(calls, states, strict=True):
            future.set_result(state)
