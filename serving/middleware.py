"""HTTP middleware: oversized bodies are refused, and every request is counted and timed per route
template (not per URL, which would make a label per user).

A body is limited twice: a declared Content-Length over the limit is refused before anything is
read (`observe`), and the bytes actually received are counted while they are read, so a chunked
body (no Content-Length) or a lying one is cut off with a 413 as soon as it passes the limit,
without reading the rest.
`BodyLimitRoute` does the counting for the routes of a router that read bodies
(`APIRouter(route_class=BodyLimitRoute)`).
"""

import time

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import Message, Receive

from serving import metrics

MAX_BODY_BYTES = 1_000_000


class BodyTooLarge(HTTPException):
    """Raised by a limited `receive` once the body passes the limit; FastAPI answers it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


def limit_receive(receive: Receive, limit: int = MAX_BODY_BYTES) -> Receive:
    """`receive`, raising `BodyTooLarge` as soon as the body bytes received pass `limit`."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return limited


def too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body larger than {limit} bytes"}, status_code=413)


class BodyLimitRoute(APIRoute):
    """A route whose handler reads the request body through `limit_receive`."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def limited_handler(request: Request) -> Response:
            return await handler(Request(request.scope, limit_receive(request.receive, MAX_BODY_BYTES)))

        return limited_handler


async def observe(request: Request, call_next) -> Response:
    length = request.headers.get("content-length")
    if length and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return too_large(MAX_BODY_BYTES)
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    endpoint = getattr(route, "path", "unmatched")
    metrics.REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
    metrics.LATENCY.labels(request.method, endpoint).observe(time.perf_counter() - started)
    return response
