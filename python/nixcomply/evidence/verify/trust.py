"""Which keys are trusted for which entry, and which claims are therefore authentic.

Trust starts from the *pinned* keyring — the auditor's own copy (``--keyring``, obtained
through another channel than the evidence), or the keyring of a ``pin.json`` kept from an
earlier packet that verified with a pinned keyring — and changes only through key-rotation
entries of the log that are themselves authentic (:class:`KeyHistory`):

* a rotation at entry ``r`` is signed by the old key (trusted at ``r``) and the new one; it
  ends the old key's range at ``r`` and trusts the new key from ``r``. A log-key rotation's
  covering checkpoint (tree size ``r + 1``) must carry both log keys' signatures too.
* a revocation at ``r`` (signed by a bundle key trusted at ``r``) ends the key's range
  before ``from_seq`` (default ``r``): entries it signed from there on no longer verify.
* a key trusted from an entry ``f > 0`` must have been introduced by a rotation at ``f``:
  a keyring cannot extend trust on its own. (Cutting trust short is always allowed: an
  auditor who learnt that a key leaked may distrust it from any entry.)

A keyring found next to the evidence (the store's, or a packet's ``keyring.json``) must be
what that history arrives at (:func:`compare_keyrings`); the one legitimate difference is
the crash window of ``nixcomply evidence rotate`` (the newest entry is a rotation the
keyring file does not show yet), which is a warning.

:func:`judge` turns the :class:`~.bundle.Checked` results into the authentic entries: a
claim whose signers include no key trusted for its sequence number is reported where its
directory (or its position in an upload) puts it, and nothing in it is used further.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nixcomply.evidence.keyring import Keyring, RangeCache
from nixcomply.evidence.keys import PublicKey
from nixcomply.evidence.statement import KeyRole
from nixcomply.evidence.verify.bundle import Checked, Claim, RotationClaim
from nixcomply.evidence.verify.report import Rank, Report


class KeyHistory:
    """The pinned keyring, followed through the authentic rotation entries in log order."""

    def __init__(self, pinned: Keyring) -> None:
        self.keyring = pinned
        self.before_last: Keyring | None = None
        self.last_rotation: int | None = None
        # (role, raw key, seq): keys introduced by a rotation at seq.
        self.introduced: set[tuple[KeyRole, bytes, int]] = set()
        # tree size -> (old, new): checkpoints that must carry both log keys' signatures.
        self.double_signed: dict[int, tuple[PublicKey, PublicKey]] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        self._ranges = {role: RangeCache(self.keyring, role) for role in KeyRole}
        self._raws: dict[tuple[KeyRole, int], frozenset[bytes]] = {}

    def keys(self, role: KeyRole, seq: int) -> list[PublicKey]:
        """The keys of ``role`` trusted to sign entry ``seq`` (a log key: the checkpoint of
        tree size ``seq + 1``)."""
        return self._ranges[role](seq)

    def trusted(self, role: KeyRole, seq: int) -> frozenset[bytes]:
        keys = self._ranges[role](seq)
        # RangeCache returns one list per segment: its id is a cheap cache key.
        ident = (role, id(keys))
        raws = self._raws.get(ident)
        if raws is None:
            raws = self._raws[ident] = frozenset(k.raw for k in keys)
        return raws

    def apply(self, seq: int, rotation: RotationClaim) -> list[str]:
        """Apply an authentic rotation entry at ``seq``; the problems with it (it is then
        not applied, or only as far as it is sound)."""
        role, new, old = rotation.role, rotation.key, rotation.previous
        problems: list[str] = []
        before = self.keyring
        if rotation.action == "rotate":
            if old is None:
                return ["a rotation must name the previous key"]
            if not (rotation.signed_by_key and rotation.signed_by_previous):
                return ["the key rotation is not signed by both the old and the new key"]
            if old.raw not in self.trusted(role, seq):
                return [
                    f"the rotation replaces {old.name}, which is not a trusted {role.value} key at entry {seq}"
                ]
            entry = self.keyring.entry_for(new, role)
            if entry is not None and entry.valid_from != seq:
                problems.append(
                    f"the keyring trusts {new.name} from entry {entry.valid_from}, but the rotation introduces it at {seq}"
                )
            self.keyring = self.keyring.rotated(role, old, new, seq)
            self.introduced.add((role, new.raw, seq))
            if role is KeyRole.LOG:
                self.double_signed[seq + 1] = (old, new)
        else:
            target = self.keyring.entry_for(new, role)
            if target is None:
                return [
                    f"the revocation names {new.name}, which the keyring does not list as a {role.value} key"
                ]
            cut = rotation.from_seq if rotation.from_seq is not None else seq
            self.keyring = self.keyring.revoked(target, cut, rotation.reason)
        self.before_last, self.last_rotation = before, seq
        self._rebuild()
        return problems

    def unexplained(self, *, before: int = 0) -> list[str]:
        """Trust the keyring extends without a rotation entry for it (keys trusted from an
        entry up to ``before``, which the caller judged earlier, are taken as explained)."""
        out = []
        for e in self.keyring.keys:
            if e.valid_from > before and (e.role, e.key.raw, e.valid_from) not in self.introduced:
                out.append(
                    f"the {e.role.value} key {e.key.name} is trusted from entry {e.valid_from}, "
                    "but no signed rotation entry introduces it there"
                )
        return out


@dataclass(frozen=True)
class KeyringDifference:
    message: str
    crash_window: bool


def compare_keyrings(
    present: Keyring, history: KeyHistory, newest_seq: int | None
) -> KeyringDifference | None:
    """How a keyring found beside the evidence differs from what the pinned keyring and the
    rotation entries arrive at (None: not at all)."""
    derived = history.keyring
    if present.trust() == derived.trust():
        return None
    if (
        history.before_last is not None
        and history.last_rotation == newest_seq
        and present.trust() == history.before_last.trust()
    ):
        return KeyringDifference(
            f"does not reflect the key change of entry {newest_seq} yet (an interrupted "
            "`nixcomply evidence rotate`; running it again finishes it)",
            crash_window=True,
        )
    return KeyringDifference(
        f"differs from the pinned keyring and its signed rotation entries: {_diff(present, derived)}", False
    )


def _diff(present: Keyring, derived: Keyring) -> str:
    """Every difference, by role and key name (not by key bytes: the message must not depend
    on which random key sorts first)."""

    def view(k: Keyring) -> dict[tuple[str, str, bytes], tuple[int, int | None, str]]:
        return {
            (e.role.value, e.key.name, e.key.raw): (e.valid_from, e.valid_until, e.status.value)
            for e in k.keys
        }

    def span(lo: int, hi: int | None) -> str:
        return f"entries {lo}..{'' if hi is None else hi}"

    a, b = view(present), view(derived)
    out = []
    for ident in sorted(set(a) | set(b)):
        role, name, _raw = ident
        if ident not in b:
            out.append(f"it trusts {role} key {name} ({span(*a[ident][:2])}), which they do not")
        elif ident not in a:
            out.append(f"it lacks {role} key {name} ({span(*b[ident][:2])})")
        elif a[ident] != b[ident]:
            lo, hi, st = a[ident]
            lo2, hi2, st2 = b[ident]
            out.append(f"{role} key {name}: {span(lo, hi)} ({st}), expected {span(lo2, hi2)} ({st2})")
    return "; ".join(out) or "the keys are listed differently"


def judge(
    checked: Iterable[Checked], history: KeyHistory, report: Report, *, explained_before: int = 0
) -> dict[int, tuple[Claim, str]]:
    """The authentic entries by sequence number (claim, bundle path); every problem goes to
    ``report`` at the entry's judged place. Rotation entries are judged first, in log
    order, each by the keys trusted at its own position. ``explained_before``: the entries
    before it were judged earlier (an upload continuing a log), so keys the keyring trusts
    from there on need no rotation entry among these."""
    results = list(checked)
    rotations = sorted(
        (c for c in results if c.claim is not None and c.claim.rotation is not None),
        key=lambda c: c.claim.seq if c.claim else 0,
    )
    applied: set[int] = set()
    for c in rotations:
        claim = c.claim
        assert claim is not None
        assert claim.rotation is not None
        if claim.seq in applied or not claim.signers & history.trusted(KeyRole.BUNDLE, claim.seq):
            continue
        applied.add(claim.seq)
        for problem in history.apply(claim.seq, claim.rotation):
            report.error(problem, seq=claim.seq, path=c.rel)
    entries: dict[int, tuple[Claim, str]] = {}
    for c in results:
        claim = c.claim
        if claim is not None and not _authentic(claim, history):
            report.error(
                "no valid signature by a bundle key the keyring trusts for the entry it claims to be "
                f"({claim.seq})",
                seq=c.hint,
                path=c.rel,
            )
            claim = None
        elif claim is None and not c.problems:
            report.error("the envelope could not be checked", seq=c.hint, path=c.rel)
        seq = claim.seq if claim is not None else c.hint
        for severity, message in c.problems:
            (report.error if severity == "error" else report.warn)(message, seq=seq, path=c.rel)
        if claim is None:
            continue
        if claim.seq in entries:
            report.error(
                f"two bundles claim entry {claim.seq}: {entries[claim.seq][1]} and {c.rel}",
                seq=claim.seq,
                path=c.rel,
            )
            continue
        entries[claim.seq] = (claim, c.rel)
    for problem in history.unexplained(before=explained_before):
        report.error(problem, path="keyring", rank=Rank.STORE)
    return entries


def _authentic(claim: Claim, history: KeyHistory) -> bool:
    if claim.signers & history.trusted(KeyRole.BUNDLE, claim.seq):
        return True
    if claim.unmatched is None:
        return False
    # Signed by a key no keyring lists: one a rotation entry introduced.
    message, signatures = claim.unmatched
    return any(k.verify(sig, message) for k in history.keys(KeyRole.BUNDLE, claim.seq) for sig in signatures)
