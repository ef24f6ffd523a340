"""wrk (the C load generator) driven from Python: saturation and paced runs against one URL.

wrk is a measuring tool, not a dependency of the product: `make demo` and `make test` never need
it. Debian ships it (`apt install wrk`); the serving benchmark says so when it is missing.

wrk is closed-loop: each connection sends its next request when the previous answer came back.
A paced run makes each of `connections` connections wait `connections / rate` seconds between
requests (wrk's Lua `delay()`), which gives about `rate` requests/s while answers stay well under
that interval; the rate reached is reported beside the latencies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Lua for one wrk run: what to request, how long to wait between requests, and a JSON summary.
SCRIPT = """
local kind, users, items, delay_ms, token = "{kind}", {users}, {items}, {delay_ms}, "{token}"
local counter = 0
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function init(args)
  math.randomseed(os.time() + tid * 7919)
end

function delay()
  return delay_ms
end

request = function()
  local user = "u" .. math.random(0, users - 1)
  if kind == "get" then
    return wrk.format("GET", "/v1/recommendations/" .. user)
  elseif kind == "post" then
    counter = counter + 1
    local body = string.format(
      '{{"event_id":"wrk-%d-%d-%d","user_id":"%s","item_id":"i%d","event_type":"view"}}',
      tid, os.time(), counter, user, math.random(0, items - 1))
    local headers = {{["Content-Type"] = "application/json"}}
    if token ~= "" then headers["Authorization"] = "Bearer " .. token end
    return wrk.format("POST", "/v1/events", headers, body)
  end
  return wrk.format("GET", "/healthz")
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK-JSON {{"requests": %d, "seconds": %.3f, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f}}\\n',
    summary.requests, summary.duration / 1e6, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
"""


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("this benchmark drives wrk, which is not on PATH: install it (Debian: apt install wrk)")
    return path


def run(
    url: str,
    kind: str,
    seconds: float,
    connections: int,
    users: int,
    items: int,
    rate: float | None = None,
    token: str = "",
    threads: int = 1,
) -> Result:
    """One wrk run: `kind` is healthz, get or post; saturated when `rate` is None, paced otherwise."""
    delay_ms = 0 if rate is None else round(1000 * connections / rate)
    lua = SCRIPT.format(kind=kind, users=users, items=items, delay_ms=delay_ms, token=token)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        command = [require_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{round(seconds)}s"]
        out = subprocess.run(
            [*command, "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        Path(script.name).unlink()
    line = next(line for line in out.splitlines() if line.startswith("WRK-JSON "))
    return Result(**json.loads(line.removeprefix("WRK-JSON ")))
