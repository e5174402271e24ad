"""Errors the API answers with: an HTTP status, a stable code and a message (the body is
``nixcomply.model.fleet.ErrorBody``). Raised by routes and dependencies; the app's
exception handlers render them, so no route formats an error itself."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from nixcomply.model.fleet import ErrorCode


class ApiError(HTTPException):
    """A refused request. ``detail`` (JSON) travels in the body's ``detail``."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        *,
        detail: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.message = message
        self.extra = detail


STATUS_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.MALFORMED,
    401: ErrorCode.UNAUTHENTICATED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.INVALID,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.UNAVAILABLE,
}
