"""Cross-cutting request handling, as ASGI middleware rather than per-route code: the rate
limit by client address (429, before anything else: ``nixcomply.server.ratelimit``), the
body size limit (413, checked on Content-Length before anything is read and again while the
body streams in), the content type of bodies (415), security headers on every response,
and the audit log line of every request. Refusals are JSON ``ErrorBody`` like every
other error."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from nixcomply.model.fleet import ErrorBody, ErrorCode
from nixcomply.server.errors import ApiError
from nixcomply.server.ratelimit import TokenBuckets

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

audit_logger = logging.getLogger("nixcomply.server.audit")
logger = logging.getLogger(__name__)

SECURITY_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000"),
)
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


async def send_error(
    send: Send,
    status: int,
    code: ErrorCode,
    message: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = ErrorBody(code=code, message=message).model_dump_json(exclude_none=True).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(ApiError):
    """Raised from ``receive`` while the body streams in: an ``HTTPException``, so FastAPI's
    body reader passes it on (it turns other errors into a 400) to the JSON handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, ErrorCode.TOO_LARGE, f"the body is over {limit} bytes")


class _TrackedSend:
    """``send``, remembering whether the response has started: after that, an error can no
    longer be answered, only the connection broken."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class Internal:
    """A bug is answered with the JSON 500 here, inside the other middleware, so the answer
    carries the security headers and the audit line its status (Starlette's own last resort
    sits outside all middleware). Nothing was written: each request is one transaction."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = _TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as e:
            logger.error("internal error: %s: %s", type(e).__name__, e, exc_info=e)
            if tracked.started:
                raise
            await send_error(send, 500, ErrorCode.INTERNAL, "internal error; nothing was written")


class RateLimit:
    """429 for a client address over its bucket, before the request is read any further."""

    def __init__(self, app: ASGIApp, *, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client") or ("-", 0)
            wait = self.buckets.take(str(client[0]))
            if wait is not None:
                await send_error(
                    send,
                    429,
                    ErrorCode.RATE_LIMITED,
                    f"too many requests from this address; retry in {wait} s",
                    headers=[(b"retry-after", str(wait).encode())],
                )
                return
        await self.app(scope, receive, send)


class BodyLimit:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await send_error(send, 400, ErrorCode.MALFORMED, "Content-Length is not a number")
                    return
                if length > self.limit:
                    await send_error(send, 413, ErrorCode.TOO_LARGE, f"the body is over {self.limit} bytes")
                    return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        tracked = _TrackedSend(send)
        try:
            await self.app(scope, counting_receive, tracked)
        except _TooLarge:
            if tracked.started:
                raise
            await send_error(send, 413, ErrorCode.TOO_LARGE, f"the body is over {self.limit} bytes")


class ContentType:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            value = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            media = value.split(";", 1)[0].strip().lower()
            if media != "application/json":
                await send_error(
                    send,
                    415,
                    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    f"the body must be application/json, not {media or 'untyped'}",
                )
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class Audit:
    """One line per request on ``nixcomply.server.audit``: method, path, status, caller,
    duration. Never the body, the query string or a header value."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        logged = False

        def log() -> None:
            nonlocal logged
            logged = True
            state = scope.get("state") or {}
            client = scope.get("client") or ("-", 0)
            audit_logger.info(
                "%s",
                json.dumps(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "host": state.get("host"),
                        "client": client[0],
                        "ms": round((time.perf_counter() - started) * 1000, 1),
                    }
                ),
            )

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif (
                message["type"] == "http.response.body" and not message.get("more_body", False) and not logged
            ):
                log()  # before the last byte leaves: the line exists once the caller has the answer
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            if not logged:
                log()
