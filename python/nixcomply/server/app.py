"""The FastAPI application: routers, middleware, and the exception handlers that turn every
error into a JSON ``ErrorBody`` with a stable code (never a traceback, never a 500 for bad
input). The app is stateless over PostgreSQL: more processes behind a load balancer serve
more hosts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from nixcomply import __version__
from nixcomply.model.fleet import ErrorBody, ErrorCode
from nixcomply.server import middleware
from nixcomply.server.api import enroll, log
from nixcomply.server.api.deps import Services
from nixcomply.server.auth import Authenticator
from nixcomply.server.config import ServerConfig
from nixcomply.server.errors import STATUS_CODES, ApiError
from nixcomply.server.ratelimit import TokenBuckets
from nixcomply.server.verifying import Witness

logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _error(
    status: int,
    code: ErrorCode,
    message: str,
    detail: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, detail=detail)
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, headers=dict(headers or {})
    )


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _error(exc.status_code, exc.code, exc.message, exc.extra, exc.headers)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = STATUS_CODES.get(
        exc.status_code, ErrorCode.INVALID if exc.status_code < 500 else ErrorCode.INTERNAL
    )
    return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    invalid = [e for e in errors if e.get("type") == "json_invalid"]
    if invalid:
        why = (invalid[0].get("ctx") or {}).get("error")
        return _error(400, ErrorCode.MALFORMED, "the body is not valid JSON" + (f": {why}" if why else ""))
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid"}
    shown = [
        {"loc": _loc(tuple(e.get("loc", ()))), "msg": str(e.get("msg")), "type": str(e.get("type"))}
        for e in errors[:20]
    ]
    return _error(
        422,
        ErrorCode.INVALID,
        f"{_loc(tuple(first.get('loc', ())))}: {first.get('msg')}",
        {"errors": shown, "count": len(errors)},
    )


async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("database unavailable: %s", type(exc).__name__)
    return _error(
        503, ErrorCode.UNAVAILABLE, "the database is unavailable; retry later", headers={"Retry-After": "5"}
    )


async def _unstorable(_request: Request, exc: Exception) -> JSONResponse:
    # A value PostgreSQL refuses to store: a NUL character in text or JSON (which a host's
    # keyring or its signed rotation reason may carry), a number out of range. Bad input.
    logger.warning("refused a value the database cannot store: %s", type(exc).__name__)
    return _error(
        422,
        ErrorCode.INVALID,
        "the request holds a value the database cannot store (a NUL character, a number out of range)",
    )


async def _internal(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return _error(500, ErrorCode.INTERNAL, "internal error; nothing was written")


def create_app(
    config: ServerConfig,
    engine: Engine,
    witness: Witness,
    *,
    clock: Callable[[], datetime] = _now,
) -> FastAPI:
    limits = config.rate_limit
    app = FastAPI(
        title="nixcomply-server",
        version=__version__,
        description="The MSP's evidence server: enrollment, uploads, witness cosignatures (PROTOCOL.md).",
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = Services(
        config=config,
        engine=engine,
        witness=witness,
        auth=Authenticator(
            engine,
            skew=config.clock_skew_seconds,
            limits=TokenBuckets(limits.host.per_second, limits.host.burst) if limits.enabled else None,
        ),
        clock=clock,
    )
    app.include_router(enroll.router)
    app.include_router(log.router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for db_error in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(db_error, _database_down)
    app.add_exception_handler(DataError, _unstorable)
    app.add_exception_handler(Exception, _internal)
    # Each add wraps the ones before: audit is outermost and sees every answer, including
    # the other middleware's refusals, which carry the security headers too.
    app.add_middleware(middleware.Internal)
    app.add_middleware(middleware.ContentType)
    app.add_middleware(middleware.BodyLimit, limit=config.max_body_bytes)
    if limits.enabled:
        app.add_middleware(
            middleware.RateLimit, buckets=TokenBuckets(limits.client.per_second, limits.client.burst)
        )
    app.add_middleware(middleware.SecurityHeaders)
    app.add_middleware(middleware.Audit)
    return app
