"""The uplink's part of the reconciler configuration (``upload`` in reconciler.json, from
``nixcomply.reconciler.upload`` in the NixOS module)."""

from __future__ import annotations

from typing import Final

from pydantic import Field

from nixcomply.model.base import StrictModel

TOKEN_CREDENTIAL: Final = "nixcomply-enroll-token"  # noqa: S105 - a credential name


class UploadSettings(StrictModel):
    server: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="the evidence server; uploads go nowhere else (None: uploads are off)",
    )
    after_cycle: bool = Field(default=True, description="upload at the end of every reconcile run")
    max_batch_entries: int = Field(default=1000, ge=1, le=1000, description="entries per upload request")
    timeout_seconds: float = Field(
        default=10, gt=0, le=300, description="per request, so a dead server costs little"
    )
