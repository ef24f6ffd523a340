"""The API's side of the feedback log shared by every host (rtrec/shared_log.py says what each key
holds): the same calls as the local `FeedbackLog`, each one Lua script, so a check and its writes are
one atomic step across hosts and reach Redis's fsynced append-only file together."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import orjson

from rtrec.shared_log import (
    CLOCK,
    DELETIONS,
    EVENTS,
    IDS,
    PENDING,
    SharedLogNotDurable,
    connect,
    from_micros,
    iso,
    micros,
    require_durable,
    user_entries_key,
    user_ids_key,
)
from serving.feedback_log import Forgetting, NotDurable

log = logging.getLogger("rtrec.serving")

# The clock: max(now, last + 1 µs), as the local log's. Lua numbers are doubles: exact for
# microseconds since 1970 (< 2^53), and formatted with %.0f so they never turn into 1.7e+15.
TICK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local issued = math.max(now, tonumber(redis.call('GET', KEYS[3]) or '0') + 1)
local issued_text = string.format('%.0f', issued)
redis.call('SET', KEYS[3], issued_text)
"""

# KEYS: ids, events, clock, then per event its user's ids and entries keys.
# ARGV: per event its id, user and JSON. Returns the time given, then the 0-based indexes of the
# events accepted (empty when every id was accepted before).
APPEND = (
    """
local fresh, batch = {}, {}
for i = 1, #ARGV / 3 do
  local event_id = ARGV[3 * i - 2]
  if not batch[event_id] and redis.call('HEXISTS', KEYS[1], event_id) == 0 then
    batch[event_id] = true
    fresh[#fresh + 1] = i
  end
end
if #fresh == 0 then return {} end
"""
    + TICK
    + """
local out = {issued_text}
for _, i in ipairs(fresh) do
  local event_id, user = ARGV[3 * i - 2], ARGV[3 * i - 1]
  local entry = redis.call('XADD', KEYS[2], '*', 'event', ARGV[3 * i], 'user', user, 'received_us', issued_text)
  redis.call('HSET', KEYS[1], event_id, user)
  redis.call('SADD', KEYS[2 + 2 * i], event_id)
  redis.call('SADD', KEYS[3 + 2 * i], entry)
  out[#out + 1] = i - 1
end
return out
"""
)

# KEYS: ids, events, clock, the user's ids and entries, pending, deletions. ARGV: the user.
# Returns the entries removed and the deletion time.
FORGET = (
    TICK
    + """
local removed = 0
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  removed = removed + redis.call('XDEL', KEYS[2], entry)
end
for _, event_id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('HDEL', KEYS[1], event_id)
end
redis.call('DEL', KEYS[4], KEYS[5])
local before = tonumber(redis.call('HGET', KEYS[6], ARGV[1]) or '0')
redis.call('HSET', KEYS[6], ARGV[1], string.format('%.0f', math.max(before, issued)))
redis.call('XADD', KEYS[7], '*', 'user_id', ARGV[1], 'deleted_us', issued_text)
return {removed, issued_text}
"""
)

# KEYS: pending. ARGV: the user, the deletion time the online store now holds.
FORGOTTEN_ONLINE = """
local pending = redis.call('HGET', KEYS[1], ARGV[1])
if pending and tonumber(pending) <= tonumber(ARGV[2]) then redis.call('HDEL', KEYS[1], ARGV[1]) end
"""


class RedisFeedbackLog:
    """Accepted events in the shared Redis log. On a Redis that would not keep them through a crash,
    raises `SharedLogNotDurable` at start (or, when Redis was down then, refuses every write with
    `NotDurable` once it is up)."""

    def __init__(self, url: str, read_timeout_s: float = 0.5) -> None:
        import redis

        self._errors = (redis.RedisError, OSError)
        self.client = connect(url)
        # reads sit on every request's path: they fail as fast as the online store's do
        self.reader = redis.Redis.from_url(
            url, socket_timeout=read_timeout_s, socket_connect_timeout=read_timeout_s, retry=None
        )
        self.durable = False
        try:
            self._require_durable()
        except self._errors as err:  # down now: start all the same, and check before the first write
            log.warning("the shared feedback log is unreachable at start (%s); writes wait for it", err)
        self._append = self.client.register_script(APPEND)
        self._forget = self.client.register_script(FORGET)
        self._forgotten_online = self.client.register_script(FORGOTTEN_ONLINE)

    def append(self, events: list[dict]) -> list[dict]:
        """Log the events whose ids no host accepted before; returns them with their `received_at`.
        Raises `NotDurable` when Redis did not answer that it kept them. After a timeout they may
        have been kept all the same: a retry is safe, the ids are accepted once."""
        keys, args = [IDS, EVENTS, CLOCK], []
        for event in events:
            keys += [user_ids_key(event["user_id"]), user_entries_key(event["user_id"])]
            args += [event["event_id"], event["user_id"], orjson.dumps(event).decode()]
        answer = self._write(self._append, keys, args, "record the events")
        if not answer:
            return []
        received_at = iso(from_micros(answer[0]))
        return [{**events[int(i)], "received_at": received_at} for i in answer[1:]]

    def forget_user(self, user_id: str) -> Forgetting:
        """Drop the user's uncollected events and event ids and record the deletion, one atomic step;
        the nightly run collects the deletion and removes what it collected before."""
        keys = [IDS, EVENTS, CLOCK, user_ids_key(user_id), user_entries_key(user_id), PENDING, DELETIONS]
        removed, issued = self._write(self._forget, keys, [user_id], "record the deletion")
        return Forgetting(int(removed), from_micros(issued))

    def _write(self, script, keys: list[str], args: list, what: str):
        """Run a writing script; `NotDurable` (nothing of it kept, or kept and safe to retry) when it failed."""
        try:
            self._require_durable()
            return script(keys=keys, args=args)
        except SharedLogNotDurable as err:
            raise NotDurable(str(err)) from err
        except self._errors as err:
            log.exception("the shared feedback log could not %s", what)
            raise NotDurable(f"the shared feedback log could not {what} ({type(err).__name__})") from err

    def _require_durable(self) -> None:
        if not self.durable:
            require_durable(self.client)
            self.durable = True

    def pending_forgets_of(self, user_ids: Sequence[str]) -> dict[str, datetime]:
        """The latest deletion of each of `user_ids` while its online part is not done (users
        without one are left out), in one round trip; raises when Redis is down."""
        ids = list(dict.fromkeys(user_ids))
        values = self.reader.hmget(PENDING, ids) if ids else []
        return {user: from_micros(value) for user, value in zip(ids, values, strict=True) if value is not None}

    def pending_forgets(self) -> list[tuple[str, datetime]]:
        return [(user.decode(), from_micros(us)) for user, us in self.reader.hgetall(PENDING).items()]

    def forgotten_online(self, user_id: str, deleted_at: datetime) -> None:
        """The online store holds the deletion: no longer pending. A failure is logged, not raised."""
        try:
            self._forgotten_online(keys=[PENDING], args=[user_id, micros(deleted_at)])
        except self._errors as err:
            log.warning("a finished deletion stays marked pending: %s", err)
