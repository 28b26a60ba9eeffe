"""The FastAPI application factory."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import Engine

from server import audit as audit_chain
from server import keys
from server.api.deps import declared_body_limit, declared_roles
from server.api.errors import install_database_errors
from server.api.limits import BodyCaps, BodyLimitMiddleware, RouteCap
from server.db import prepared_engine, session_factory
from server.domain import Role
from server.faces import FaceService
from server.metrics import Metrics
from server.settings import ServerSettings

if TYPE_CHECKING:
    from models.engine import FaceEngine

logger = logging.getLogger(__name__)


def _route_roles(route: APIRoute) -> frozenset[Role] | None:
    pending: list[Any] = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call is not None and (roles := declared_roles(dependant.call)) is not None:
            return roles
        pending.extend(dependant.dependencies)
    return None


def _route_body_limit(route: APIRoute, roles: frozenset[Role], settings: ServerSettings) -> int:
    pending: list[Any] = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call is not None and (name := declared_body_limit(dependant.call)):
            return int(getattr(settings, name))
        pending.extend(dependant.dependencies)
    if Role.DEVICE in roles:
        return settings.device_max_request_bytes
    return settings.user_max_request_bytes


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field and why, never echoing what was sent (passwords)."""
    assert isinstance(exc, RequestValidationError)  # registered for this type only
    errors = [
        {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": error["type"]}
        for error in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": errors})


def create_app(
    settings: ServerSettings,
    face_engine: FaceEngine | None = None,
    engine: Engine | None = None,
) -> FastAPI:
    """Build the app: audit key loaded, schema migrated, server key loaded, every route's
    roles checked."""
    from server import web
    from server.api.routes import (
        audit,
        auth,
        certificates,
        devices,
        events,
        operators,
        ops,
        registry,
        review,
        sync,
        users,
    )

    audit_key = audit_chain.ensure_key(settings)
    db = engine if engine is not None else prepared_engine(settings, audit_key)
    # /docs, /redoc and /openapi.json are served by server/web/routes/docs.py, admins only.
    app = FastAPI(
        title="jifang server", version="1", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    app.state.engine = db
    app.state.sessions = session_factory(db, audit_key)
    with app.state.sessions() as session:
        audit_chain.check_key(session, audit_key)
    app.state.server_key = keys.load_or_create(settings.key_dir)
    app.state.faces = FaceService(settings, face_engine)
    app.state.metrics = Metrics(app.state.sessions)
    modules = (
        ops,
        auth,
        users,
        registry,
        devices,
        operators,
        certificates,
        sync,
        events,
        review,
        audit,
    )
    routers = [module.router for module in modules] + list(web.ROUTERS)
    roles: dict[tuple[str, str], frozenset[Role]] = {}
    caps: list[RouteCap] = []
    for router in routers:
        app.include_router(router)
    web.install(app)
    install_database_errors(app, settings)
    # Walk the routers themselves: newer FastAPI keeps included routers nested.
    for route in (r for router in routers for r in router.routes):
        if not isinstance(route, APIRoute):
            continue
        declared = _route_roles(route)
        if declared is None:
            # Deny by default: a route that forgot to say who may call it never ships.
            raise RuntimeError(f"route {route.path} declares no roles")
        for method in route.methods or ():
            roles[(method, route.path)] = declared
        limit = _route_body_limit(route, declared, settings)
        caps.append(RouteCap(frozenset(route.methods or ()), route.path_regex, limit))
    app.state.route_roles = roles
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(
        BodyLimitMiddleware, caps=BodyCaps(tuple(caps), settings.user_max_request_bytes)
    )
    return app
