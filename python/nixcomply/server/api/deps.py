"""FastAPI dependencies: the application's services, the raw body, and the caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from nixcomply.server.auth import Authenticator
from nixcomply.server.config import ServerConfig
from nixcomply.server.db.queries import HostRow
from nixcomply.server.verifying import Witness


@dataclass(frozen=True)
class Services:
    """What routes need, built once by ``create_app`` and kept on ``app.state``."""

    config: ServerConfig
    engine: Engine
    witness: Witness
    auth: Authenticator
    clock: Callable[[], datetime]


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def raw_body(request: Request) -> bytes:
    """The exact bytes of the body (what Content-Digest covers); Starlette keeps them, so
    FastAPI parses the same bytes afterwards."""
    return await request.body()


def caller(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    raw: Annotated[bytes, Depends(raw_body)],
) -> HostRow:
    """The enrolled host that signed this request (401/403 otherwise)."""
    return svc.auth.host(request, raw, svc.clock())


ServicesDep = Annotated[Services, Depends(services)]
CallerDep = Annotated[HostRow, Depends(caller)]
BodyDep = Annotated[bytes, Depends(raw_body)]
