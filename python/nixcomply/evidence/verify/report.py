"""What verification found: findings, the report, its ``--json`` form and its summary lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Final, Literal, TypedDict

from nixcomply.core.display import shown
from nixcomply.errors import EXIT_FAILURE, EXIT_OK, EXIT_WARNINGS

ProblemLevel = Literal["error", "warning"]
Kind = Literal["store", "packet", "entries"]
MAX_REPORTED: Final = 50


class Rank(IntEnum):
    """Which of two findings at the same sequence number comes first: what an entry's own
    signed bundle shows before what the log's files covering it show, so that a changed
    bundle is named before the checkpoints its change also breaks."""

    BUNDLE = 0
    LOG = 1
    STORE = 2


class Check(StrEnum):
    """Which kind of check an upload's problem comes from (``verify_entries``), for a caller
    that answers differently: an entry that is not authentic or not valid, authentic entries
    that do not continue the log as accepted (a fork), the checkpoint's signature or size,
    its root against the tree, the consistency proof."""

    ENTRY = "entry"
    LINK = "link"
    CHECKPOINT = "checkpoint"
    ROOT = "root"
    PROOF = "proof"


@dataclass(frozen=True)
class VerifyProblem:
    severity: ProblemLevel
    message: str
    seq: int | None = None
    path: str | None = None
    rank: Rank = field(default=Rank.BUNDLE, compare=False)
    check: Check | None = field(default=None, compare=False)

    def __str__(self) -> str:
        where = []
        if self.seq is not None:
            where.append(f"entry {self.seq}")
        if self.path:
            where.append(self.path)
        prefix = f"{' '.join(where[:1])}{f' ({where[1]})' if len(where) > 1 else ''}: " if where else ""
        return f"{prefix}{self.message}"


def order(f: VerifyProblem) -> tuple[bool, int, int]:
    """Findings by entry (the earliest first), ties by :class:`Rank`; those about no entry last."""
    return (f.seq is None, f.seq or 0, f.rank)


class ProblemJson(TypedDict):
    seq: int | None
    path: str | None
    message: str


class PinJson(TypedDict):
    """The pinned checkpoint (``--pin-checkpoint``): its size, and whether the log extends it."""

    size: int
    consistent: bool


class PeriodJson(TypedDict):
    """A packet's period: the dates, and the sequence numbers ``[start, end)`` of its entries."""

    start: date | str
    end: date | str
    first_seq: int
    end_seq: int


class ReportJson(TypedDict):
    """The stable ``--json`` output of ``nixcomply evidence verify``.

    ``keyring_pinned`` is false when the keyring came from the directory being verified:
    the result then only shows the evidence is consistent, not who made it (exit 3).
    ``host_size`` is the log size the host's state database records (null: none was
    given or found), ``pin_next`` the checkpoint file to keep and pass as
    ``--pin-checkpoint`` next time."""

    ok: bool
    exit_code: int
    kind: Kind
    path: str
    origin: str | None
    entries: int
    bundles: int
    tree_size: int
    root: str | None
    checkpoint_size: int
    checkpoints_verified: int
    keyring_pinned: bool
    keyring_source: str
    pinned: PinJson | None
    host_size: int | None
    pin_next: str | None
    period: PeriodJson | None
    first_error: ProblemJson | None
    errors: list[ProblemJson]
    warnings: list[ProblemJson]
    duration_s: float


@dataclass(frozen=True, slots=True)
class Indexed:
    """What verify learnt about one authentic entry; export packs from this table."""

    seq: int
    path: str
    bundle_id: str
    envelope_sha256: str
    day: date
    rotation: bool


@dataclass
class Report:
    kind: Kind
    path: Path
    origin: str | None = None
    entries: int = 0
    bundles: int = 0
    tree_size: int = 0
    root: bytes | None = None
    checkpoint_size: int = 0
    checkpoints_verified: int = 0
    keyring_pinned: bool = True
    keyring_source: str = ""
    pinned: PinJson | None = None
    host_size: int | None = None
    pin_next: str | None = None
    period: PeriodJson | None = None
    errors: list[VerifyProblem] = field(default_factory=list)
    warnings: list[VerifyProblem] = field(default_factory=list)
    duration_s: float = 0.0
    # Filled with verify(index=True): every authentic entry by sequence number (export packs from it).
    index: dict[int, Indexed] = field(default_factory=dict, repr=False)

    def error(
        self,
        message: str,
        *,
        seq: int | None = None,
        path: str | None = None,
        rank: Rank = Rank.BUNDLE,
        check: Check | None = None,
    ) -> None:
        self.errors.append(VerifyProblem("error", message, seq, path, rank, check))

    def warn(
        self, message: str, *, seq: int | None = None, path: str | None = None, rank: Rank = Rank.BUNDLE
    ) -> None:
        self.warnings.append(VerifyProblem("warning", message, seq, path, rank))

    def add(self, problem: VerifyProblem) -> None:
        (self.errors if problem.severity == "error" else self.warnings).append(problem)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURE if self.errors else EXIT_WARNINGS if self.warnings else EXIT_OK

    def first_error(self) -> VerifyProblem | None:
        return min(self.errors, key=order) if self.errors else None

    def to_json(self) -> ReportJson:
        def conv(f: VerifyProblem) -> ProblemJson:
            return {"seq": f.seq, "path": f.path, "message": f.message}

        first = self.first_error()
        period = self.period
        return {
            "ok": not self.errors,
            "exit_code": self.exit_code,
            "kind": self.kind,
            "path": str(self.path),
            "origin": self.origin,
            "entries": self.entries,
            "bundles": self.bundles,
            "tree_size": self.tree_size,
            "root": self.root.hex() if self.root is not None else None,
            "checkpoint_size": self.checkpoint_size,
            "checkpoints_verified": self.checkpoints_verified,
            "keyring_pinned": self.keyring_pinned,
            "keyring_source": self.keyring_source,
            "pinned": self.pinned,
            "host_size": self.host_size,
            "pin_next": self.pin_next,
            "period": None
            if period is None
            else {**period, "start": str(period["start"]), "end": str(period["end"])},
            "first_error": conv(first) if first else None,
            "errors": [conv(f) for f in sorted(self.errors, key=order)[:MAX_REPORTED]],
            "warnings": [conv(f) for f in sorted(self.warnings, key=order)[:MAX_REPORTED]],
            "duration_s": round(self.duration_s, 3),
        }

    def lines(self) -> list[str]:
        """The human summary: the first error, the rest, the warnings, then the verdict;
        what the evidence wrote (file names, origins) with control characters escaped."""
        return [shown(line) for line in self._lines()]

    def _lines(self) -> list[str]:
        out = []
        first = self.first_error()
        if first is not None:
            out.append(f"FAILED: {first}")
            rest = [f for f in sorted(self.errors, key=order) if f is not first]
            out.extend(f"  also: {f}" for f in rest[: MAX_REPORTED - 1])
            if len(self.errors) > MAX_REPORTED:
                out.append(f"  ... and {len(self.errors) - MAX_REPORTED} more errors")
        out.extend(f"warning: {w}" for w in sorted(self.warnings, key=order)[:MAX_REPORTED])
        root = self.root.hex() if self.root is not None else "-"
        verdict = "FAILED" if self.errors else "OK with warnings" if self.warnings else "OK"
        what = "entries" if self.kind == "entries" else f"{self.kind} {self.path}"
        summary = (
            f"{verdict}: {what}: {self.bundles} bundles, tree size {self.tree_size}, "
            f"root {root}, {self.checkpoints_verified} checkpoints verified"
        )
        if self.pinned and self.pinned["consistent"]:
            summary += f", consistent with pinned checkpoint of size {self.pinned['size']}"
        if self.host_size is not None and not self.errors:
            summary += f", agrees with the host's record of {self.host_size} entries"
        if self.period is not None and not self.errors:
            p = self.period
            summary += (
                f"; complete for {p['start']}..{p['end']} (entries {p['first_seq']}..{p['end_seq'] - 1})"
            )
        out.append(summary)
        if self.pin_next and not self.errors:
            out.append(f"pin next time: --pin-checkpoint {self.pin_next}")
        return out
