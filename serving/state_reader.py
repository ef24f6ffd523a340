"""Micro-batching of the online state reads: the users of the requests ready in one turn of the
loop, read from the store in one call.

Like the model calls (serving/batcher.py, both on serving/turns.py): each recommendation handler
reaches `StateReader.read` and waits; at the next turn every waiting user is read at once
(`read_users`: one `online_read` of the store, then each user's pending deletion). When a batch's
read fails, each user is read alone, so one user's unreadable row is their own fallback answer; a
store that is down fails the batch at once (the breaker is open), each request with its own error,
and so does a feedback log whose pending deletions cannot be read (one read for the whole batch).
Whatever a read raises, no request is left waiting.
"""

from __future__ import annotations

from rtrec.online_state import StoreUnavailable, UserState, UserStateTable
from serving.feedback_log import FeedbackLog
from serving.forgetting import DeletionsUnreadable, read_users
from serving.turns import PerTurn


class StateReader:
    def __init__(self, table: UserStateTable, feedback: FeedbackLog) -> None:
        self.table, self.feedback = table, feedback
        self.turns = PerTurn(self._read, "online state read", fail_together=(StoreUnavailable, DeletionsUnreadable))

    async def read(self, user_id: str) -> UserState:
        """`read_user(table, feedback, user_id)`, read with the other requests of this turn of the loop."""
        return await self.turns.call(self.table, user_id)

    def _read(self, table: UserStateTable, user_ids: list[str]) -> list[UserState]:
        return read_users(table, self.feedback, user_ids)
