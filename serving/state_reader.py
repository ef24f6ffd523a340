"""Micro-batching of the online state reads: the users of the requests ready in one turn of the
loop, read in one call (serving/turns.py holds the mechanism, shared with serving/batcher.py).

At the next turn every waiting user is read at once (`read_users`: one `online_read` of the store
and one read of the pending deletions). A failed batch is read user by user, so one user's
unreadable row is their own fallback answer; a store that is down, or pending deletions that
cannot be read, fail the batch at once, each request with its own error.
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
