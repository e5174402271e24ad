"""Enrollment: a single-use token turns a new transport key into an enrolled host."""

from __future__ import annotations

import logging

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import APIRouter, Request

from nixcomply.model import httpsig
from nixcomply.model.fleet import EnrollRequest, EnrollResponse, ErrorBody, ErrorCode, b64decode
from nixcomply.server.api.deps import BodyDep, ServicesDep
from nixcomply.server.api.strict import StrictJsonRoute
from nixcomply.server.auth import check_signature, message_of
from nixcomply.server.db import queries
from nixcomply.server.errors import ApiError
from nixcomply.server.invites import token_digest
from nixcomply.server.verifying import HostKeys

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["enrollment"], route_class=StrictJsonRoute)


@router.post(
    "/enroll",
    response_model=EnrollResponse,
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def enroll(body: EnrollRequest, request: Request, raw: BodyDep, svc: ServicesDep) -> EnrollResponse:
    """Register the host's keyring and transport key; burns the token. The request is
    signed with the transport key it registers (proof of possession)."""
    raw_key = b64decode(body.transport_key)
    if len(raw_key) != 32:
        raise ApiError(422, ErrorCode.INVALID, "transport_key: an Ed25519 public key is 32 bytes")
    public = Ed25519PublicKey.from_public_bytes(raw_key)
    now = svc.clock()
    verified = check_signature(
        message_of(request), raw, public, now=int(now.timestamp()), skew=svc.config.clock_skew_seconds
    )
    if verified.keyid != httpsig.key_id(raw_key):
        raise ApiError(401, ErrorCode.BAD_SIGNATURE, "the keyid is not the transport key being enrolled")
    try:
        keys = HostKeys.load(body.keyring)
    except ValueError as e:
        raise ApiError(422, ErrorCode.BAD_KEYRING, f"keyring: {e}") from None
    digest = token_digest(body.token)
    with svc.engine.begin() as conn:
        invite = queries.burn_invite(conn, token_sha256=digest, hostname=body.hostname, now=now)
        if invite is None:
            raise ApiError(
                403, ErrorCode.INVALID_TOKEN, "the token is unknown, used, expired or for another host"
            )
        scope = queries.Scope.site(invite.site_id)
        host = queries.add_host(
            conn,
            scope,
            hostname=body.hostname,
            machine_id=body.machine_id,
            origin=body.origin,
            keyid=verified.keyid,
            transport_key=raw_key,
            keyring=keys.to_json(),
        )
        if host is None:
            raise ApiError(
                409, ErrorCode.ALREADY_ENROLLED, "this host name or transport key is already enrolled"
            )
        queries.authenticate(conn, keyid=host.keyid, counter=verified.counter, now=now)
        queries.audit(
            conn,
            actor=f"host:{body.hostname}",
            action="host.enrolled",
            scope=host.scope,
            detail={"keyid": host.keyid},
        )
        site = next(s for s in queries.list_sites(conn, scope))
    logger.info("host %s enrolled in site %s", body.hostname, site.name)
    return EnrollResponse(
        site=site.name,
        hostname=host.hostname,
        origin=host.origin,
        keyid=host.keyid,
        witness_key=svc.witness.public.vkey,
    )
