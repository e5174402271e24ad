"""Flake references and ``nix flake metadata --json``.

The reconciler's first question each cycle is "which revision does the target flake name
now?". ``nix flake metadata`` answers it without evaluating or building anything: the locked
revision, the narHash of the source, lastModified, and (by the absence of a revision) whether
the tree is dirty.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field, ValidationError

from nixcomply.model.base import ForeignModel
from nixcomply.nixos.tools import DEFAULT_TOOLS, Tools

# The schemes a reconciler target may use. Indirect (registry) references such as
# `nixpkgs` or `flake:foo` are left out on purpose: the registry is mutable state outside
# the flake, so the same text could name different sources on different days.
SCHEMES: Final = frozenset(
    {
        "path",
        "git+file",
        "git+https",
        "git+http",
        "git+ssh",
        "github",
        "gitlab",
        "sourcehut",
        "tarball+https",
        "tarball+file",
        "file+https",
        "file+file",
        "https",
    }
)
_FORGES: Final = frozenset({"github", "gitlab", "sourcehut"})
_SCHEME_RE: Final = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*):")
_REV_RE: Final = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class FlakeRef:
    """A flake reference as Nix spells it, with the ``#fragment`` kept apart.

    ``url`` is everything before ``#`` and is what Nix commands get; ``attr`` is the
    fragment, which names the host (the ``nixosConfigurations`` attribute) the way
    ``nixos-rebuild --flake URL#host`` does.
    """

    url: str
    attr: str | None = None

    @classmethod
    def parse(cls, text: str) -> FlakeRef:
        """Parse ``path:``, ``git+file://``, ``git+https://...?ref=``, ``github:o/r/rev``, plain
        paths, ... Raises ``ValueError`` (a pydantic validator turns it into a located input
        error) for an empty text, an unknown scheme or an indirect registry reference."""
        text = text.strip()
        url, _, attr = text.partition("#")
        if not url:
            raise ValueError("empty flake reference")
        if _is_plain_path(url):
            return cls(url, attr or None)
        m = _SCHEME_RE.match(url)
        if m is None:
            raise ValueError(
                f"{url!r} is a registry (indirect) flake reference, which resolves through mutable "
                "state outside the flake; give an explicit URL such as git+https://host/repo?ref=main, "
                "github:owner/repo or an absolute path"
            )
        if m.group("scheme") not in SCHEMES:
            raise ValueError(
                f"unsupported flake reference scheme {m.group('scheme')!r} in {url!r}; "
                f"use one of {', '.join(sorted(SCHEMES))} or a plain path"
            )
        return cls(url, attr or None)

    def __str__(self) -> str:
        return f"{self.url}#{self.attr}" if self.attr else self.url

    @property
    def scheme(self) -> str:
        """``git+file``, ``github``, ...; the empty string for a plain path."""
        m = _SCHEME_RE.match(self.url)
        return "" if m is None or _is_plain_path(self.url) else m.group("scheme")

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query))

    @property
    def local_path(self) -> Path | None:
        """The directory on this machine for ``path:``, ``git+file:`` and plain paths."""
        if _is_plain_path(self.url):
            return Path(self.url.partition("?")[0])
        if self.scheme in ("path", "git+file"):
            return Path(unquote(urlsplit(self.url).path))
        return None

    @property
    def rev(self) -> str | None:
        """The revision the reference pins, if it pins one."""
        if rev := self.query.get("rev"):
            return rev
        segment = self._forge_segment()
        return segment if segment is not None and _REV_RE.match(segment) else None

    @property
    def ref(self) -> str | None:
        """The branch or tag the reference follows, if it names one."""
        if ref := self.query.get("ref"):
            return ref
        segment = self._forge_segment()
        return segment if segment is not None and not _REV_RE.match(segment) else None

    def with_attr(self, attr: str | None) -> FlakeRef:
        return FlakeRef(self.url, attr)

    def installable(self, attr_path: str) -> str:
        """``URL#attr.path``: what ``nix build`` takes."""
        return f"{self.url}#{attr_path}"

    def _forge_segment(self) -> str | None:
        """The third path segment of ``github:owner/repo/<ref-or-rev>``."""
        if self.scheme not in _FORGES:
            return None
        parts = urlsplit(self.url).path.split("/")
        return parts[2] if len(parts) >= 3 and parts[2] else None


def _is_plain_path(url: str) -> bool:
    return url.startswith(("/", "./", "../")) or url == "."


def toplevel_attr(host: str) -> str:
    """The attribute path of a host's system closure, the name quoted as nixos-rebuild does
    (so a host name with a dot stays one attribute)."""
    if not host or any(c in host for c in '"\\$'):
        raise ValueError(f"invalid host name for nixosConfigurations: {host!r}")
    return f'nixosConfigurations."{host}".config.system.build.toplevel'


@dataclass(frozen=True)
class FlakeMetadata:
    """What ``nix flake metadata`` says about a flake reference.

    ``locked_url`` pins the revision when there is one: build that, not the original
    reference, so a branch that moves between metadata and build cannot change what is built.
    """

    original_url: str
    resolved_url: str
    locked_url: str
    path: Path
    nar_hash: str
    revision: str | None
    dirty_revision: str | None
    rev_count: int | None
    last_modified: datetime | None
    description: str | None

    @property
    def dirty(self) -> bool:
        """True when no revision names the source: a git tree with uncommitted changes (Nix 2.8
        simply omits ``revision``; newer Nix adds ``dirtyRevision``) or an unversioned
        ``path:`` flake. Either way nothing names what would be built."""
        return self.revision is None

    @property
    def locked_ref(self) -> FlakeRef:
        return FlakeRef(self.locked_url)


class _LockedJson(ForeignModel):
    # Nix's own output: unknown keys are ignored (every Nix release adds some); the keys
    # nixcomply relies on are declared and typed.

    nar_hash: str = Field(alias="narHash")


class _MetadataJson(ForeignModel):
    """``nix flake metadata --json`` (Nix 2.8 and later); see tests/data/nix/ for samples."""

    original_url: str = Field(alias="originalUrl")
    resolved_url: str = Field(alias="resolvedUrl")
    url: str
    path: str
    locked: _LockedJson
    revision: str | None = None
    dirty_revision: str | None = Field(default=None, alias="dirtyRevision")
    rev_count: int | None = Field(default=None, alias="revCount")
    last_modified: int | None = Field(default=None, alias="lastModified")
    description: str | None = None


def parse_flake_metadata(text: str) -> FlakeMetadata:
    """Parse ``nix flake metadata --json`` output; ``ValueError`` if it is not that."""
    try:
        raw = _MetadataJson.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as e:
        raise ValueError(f"unexpected `nix flake metadata --json` output: {e}") from None
    return FlakeMetadata(
        original_url=raw.original_url,
        resolved_url=raw.resolved_url,
        locked_url=raw.url,
        path=Path(raw.path),
        nar_hash=raw.locked.nar_hash,
        revision=raw.revision,
        dirty_revision=raw.dirty_revision,
        rev_count=raw.rev_count,
        last_modified=None if raw.last_modified is None else datetime.fromtimestamp(raw.last_modified, UTC),
        description=raw.description,
    )


def flake_metadata(ref: FlakeRef, *, refresh: bool = False, tools: Tools = DEFAULT_TOOLS) -> FlakeMetadata:
    """Lock ``ref`` and describe it, without evaluating any output.

    ``--no-update-lock-file``: the committed lock file must be complete, so the revision alone
    decides the system closure (an input Nix would have to lock afresh is an error, not a
    silent new dependency). ``refresh`` adds ``--refresh`` so a remote branch is looked up
    again instead of being taken from Nix's cache (``tarball-ttl``, one hour by default).
    """
    argv = [tools.nix, "flake", "metadata", "--json", "--no-update-lock-file"]
    if refresh:
        argv.append("--refresh")
    argv.append(ref.url)
    result = tools.run(argv)
    return result.parsed(parse_flake_metadata)
