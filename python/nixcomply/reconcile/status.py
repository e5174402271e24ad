"""``nixcomply status``: the host on one screen (like ``comin status``), from the state
database, the evidence log and a look at the running system. Read-only; no lock needed."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from nixcomply.host.state import State
from nixcomply.model.base import StrictModel
from nixcomply.nixos.root import Root
from nixcomply.reconcile.config import ReconcilerConfig
from nixcomply.reconcile.cycle import REBOOT_REASONS, tools_for
from nixcomply.reconcile.model import HostState
from nixcomply.reconcile.observe import observe


class BlockedRevision(StrictModel):
    revision: str
    outcome: str
    at: datetime
    detail: str


class Status(StrictModel):
    host: HostState
    flake: str
    approved_revision: str | None
    last_run_at: datetime | None
    last_run_kind: str | None
    last_outcome: str | None
    last_detail: str | None
    pending_target: str | None
    blocked: list[BlockedRevision]
    suppressed: dict[str, str]
    last_good: dict[str, object] | None
    evidence_seq: int | None
    checkpoint_size: int | None
    # The newest checkpoint file: what an auditor keeps and passes as --pin-checkpoint.
    pin_checkpoint: str | None = None
    upload: dict[str, object] | None = None  # nixcomply.uplink.run.Overview.to_json(); None: not enrolled
    # the kernel, initrd or modules (host.need_reboot) and the checks of the last run whose
    # drift only the next boot heals (audit-rules locked until reboot, kernel-cmdline)
    reboot_needed: list[str] = Field(default_factory=list)

    def lines(self) -> list[str]:
        h = self.host

        def system(label: str, info: object) -> str:
            from nixcomply.reconcile.model import SystemInfo

            if not isinstance(info, SystemInfo):
                return f"{label:<10} (none)"
            gen = f"generation {info.generation}" if info.generation is not None else "not in the profile"
            rev = (info.configuration_revision or "unknown revision")[:12]
            return (
                f"{label:<10} {gen}, revision {rev}, {info.nixos_version or '?'}\n{'':<11}{info.store_path}"
            )

        out = [
            f"host       {h.hostname}",
            system("running", h.current),
            system("booted", h.booted),
            system("next boot", h.profile),
            f"flake      {self.flake}"
            + (f" (approved {self.approved_revision[:12]})" if self.approved_revision else ""),
        ]
        if self.last_run_at is not None:
            out.append(
                f"last run   {self.last_run_at:%Y-%m-%d %H:%M:%S} UTC {self.last_run_kind}: {self.last_outcome}"
            )
            if self.last_detail:
                out.append(f"{'':<11}{self.last_detail}")
        else:
            out.append("last run   never")
        if self.pending_target:
            out.append(f"pending    {self.pending_target}")
        if h.activation_pending:
            out.append("WARNING    the running system is not the boot default (a test activation is pending)")
        reboot = self.reboot_needed
        out.append(f"reboot     {'needed: ' + ', '.join(reboot) if reboot else 'not needed'}")
        for b in self.blocked:
            out.append(f"blocked    {b.revision[:12]} ({b.outcome} {b.at:%Y-%m-%d %H:%M}): {b.detail}")
        for key, why in self.suppressed.items():
            out.append(f"suppressed {key}: {why}")
        evidence = "none yet" if self.evidence_seq is None else f"last entry {self.evidence_seq}"
        if self.checkpoint_size is not None:
            evidence += f", checkpoint size {self.checkpoint_size}"
        out.append(f"evidence   {evidence}")
        if self.pin_checkpoint is not None:
            out.append(f"{'':<11}pin next time: {self.pin_checkpoint}")
        from nixcomply.uplink.run import describe

        out.extend(describe(self.upload))
        return out


def collect(config: ReconcilerConfig) -> Status:
    host = observe(Root(config.root), tools=tools_for(config), hostname=config.host)
    with State.open(config.state_dir) as state:
        last = state.last_run()
        blocked = [
            BlockedRevision(revision=a.revision, outcome=a.outcome or "", at=a.updated_at, detail=a.detail)
            for a in state.blocked_revisions()
        ]
        pending = state.in_progress()
        suppressed = {
            k: f"since {since:%Y-%m-%d %H:%M} UTC: {why}" for k, (since, why) in state.suppressed().items()
        }
        last_good = state.last_good()
        reasons = state.value(REBOOT_REASONS)
    seq, size = _evidence_tail(config)
    pin = _pin_checkpoint(config, size)
    from datetime import UTC

    from nixcomply.uplink.run import overview

    uplink = overview(config.state_dir)
    return Status(
        host=host,
        flake=config.flake,
        approved_revision=config.approved_revision,
        last_run_at=last.finished_at if last else None,
        last_run_kind=last.kind if last else None,
        last_outcome=last.outcome if last else None,
        last_detail=str(last.summary.get("detail") or "") if last else None,
        pending_target=(
            f"{pending[0].revision[:12]} interrupted during {pending[0].phase}" if pending else None
        ),
        blocked=blocked,
        suppressed=suppressed,
        last_good=last_good,
        evidence_seq=seq,
        checkpoint_size=size,
        pin_checkpoint=pin,
        upload=uplink.to_json(datetime.now(UTC)) if uplink else None,
        reboot_needed=[*host.need_reboot, *(r for r in reasons or [] if isinstance(r, str))],
    )


def _evidence_tail(config: ReconcilerConfig) -> tuple[int | None, int | None]:
    """The newest evidence entry and checkpoint size, read without keys."""
    from nixcomply.evidence.log import MerkleLog
    from nixcomply.reconcile.record import origin_for

    if not (config.state_dir / "log").is_dir():
        return None, None
    state = MerkleLog(config.state_dir, origin=origin_for(config), durable=False).read_state()
    return (state.last.seq if state.last else None), state.size


def _pin_checkpoint(config: ReconcilerConfig, size: int | None) -> str | None:
    from nixcomply.evidence.log import CHECKPOINTS, checkpoint_name

    if not size:
        return None
    path = config.state_dir / CHECKPOINTS / checkpoint_name(size)
    return str(path) if path.is_file() else None
