"""``/etc/nixcomply/manifest.json``: what a system generation promises.

The rendered baseline module writes this file into every system closure (Nix's
``builtins.toJSON``), so each generation carries its own resolved controls, expected
observations, parameters and active exceptions. The reconciler and the runtime checks read
it from the system they judge and nothing else.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field, ValidationError

from nixcomply.core.yamlsource import SourceMap, problems_from_validation
from nixcomply.errors import InputError
from nixcomply.model.base import StrictModel
from nixcomply.model.severity import Severity

MANIFEST_SCHEMA: Final = 1
MANIFEST_PATH: Final = Path("etc/nixcomply/manifest.json")  # inside a system toplevel


class ManifestBaseline(StrictModel):
    id: str
    version: int
    title: str
    digest: str = Field(description="sha256 of the baseline YAML the module was rendered from")


class ManifestVerify(StrictModel):
    check: str
    expect: dict[str, Any] = Field(default_factory=dict)


class ManifestControl(StrictModel):
    title: str
    severity: Severity
    frameworks: dict[str, list[str]]
    verify: ManifestVerify
    remediation: str
    settings: dict[str, Any] = Field(description="option path (target release spelling) -> value")
    status: Literal["enforced", "excepted", "not-applicable"]


class ManifestException(StrictModel):
    model_config = ConfigDict(populate_by_name=True)

    justification: str
    approved_by: str = Field(alias="approvedBy")
    expires: date
    ticket: str


class Manifest(StrictModel):
    schema_version: Literal[1] = Field(alias="schema")
    generator: str
    baseline: ManifestBaseline
    nixos_release: str
    parameters: dict[str, Any]
    controls: dict[str, ManifestControl]
    exceptions: dict[str, ManifestException] = Field(default_factory=dict)

    def enforced(self) -> dict[str, ManifestControl]:
        return {cid: c for cid, c in self.controls.items() if c.status == "enforced"}


def parse_manifest(text: str, origin: Path) -> Manifest:
    """Parse manifest JSON; errors name ``origin`` and the field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError.single(origin, f"not valid JSON: {e.msg}", line=e.lineno) from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        raise InputError(problems_from_validation(e, SourceMap(origin))) from None


# A manifest inside the Nix store never changes: read once per process.
_STORE: Final = Path("/nix/store")
_READ: dict[Path, Manifest | None] = {}


def read_manifest(system: Path) -> Manifest | None:
    """The manifest inside the system toplevel ``system``, or None if it carries none."""
    path = system / MANIFEST_PATH
    resolved = path.resolve()
    if resolved in _READ:
        return _READ[resolved]
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InputError.single(path, f"cannot read: {e.strerror}") from None
    manifest = parse_manifest(text, path)
    if resolved.is_relative_to(_STORE):
        _READ[resolved] = manifest
    return manifest
