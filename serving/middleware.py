"""HTTP middleware: oversized bodies are refused before they are read, and every request is
counted and timed per route template (not per URL, which would make a label per user)."""

import time

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from serving import metrics

MAX_BODY_BYTES = 1_000_000


async def observe(request: Request, call_next) -> Response:
    length = request.headers.get("content-length")
    if length and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return JSONResponse({"detail": f"request body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    endpoint = getattr(route, "path", "unmatched")
    metrics.REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
    metrics.LATENCY.labels(request.method, endpoint).observe(time.perf_counter() - started)
    return response
