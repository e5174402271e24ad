"""Request bodies are read as strict JSON: no duplicate keys, no ``NaN`` or ``Infinity``.

Python's parser takes the last of two equal keys and reads ``NaN``; another reader (a proxy,
an auditor's tool, the host) may take the first, so one signed body could mean two things.
Both are refused as malformed (400 ``malformed-body``), like any text that is not JSON.
FastAPI's documented way to change how a body is read: a route class whose requests parse
their own JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class _NotStrict(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _NotStrict(f"duplicate key {key!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _NotStrict(f"{name} is not a JSON number")


def loads(body: bytes) -> Any:
    """The JSON of a body; :class:`json.JSONDecodeError` for anything that is not strict JSON
    (FastAPI answers that as the body not being JSON)."""
    text = body.decode("utf-8", "surrogatepass") if isinstance(body, bytes) else body
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except _NotStrict as e:
        raise json.JSONDecodeError(str(e), text, 0) from None


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
