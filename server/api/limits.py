"""Request body caps, enforced while the body streams in (chunked bodies included).

Every route has a cap: the one it declares with `deps.body_limit(...)`, else
`device_max_request_bytes` for routes a device calls, else `user_max_request_bytes`. A body
declared larger than the cap is refused before one byte is read; a body that grows past it is
cut off there. Either way the answer is 413 and the connection is closed, so the rest of the
body is never read into memory.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

TOO_LARGE = "request too large"


class BodyTooLarge(HTTPException):
    """The request body passed its route's cap (FastAPI re-raises HTTPExceptions from reads)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"{TOO_LARGE}: the limit is {limit} bytes", headers={"Connection": "close"}
        )
        self.limit = limit


@dataclass(frozen=True)
class RouteCap:
    """The body cap of one route."""

    methods: frozenset[str]
    path: re.Pattern[str]
    limit: int


@dataclass(frozen=True)
class BodyCaps:
    """The cap for each route, and the default for anything else (unknown paths, static)."""

    routes: Sequence[RouteCap]
    default: int

    def limit_for(self, method: str, path: str) -> int:
        """The cap of the route `method path` would reach."""
        for route in self.routes:
            if method in route.methods and route.path.match(path):
                return route.limit
        return self.default


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            # The HTTP server has already refused a malformed Content-Length.
            return int(text) if text.isdigit() else None
    return None


class BodyLimitMiddleware:
    """ASGI middleware that counts body bytes from `receive()` and answers 413 past the cap."""

    def __init__(self, app: ASGIApp, caps: BodyCaps) -> None:
        self.app = app
        self.caps = caps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a counting `receive`, or refuse it outright."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.caps.limit_for(scope["method"], scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            logger.info(
                "refused %s %s: declares %d bytes", scope["method"], scope["path"], declared
            )
            await _refuse(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    logger.info(
                        "cut off %s %s past %d bytes", scope["method"], scope["path"], limit
                    )
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Raised where no exception handler sits (e.g. a middleware read the body).
            if started:
                raise
            await _refuse(send, limit)


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"{TOO_LARGE}: the limit is {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
