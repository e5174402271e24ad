"""Everything a check may look at: :class:`CheckContext`.

Checks read the host only through the context: host paths under ``root`` (a sandbox passes a
temporary directory and the same code runs), systemd through ``systemd_factory``, the
running generation's promises through ``manifest`` and ``parameters``, and what the
reconciler knows about generations through ``generation``. Commands go through
``nixcomply.core.process.run``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path, PurePosixPath
from typing import Final, Protocol

from pydantic import ValidationError

from nixcomply.baseline.load import load_baseline
from nixcomply.baseline.models import Parameters
from nixcomply.checks.config import ChecksConfig
from nixcomply.core.memo import Memo, file_stamp
from nixcomply.core.paths import default_baseline
from nixcomply.core.yamlsource import SourceMap, problems_from_validation
from nixcomply.errors import InputError
from nixcomply.host.systemd import SystemdFactory, UnitStateLike
from nixcomply.model.manifest import Manifest, read_manifest

logger = logging.getLogger(__name__)

CURRENT_SYSTEM: Final = PurePosixPath("/run/current-system")
BOOTED_SYSTEM: Final = PurePosixPath("/run/booted-system")

# The hipaa-v1 values (DESIGN.md), used when neither a manifest nor the shipped baseline
# is available, so that a host without nixcomply's module can still be looked at.
FALLBACK_PARAMETERS: Final = Parameters(
    backup_max_age_hours=24,
    restore_test_max_age_days=30,
    time_max_drift_seconds=90,
    critical_patch_max_age_days=7,
    critical_services=["sshd.service", "chronyd.service", "auditd.service"],
)


class SystemdLike(Protocol):
    """The part of ``nixcomply.host.systemd.Systemd`` the checks use. ``unit_state`` raises
    (any exception) when the unit cannot be read; the check reports that as an error."""

    def unit_state(self, name: str) -> UnitStateLike: ...


@dataclass(frozen=True)
class GenerationStatus:
    """What the reconciler knows about generations (it fills this; checks only read it).

    ``approved_since`` is when the reconciler first saw the approved revision differ from
    the running one: the grace period of ``generation_max_drift_hours`` counts from there.
    ``firewall_ruleset_hash`` is :func:`nixcomply.checks.firewall.ruleset_hash` of the
    ruleset right after this generation was activated.
    """

    running_revision: str | None
    approved_revision: str | None
    running_since: datetime | None = None
    approved_since: datetime | None = None
    current_system: Path | None = None
    booted_system: Path | None = None
    generation_number: int | None = None
    firewall_ruleset_hash: str | None = None


@dataclass(frozen=True)
class AttestationSummary:
    """A signed statement by a person standing in for an automated control (its expiry is
    checked by the ``exceptions`` check)."""

    id: str
    title: str
    expires: date
    control_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckContext:
    root: Path
    manifest: Manifest | None
    parameters: Parameters
    now: datetime
    config: ChecksConfig = field(default_factory=ChecksConfig)
    systemd_factory: SystemdFactory[SystemdLike] | None = None
    generation: GenerationStatus | None = None
    attestations: tuple[AttestationSummary, ...] = ()
    # NRestarts of each unit at the previous look (the reconciler keeps them); a unit that
    # restarted more than services.max_restarts times since then is drift.
    previous_restarts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("CheckContext.now must be timezone-aware")

    def host_path(self, path: str | PurePosixPath | Path) -> Path:
        """``path`` (absolute on the host) under this context's root."""
        pure = PurePosixPath(path)
        if not pure.is_absolute():
            raise ValueError(f"host path {path} must be absolute")
        return self.root.joinpath(*pure.parts[1:])

    @classmethod
    def for_host(
        cls,
        root: Path,
        *,
        config: ChecksConfig | None = None,
        systemd_factory: SystemdFactory[SystemdLike] | None = None,
        generation: GenerationStatus | None = None,
        attestations: tuple[AttestationSummary, ...] = (),
        previous_restarts: Mapping[str, int] | None = None,
        now: datetime | None = None,
        memo: Memo | None = None,
    ) -> CheckContext:
        """A context for the host under ``root``: the manifest of its running system
        (``<root>/run/current-system/etc/nixcomply/manifest.json``) and its parameters
        (``memo``: where the shipped baseline's parameters may be remembered)."""
        current = root.joinpath(*CURRENT_SYSTEM.parts[1:])
        manifest = read_manifest(current) if current.exists() else None
        return cls(
            root=root,
            manifest=manifest,
            parameters=parameters_of(manifest, origin=current, memo=memo),
            now=now or datetime.now(UTC),
            config=config or ChecksConfig(),
            systemd_factory=systemd_factory,
            generation=generation,
            attestations=attestations,
            previous_restarts=previous_restarts or {},
        )


def parameters_of(
    manifest: Manifest | None, *, origin: Path | None = None, memo: Memo | None = None
) -> Parameters:
    """The manifest's parameters, or the shipped baseline's, or :data:`FALLBACK_PARAMETERS`."""
    if manifest is not None:
        try:
            return Parameters.model_validate(manifest.parameters)
        except ValidationError as e:
            where = SourceMap(origin or Path("manifest.json"))
            raise InputError(problems_from_validation(e, where)) from None
    return default_parameters(memo)


# (path, st_dev, st_ino, st_mtime_ns, st_size) -> the shipped baseline's parameters
_DEFAULTS: dict[tuple[Path, int, int, int, int], Parameters] = {}


def default_parameters(memo: Memo | None = None) -> Parameters:
    """The shipped baseline's parameters, read again only when the file changed (kept in
    this process, and in ``memo`` for the next run)."""
    path = default_baseline()
    try:
        st = path.stat()
    except OSError:
        return FALLBACK_PARAMETERS
    key = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    if key in _DEFAULTS:
        return _DEFAULTS[key]
    stamp = file_stamp(path)
    remembered = memo.recall(f"baseline-parameters:{path}", stamp) if memo is not None and stamp else None
    if remembered is not None:
        try:
            _DEFAULTS[key] = Parameters.model_validate_json(remembered)
            return _DEFAULTS[key]
        except ValidationError:
            pass
    try:
        _DEFAULTS[key] = load_baseline(path).baseline.parameters
    except InputError as e:
        logger.warning("cannot read the shipped baseline's parameters (%s); using built-in values", e)
        return FALLBACK_PARAMETERS
    if memo is not None and stamp:
        memo.memorise(f"baseline-parameters:{path}", stamp, _DEFAULTS[key].model_dump_json())
    return _DEFAULTS[key]
