"""HTTP middleware: oversized bodies are refused, and every request is counted and timed per route
template (not per URL, which would make a label per user).

A body is limited twice: a declared Content-Length over the limit is refused before anything is
read (`Observe`), and the bytes actually received are counted while they are read, so a chunked
body (no Content-Length) or a lying one is cut off with a 413 as soon as it passes the limit,
without reading the rest.
`BodyLimitRoute` does the counting for the routes of a router that read bodies
(`APIRouter(route_class=BodyLimitRoute)`).
"""

import time

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class Observe:
    """Pure ASGI middleware (no per-request Request/Response objects, no extra task, unlike
    `@app.middleware`): refuses a declared oversized body, then counts and times the request under
    its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
                await too_large(MAX_BODY_BYTES)(scope, receive, send)
                return
        started, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")  # the router sets it on this scope
            metrics.REQUESTS.labels(scope["method"], endpoint, str(status)).inc()
            metrics.LATENCY.labels(scope["method"], endpoint).observe(time.perf_counter() - started)
