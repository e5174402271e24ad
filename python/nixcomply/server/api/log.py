"""The host's own log: the idle poll and uploads."""

from __future__ import annotations

from fastapi import APIRouter

from nixcomply.model.fleet import ErrorBody, LogState, UploadRequest, UploadResponse, b64encode
from nixcomply.server.api.deps import CallerDep, ServicesDep
from nixcomply.server.api.strict import StrictJsonRoute
from nixcomply.server.ingest import ingest

router = APIRouter(
    prefix="/v1/log",
    tags=["log"],
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}},
    route_class=StrictJsonRoute,
)


@router.get("", response_model=LogState)
def log_state(host: CallerDep, svc: ServicesDep) -> LogState:
    """What the server holds of the caller's log: answered from the row that
    authentication already returned, so an idle poll is one indexed statement."""
    return LogState(
        accepted_size=host.accepted_size,
        root=b64encode(host.root) if host.root is not None else None,
        checkpoint=host.checkpoint.decode() if host.checkpoint is not None else None,
        cosignature=host.cosignature,
        witness_key=svc.witness.public.vkey,
    )


@router.post(
    "/entries",
    response_model=UploadResponse,
    responses={409: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
def upload(body: UploadRequest, host: CallerDep, svc: ServicesDep) -> UploadResponse:
    """Entries ``old_size``.. with the checkpoint they end at and a consistency proof;
    verified, stored in one transaction, and cosigned."""
    return ingest(svc.engine, host, body, svc.witness, svc.clock)
