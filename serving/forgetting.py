"""Deletions whose online part waits for the store.

A DELETE is done once the feedback log has forgotten the user (durable, recorded as pending in its
index). When the online store cannot take the tombstone then, the deletion stays pending: every
read treats the user as forgotten, a new event starts a new history carrying the tombstone, and
`finish_pending` writes the tombstone once the store is back (each worker tries every tick)."""

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import datetime

from rtrec.online_state import (
    LockTimeout,
    StoreUnavailable,
    UserLocks,
    UserState,
    UserStateTable,
    mark_forgotten,
    user_lock,
)
from serving.feedback_log import FeedbackLog, Forgetting

log = logging.getLogger("rtrec.serving")


def forget(table: UserStateTable, locks: UserLocks, feedback: FeedbackLog, user_id: str) -> tuple[Forgetting, bool]:
    """Forget the user: the feedback log drops the user's lines and records the deletion (an
    exception from it means nothing was forgotten), and the online state becomes a tombstone, both
    under the user's lock. Returns what the log did and whether the online state was cleared; when
    the store could not be reached, the online part stays pending. A busy lock raises `LockTimeout`
    before anything is forgotten, so that Feast readers never see a deletion half done while the
    store is up."""
    with ExitStack() as held:
        try:
            held.enter_context(user_lock(table, locks, user_id))
            locked = True
        except LockTimeout:  # the store is up and the user busy: nothing forgotten yet, the caller retries
            raise
        except Exception as err:  # the store is down: the log forgets now, the online part waits
            log.warning("forget: user lock unavailable (%s); online part left pending", err)
            locked = False
        forgotten = feedback.forget_user(user_id)
        cleared = False
        if locked:
            try:
                mark_forgotten(table, user_id, forgotten.deleted_at)
                cleared = True
            except Exception as err:
                log.warning("forget: online state not cleared (%s); left pending", err)
    if cleared:
        feedback.forgotten_online(user_id, forgotten.deleted_at)
    return forgotten, cleared


def read_user(table: UserStateTable, feedback: FeedbackLog, user_id: str) -> UserState:
    """The user's online state, empty when a deletion the store does not hold yet is pending."""
    return read_users(table, feedback, [user_id])[0]


class DeletionsUnreadable(Exception):
    """The feedback log's pending deletions could not be read: one read for every user of a batch,
    so reading each user again alone would fail the same way (and wait out a timeout each)."""


def read_users(table: UserStateTable, feedback: FeedbackLog, user_ids: Sequence[str]) -> list[UserState]:
    """`read_user` of each of `user_ids`, in order, with one read of the store and one of the
    pending deletions (of the users the store knows)."""
    states = table.read_many(user_ids)
    try:
        pending = feedback.pending_forgets_of([state.user_id for state in states if state.known])
    except Exception as err:
        raise DeletionsUnreadable(f"pending deletions unreadable: {err!r}") from err
    return [_unless_forgotten(state, pending.get(state.user_id)) for state in states]


def _unless_forgotten(state: UserState, pending: datetime | None) -> UserState:
    if pending is not None and (state.forgotten_at is None or state.forgotten_at < pending):
        return UserState(state.user_id, stored_at=state.stored_at, forgotten_at=pending)
    return state


def finish_pending(table: UserStateTable, locks: UserLocks, feedback: FeedbackLog) -> int:
    """Bring pending deletions online; returns how many were finished. Stops at the first store
    failure (the breaker is open then; the next tick tries again)."""
    done = 0
    for user_id, deleted_at in feedback.pending_forgets():
        try:
            with user_lock(table, locks, user_id):
                state = table.read(user_id)
                # no row at all (never online, or removed by the nightly run): nothing to hide, no key to add
                if state.stored_at is not None and (state.forgotten_at is None or state.forgotten_at < deleted_at):
                    mark_forgotten(table, user_id, deleted_at)
        except StoreUnavailable:  # the breaker is open: the store is known to be down
            break
        except Exception as err:
            log.warning("a pending deletion could not be brought online yet: %s", err)
            break
        feedback.forgotten_online(user_id, deleted_at)
        done += 1
    if done:
        log.info("brought %d pending deletions online", done)
    return done
