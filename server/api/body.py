"""The raw request body as a dependency, so routes with database work can be plain `def`.

An `async def` route that does sync database work blocks the event loop (every request, even
/healthz, waits while SQLite is locked); a `def` route runs in the threadpool but cannot await
the body, so the body is read here, on the loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request


async def raw_body(request: Request) -> bytes:
    """The request body (cached by Starlette, so a guard that read it first costs nothing)."""
    return await request.body()


BodyDep = Annotated[bytes, Depends(raw_body)]
