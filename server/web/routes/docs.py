"""The API's OpenAPI schema and its browsable docs, for admins only (the route map is no
public matter): a logged-in admin's page session or bearer token opens them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from server.domain import Role
from server.web.deps import page_require

router = APIRouter(tags=["docs"], include_in_schema=False)
ADMIN_PAGE = page_require(Role.ADMIN)


@router.get("/openapi.json", dependencies=[ADMIN_PAGE])
def openapi_schema(request: Request) -> JSONResponse:
    """The OpenAPI schema of every API route."""
    return JSONResponse(request.app.openapi())


@router.get("/docs", dependencies=[ADMIN_PAGE])
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json."""
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title} docs")


@router.get("/redoc", dependencies=[ADMIN_PAGE])
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over /openapi.json."""
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} docs")
