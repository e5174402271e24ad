"""The host's HTTP client for the fleet server: every request signed with the transport key
(RFC 9421, ``nixcomply.model.httpsig``), every answer parsed with the protocol's models.
Plain ``http.client`` with one kept-alive connection: the host needs no server
dependencies."""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar
from urllib.parse import urlsplit

import pydantic
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nixcomply.core.display import shown
from nixcomply.errors import NixcomplyError, UsageError
from nixcomply.model import httpsig
from nixcomply.model.fleet import (
    API,
    EnrollRequest,
    EnrollResponse,
    ErrorBody,
    ErrorCode,
    LogState,
    UploadRequest,
    UploadResponse,
)

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=pydantic.BaseModel)
JSON: Final = "application/json"
MAX_MESSAGE: Final = 500
# The protocol's answers are a few kilobytes (a checkpoint, a cosignature, an error).
MAX_RESPONSE: Final = 1024 * 1024


class UplinkError(NixcomplyError):
    """The server refused a request (4xx/5xx with a JSON error body): ``code`` says why."""

    def __init__(self, status: int, error: ErrorBody, *, retry_after: int | None = None) -> None:
        # The server's words reach logs, `nixcomply status` and a terminal: bounded, escaped.
        said = shown(error.message[:MAX_MESSAGE])
        super().__init__(f"the server refused the request: {error.code.value} ({status}): {said}")
        self.status = status
        self.error = error
        self.retry_after = retry_after  # seconds, from Retry-After (429, 503)

    @property
    def code(self) -> ErrorCode:
        return self.error.code

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.code in {
            ErrorCode.STALE_SIGNATURE,
            ErrorCode.REPLAYED,
            ErrorCode.RATE_LIMITED,
        }


def _seconds(value: str | None) -> int | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is not one this server sends), capped
    at a day so a hostile answer cannot park the uplink for ever."""
    if value is None or not value.strip().isdigit():
        return None
    return min(int(value.strip()), 86_400)


class _Deadline:
    """Shuts the connection's socket down once ``seconds`` have passed, which ends whatever
    read or write is blocked on it."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.conn = conn
        self.seconds = seconds
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()

    def explain(self, url: str, e: Exception) -> str:
        if self.expired:
            return f"{url}: no complete answer within {self.seconds:g} s"
        return f"{url}: {e}"


class ServerUnreachable(NixcomplyError):
    """The server could not be reached or answered something that is not the protocol."""


class Client:
    def __init__(
        self,
        url: str,
        key: Ed25519PrivateKey,
        counter: Callable[[], int],
        *,
        timeout: float = 30,
        clock: Callable[[], float] = time.time,
        context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise UsageError(f"{url!r} is not an http(s) URL of the evidence server")
        self.url = url
        self.scheme = parts.scheme
        self.authority = parts.netloc
        self.prefix = parts.path
        self.key = key
        self.counter = counter
        self.timeout = timeout
        self.clock = clock
        self.context = context
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            host = urlsplit(self.url).hostname or ""
            port = urlsplit(self.url).port
            if self.scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=self.context
                )
            else:
                self._conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self._conn

    def signed_headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        headers = {"content-type": JSON, "content-digest": httpsig.content_digest(body)}
        message = httpsig.Message(method, self.authority, path, "", headers)
        signature = httpsig.sign(message, self.key, nonce=str(self.counter()), created=int(self.clock()))
        return {
            "Host": self.authority,
            "Content-Type": JSON,
            "Content-Digest": headers["content-digest"],
            **signature,
        }

    def request(self, method: str, path: str, body: bytes, model: type[M]) -> M:
        """One request and its answer, within ``timeout`` seconds in all (the socket's own
        timeout bounds each read only: a server trickling a byte at a time would hold the
        host, and the reconcile run that ends with an upload, for ever), and an answer of at
        most :data:`MAX_RESPONSE` bytes."""
        full = self.prefix + path
        headers = self.signed_headers(method, full, body)
        for attempt in (1, 2):
            conn = self._connection()
            deadline = _Deadline(conn, self.timeout)
            try:
                conn.request(method, full, body=body if method != "GET" else None, headers=headers)
                response = conn.getresponse()
                data = response.read(MAX_RESPONSE + 1)
                if deadline.expired:  # a read cut short by the deadline returns what it had
                    self.close()
                    raise ServerUnreachable(f"{self.url}: no complete answer within {self.timeout:g} s")
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A kept-alive connection the server closed meanwhile: one fresh try, with a
                # fresh signature (the counter of the first may have been used).
                self.close()
                if attempt == 2 or deadline.expired:
                    raise ServerUnreachable(deadline.explain(self.url, e)) from None
                headers = self.signed_headers(method, full, body)
            except (OSError, ValueError, http.client.HTTPException) as e:
                self.close()
                raise ServerUnreachable(deadline.explain(self.url, e)) from None
            finally:
                deadline.cancel()
        if len(data) > MAX_RESPONSE:
            self.close()
            raise ServerUnreachable(f"{self.url}{full}: an answer of more than {MAX_RESPONSE} bytes")
        if response.getheader("connection", "").lower() == "close":
            self.close()
        if response.status >= 400:
            try:
                error = ErrorBody.model_validate_json(data)
            except pydantic.ValidationError:
                raise ServerUnreachable(
                    f"{self.url}{full}: HTTP {response.status} without a protocol error body"
                ) from None
            raise UplinkError(response.status, error, retry_after=_seconds(response.getheader("retry-after")))
        try:
            return model.model_validate_json(data)
        except pydantic.ValidationError as e:
            raise ServerUnreachable(
                f"{self.url}{full}: an answer that is not the protocol's: {e.error_count()} errors"
            ) from None

    def enroll(self, req: EnrollRequest) -> EnrollResponse:
        return self.request("POST", f"{API}/enroll", req.model_dump_json().encode(), EnrollResponse)

    def log_state(self) -> LogState:
        return self.request("GET", f"{API}/log", b"", LogState)

    def upload(self, req: UploadRequest) -> UploadResponse:
        return self.request("POST", f"{API}/log/entries", req.model_dump_json().encode(), UploadResponse)
