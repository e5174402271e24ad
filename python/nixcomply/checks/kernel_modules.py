"""kernel_modules: modules that must not load are disabled, and are not loaded now.

NixOS writes ``boot.blacklistedKernelModules`` as ``blacklist NAME`` lines and
``boot.extraModprobeConfig`` verbatim into ``/etc/modprobe.d/nixos.conf``. ``blacklist``
only stops alias-based autoloading; ``install NAME /bin/false`` (or ``true``) stops an
explicit ``modprobe NAME`` too, which is what CIS asks for. Both count as disabled; the
observation says which. Loaded modules come from ``<root>/proc/modules`` (absent on a
kernel without module support: then nothing is loaded). Module names compare with ``-``
and ``_`` as the same character, as modprobe does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from nixcomply.checks.base import (
    CheckSpec,
    Controls,
    Outputs,
    Verdict,
    expect_str_list,
    per_control,
)
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "kernel_modules"
SPEC: Final = CheckSpec(
    name=NAME,
    severity="medium",
    runbook="RB-DRIFT-001",
    expect_keys=frozenset({"blacklisted", "not_loaded"}),
    needs_control=True,
)
# modprobe reads these directories; a file name in an earlier one hides the same name later.
MODPROBE_DIRS: Final = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/lib/modprobe.d")
_COMMANDS: Final = {"alias": 2, "blacklist": 1, "install": 2, "remove": 2, "options": 1, "softdep": 1}
_DISABLING: Final = ("false", "true")


def normalise(module: str) -> str:
    return module.replace("-", "_")


@dataclass(frozen=True)
class ModprobeConfig:
    blacklisted: frozenset[str]
    install_disabled: frozenset[str]  # install NAME /bin/false (or true)

    @property
    def disabled(self) -> frozenset[str]:
        return self.blacklisted | self.install_disabled


def parse_modprobe_conf(text: str) -> ModprobeConfig:
    """modprobe.d syntax (modprobe.d(5)): comments, ``\\`` continuations, commands."""
    blacklisted: set[str] = set()
    disabled: set[str] = set()
    logical = text.replace("\\\n", " ")
    for number, raw in enumerate(logical.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        command = words[0]
        need = _COMMANDS.get(command)
        if need is None:
            continue  # modprobe warns and ignores unknown commands; so do we
        if len(words) - 1 < need:
            raise ValueError(f"line {number}: {command} needs {need} argument(s): {raw.strip()[:80]!r}")
        if command == "blacklist":
            blacklisted.add(normalise(words[1]))
        elif command == "install":
            program = PurePosixPath(words[2]).name
            if program in _DISABLING and len(words) == 3:
                disabled.add(normalise(words[1]))
    return ModprobeConfig(frozenset(blacklisted), frozenset(disabled))


def parse_proc_modules(text: str) -> frozenset[str]:
    """``/proc/modules`` -> loaded module names. Empty is valid: nothing is loaded."""
    loaded: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        fields = raw.split()
        if len(fields) < 6 or not fields[1].isdigit() or fields[4] not in ("Live", "Loading", "Unloading"):
            raise ValueError(
                f"/proc/modules line {number} is not 'name size refs deps state addr': {raw[:80]!r}"
            )
        loaded.add(normalise(fields[0]))
    return frozenset(loaded)


@dataclass(frozen=True)
class ModulesObservation:
    config: ModprobeConfig
    loaded: frozenset[str]
    files: tuple[str, ...]


def observe(ctx: CheckContext) -> tuple[ModulesObservation, Outputs]:
    seen: dict[str, str] = {}
    for directory in MODPROBE_DIRS:
        base = ctx.host_path(directory)
        if not base.is_dir():
            continue
        for path in sorted(base.glob("*.conf")):
            seen.setdefault(path.name, str(PurePosixPath(directory) / path.name))
    texts = []
    blacklisted: set[str] = set()
    disabled: set[str] = set()
    for name in sorted(seen):
        host = seen[name]
        text = ctx.host_path(host).read_text(encoding="utf-8", errors="replace")
        try:
            parsed = parse_modprobe_conf(text)
        except ValueError as e:
            raise ValueError(f"{host}: {e}") from None
        blacklisted |= parsed.blacklisted
        disabled |= parsed.install_disabled
        texts.append(f"# {host}\n{text}")
    modules_path = ctx.host_path("/proc/modules")
    try:
        modules_text = modules_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        modules_text = ""  # a kernel without loadable modules
    observation = ModulesObservation(
        ModprobeConfig(frozenset(blacklisted), frozenset(disabled)),
        parse_proc_modules(modules_text),
        tuple(seen[n] for n in sorted(seen)),
    )
    return observation, {"modprobe_d": "".join(texts), "proc_modules": modules_text}


def judge(obs: ModulesObservation, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    want_disabled = expect_str_list(expect, "blacklisted") or []
    want_unloaded = expect_str_list(expect, "not_loaded") or []
    if not want_disabled and not want_unloaded:
        raise ValueError("the control's expect names no module (blacklisted / not_loaded)")
    not_disabled = sorted(m for m in want_disabled if normalise(m) not in obs.config.disabled)
    loaded = sorted(m for m in want_unloaded if normalise(m) in obs.loaded)
    observed = {
        "blacklisted": sorted(m for m in want_disabled if normalise(m) in obs.config.blacklisted),
        "install_disabled": sorted(m for m in want_disabled if normalise(m) in obs.config.install_disabled),
        "loaded": loaded,
        "config_files": list(obs.files),
    }
    expected = {"blacklisted": want_disabled, "not_loaded": want_unloaded}
    wrong = []
    if not_disabled:
        wrong.append(f"not blacklisted: {', '.join(not_disabled)}")
    if loaded:
        wrong.append(f"loaded now: {', '.join(loaded)}")
    if wrong:
        return Verdict("drift", "kernel modules: " + "; ".join(wrong), observed, expected)
    return Verdict(
        "pass",
        f"{len(want_disabled)} module(s) disabled, {len(want_unloaded)} checked and not loaded",
        observed,
        expected,
    )


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
