"""Render a baseline into a NixOS module (jinja2 templates shipped as package data).

Rendering is pure and deterministic: the same baseline, release and nixcomply version give
the same bytes (sorted attribute sets, stable formatting, no timestamps). The module has one
commented block per control, each guarded so that ``nixcomply.exceptions."<id>"`` drops it,
and writes ``/etc/nixcomply/manifest.json`` for the reconciler.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jinja2

from nixcomply import __version__
from nixcomply.baseline import releases
from nixcomply.baseline.load import LoadedBaseline
from nixcomply.baseline.models import AssertionKind, Control
from nixcomply.baseline.nixattr import format_attr_path, nix_string, nix_value, parse_attr_path
from nixcomply.core.fsutil import write_output
from nixcomply.core.paths import data_dir
from nixcomply.model.manifest import MANIFEST_SCHEMA

FRAMEWORK_LABELS: Final = (
    ("hipaa", "HIPAA"),
    ("soc2", "SOC 2"),
    ("cis_v8", "CIS v8"),
    ("nist_800_53", "NIST 800-53"),
    ("nist_csf", "NIST CSF"),
)

# Each assertion kind is a let-binding of the template (see templates/baseline.nix.j2).
ASSERTION_EXPRESSIONS: Final = {AssertionKind.ROOT_ON_LUKS: "rootOnLuks"}


@dataclass(frozen=True)
class Detected:
    """Settings whose spelling the evaluation decides: ``options ? <probe>``."""

    probe: str  # Nix expression, e.g. `options ? systemd.coredump.settings`
    structured: tuple[tuple[str, str], ...]
    fallback: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RenderedControl:
    id: str
    title: str
    severity: str
    references: str  # one line: "HIPAA 164.312(d) · SOC 2 CC6.1 · ..."
    rationale_lines: tuple[str, ...]
    check: str
    remediation: str
    settings: tuple[tuple[str, str], ...]  # (option path as Nix source, value as Nix source)
    detected: Detected | None
    assertions: tuple[tuple[str, str], ...]  # (Nix expression, message as Nix string)
    manifest_entry: str  # the control's manifest attribute set, as Nix source
    manifest_settings: str  # its `settings` (target spelling), a Nix expression


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("nixcomply.baseline", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - the output is Nix source, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["nix"] = nix_value
    env.filters["nix_string"] = nix_string
    return env


def references(control: Control) -> str:
    parts = []
    for key, label in FRAMEWORK_LABELS:
        refs: list[str] = getattr(control.frameworks, key)
        parts.append(f"{label} {', '.join(refs)}")
    return " · ".join(parts)


def control_settings(control: Control, target: releases.Release) -> releases.Spelled:
    canonical = [(parse_attr_path(p), v) for p, v in control.nixos.items()]
    return releases.spell(canonical, target)


def _nix_settings(settings: dict[tuple[str, ...], Any], indent: int) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted((format_attr_path(path), nix_value(value, indent=indent)) for path, value in settings.items())
    )


def _manifest_settings(settings: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    return {format_attr_path(path): value for path, value in settings.items()}


def _render_control(control: Control, target: releases.Release) -> RenderedControl:
    spelled = control_settings(control, target)
    manifest = {
        "title": control.title,
        "severity": control.severity.value,
        "frameworks": control.frameworks.model_dump(),
        "verify": control.verify.model_dump(),
        "remediation": control.remediation,
    }
    settings_expr = nix_value(_manifest_settings(spelled.settings), indent=3)
    detected = None
    if spelled.probe is not None:
        probe = f"options ? {format_attr_path(spelled.probe)}"
        detected = Detected(
            probe=probe,
            structured=_nix_settings(spelled.structured, 4),
            fallback=_nix_settings(spelled.fallback, 4),
        )
        settings_expr = (
            f"{settings_expr} // (if {probe} then "
            f"{nix_value(_manifest_settings(spelled.structured), indent=3)} else "
            f"{nix_value(_manifest_settings(spelled.fallback), indent=3)})"
        )
    return RenderedControl(
        id=control.id,
        title=control.title,
        severity=control.severity.value,
        references=references(control),
        rationale_lines=tuple(textwrap.wrap(" ".join(control.rationale.split()), width=92)),
        check=control.verify.check,
        remediation=control.remediation,
        settings=_nix_settings(spelled.settings, 3 if detected is None else 4),
        detected=detected,
        assertions=tuple(
            (ASSERTION_EXPRESSIONS[r.assertion], nix_string(r.message)) for r in control.requires
        ),
        manifest_entry=nix_value(manifest, indent=2),
        manifest_settings=settings_expr,
    )


def render(loaded: LoadedBaseline, *, release: str | None = None) -> str:
    """The NixOS module for ``loaded`` with option names of ``release`` (default: the baseline's)."""
    baseline = loaded.baseline
    target = releases.release(release or baseline.nixos_release)
    controls = [_render_control(c, target) for c in baseline.controls]
    template = _environment().get_template("baseline.nix.j2")
    return template.render(
        baseline=baseline,
        release=target.name,
        source_name=_display(loaded.path),
        version=__version__,
        digest=loaded.digest,
        schema=MANIFEST_SCHEMA,
        controls=controls,
        assertion_expressions={expression for c in controls for expression, _ in c.assertions},
        not_applicable=[(c.id, c.unless) for c in baseline.controls if c.unless is not None],
        parameters=nix_value(baseline.parameters.model_dump(), indent=2),
    )


def render_to(loaded: LoadedBaseline, output: Path, *, release: str | None = None) -> bool:
    """Write the module to ``output`` if it changed; return whether it changed (see
    :func:`nixcomply.core.fsutil.write_output`: regular files atomically, devices and FIFOs
    as a stream, symlinks and directories refused)."""
    return write_output(output, render(loaded, release=release).encode("utf-8"))


def _display(path: Path) -> str:
    """The baseline's path as the generated header names it: relative to nixcomply's data
    directory when it lies there, else its file name; never dependent on the working
    directory, so the committed module is the same wherever it is rendered."""

    try:
        return str(path.resolve().relative_to(data_dir().resolve()))
    except ValueError:
        return path.name
