"""encryption: the root and data filesystems sit on LUKS (dm-crypt).

``lsblk -J -o NAME,TYPE,FSTYPE,MOUNTPOINTS,PKNAME`` prints the block devices as a tree
(a disk, its partitions, the ``crypt`` mapping opened on a partition, LVM volumes on that
mapping...). A mount is encrypted when the device mounted there, or any device above it in
that tree, has ``TYPE crypt``. For every crypt device found, ``cryptsetup status NAME``
tells whether it is LUKS and which cipher it uses. A mount that is not a block device (a
tmpfs root, ZFS, a container's overlay) cannot be judged this way: that is an error, not a
pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from nixcomply.checks.base import (
    CheckError,
    CheckSpec,
    Controls,
    Outputs,
    Verdict,
    expect_bool,
    expect_str_list,
    per_control,
    run_command,
)
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "encryption"
SPEC: Final = CheckSpec(
    name=NAME,
    severity="critical",
    runbook=None,  # re-encrypting a volume is a human's job
    expect_keys=frozenset({"root_on_luks", "data_on_luks", "mounts_on_luks"}),
)
DEFAULT_EXPECT: Final[Mapping[str, Any]] = {"root_on_luks": True}
LSBLK_COLUMNS: Final = "NAME,TYPE,FSTYPE,MOUNTPOINTS,PKNAME"


@dataclass(frozen=True)
class BlockDevice:
    name: str
    type: str
    fstype: str | None
    mountpoints: tuple[str, ...]
    ancestors: tuple[str, ...]  # names from the top (disk) down to the parent
    crypt_ancestor: str | None  # the nearest crypt device at or above this one


def _mounts(node: Mapping[str, Any]) -> tuple[str, ...]:
    if "mountpoints" in node:
        value = node["mountpoints"]
        if not isinstance(value, list):
            raise ValueError(f"lsblk: mountpoints of {node.get('name')} is not a list")
        return tuple(m for m in value if isinstance(m, str) and m)
    single = node.get("mountpoint")  # util-linux before 2.37
    return (single,) if isinstance(single, str) and single else ()


def parse_lsblk(text: str) -> list[BlockDevice]:
    """``lsblk -J`` tree -> every device with its ancestry (a device under two parents, like
    an LVM volume spanning two PVs, appears once per path)."""
    if not text.strip():
        raise ValueError("lsblk printed nothing")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"lsblk output is not JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict) or not isinstance(data.get("blockdevices"), list):
        raise ValueError("lsblk output has no 'blockdevices' list")
    devices: list[BlockDevice] = []

    def visit(node: Any, ancestors: tuple[str, ...], crypt: str | None) -> None:
        if (
            not isinstance(node, dict)
            or not isinstance(node.get("name"), str)
            or not isinstance(node.get("type"), str)
        ):
            raise ValueError(f"lsblk: a device lacks name or type: {str(node)[:80]}")
        name = node["name"]
        if node["type"] == "crypt":
            crypt = name
        devices.append(BlockDevice(name, node["type"], node.get("fstype"), _mounts(node), ancestors, crypt))
        children = node.get("children", [])
        if not isinstance(children, list):
            raise ValueError(f"lsblk: children of {name} is not a list")
        for child in children:
            visit(child, (*ancestors, name), crypt)

    for top in data["blockdevices"]:
        visit(top, (), None)
    return devices


_STATUS_HEAD: Final = re.compile(r"^(\S+) is (active|inactive)(?: and is in use)?\.$")


def parse_cryptsetup_status(text: str) -> dict[str, str]:
    """``cryptsetup status NAME`` -> {state, type, cipher, keysize, device, mode, ...}."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("cryptsetup status printed nothing")
    head = _STATUS_HEAD.match(lines[0].strip())
    if head is None:
        raise ValueError(f"cryptsetup status: unexpected first line {lines[0][:80]!r}")
    status = {"path": head.group(1), "state": head.group(2)}
    for line in lines[1:]:
        key, sep, value = line.strip().partition(":")
        if not sep:
            raise ValueError(f"cryptsetup status: line is not 'key: value': {line[:80]!r}")
        status[key.strip()] = value.strip()
    if status["state"] == "active" and "type" not in status:
        raise ValueError("cryptsetup status of an active device lacks its type")
    return status


@dataclass(frozen=True)
class EncryptionObservation:
    devices: tuple[BlockDevice, ...]
    crypt: Mapping[str, Mapping[str, str]]  # crypt device name -> cryptsetup status


def observe(ctx: CheckContext) -> tuple[EncryptionObservation, Outputs]:
    exe = ctx.config.executables
    listing = run_command(ctx, [exe.lsblk, "-J", "-o", LSBLK_COLUMNS])
    devices = parse_lsblk(listing.stdout)
    outputs = {"lsblk": listing.stdout}
    crypt: dict[str, Mapping[str, str]] = {}
    for name in sorted({d.name for d in devices if d.type == "crypt"}):
        result = run_command(ctx, [exe.cryptsetup, "status", name])
        outputs[f"cryptsetup_status_{name}"] = result.stdout
        crypt[name] = parse_cryptsetup_status(result.stdout)
    return EncryptionObservation(tuple(devices), crypt), outputs


def _mount_state(obs: EncryptionObservation, mount: str) -> dict[str, Any]:
    found = [d for d in obs.devices if mount in d.mountpoints]
    if not found:
        raise CheckError(f"{mount} is not mounted from a block device lsblk knows (tmpfs, ZFS, overlay?)")
    device = found[0]
    on_luks = all(d.crypt_ancestor is not None for d in found)
    status = obs.crypt.get(device.crypt_ancestor) if device.crypt_ancestor else None
    luks = bool(status and status.get("type", "").upper().startswith("LUKS"))
    return {
        "device": device.name,
        "path": [*device.ancestors, device.name],
        "crypt_device": device.crypt_ancestor,
        "luks_type": status.get("type") if status else None,
        "cipher": status.get("cipher") if status else None,
        "on_luks": on_luks and luks,
    }


def judge(obs: EncryptionObservation, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    expect = expect or DEFAULT_EXPECT
    cfg = ctx.config.encryption
    wanted: list[str] = []
    if expect_bool(expect, "root_on_luks"):
        wanted.append(str(cfg.root_mount))
    if expect_bool(expect, "data_on_luks"):
        if not cfg.data_mounts:
            return Verdict(
                "skipped", "no data mounts configured on this host (checks.encryption.data_mounts)"
            )
        wanted.extend(str(m) for m in cfg.data_mounts)
    wanted.extend(str(PurePosixPath(m)) for m in expect_str_list(expect, "mounts_on_luks") or [])
    if not wanted:
        raise ValueError("the control's expect asks for no mount to be on LUKS")
    observed = {mount: _mount_state(obs, mount) for mount in dict.fromkeys(wanted)}
    plain = [m for m, state in observed.items() if not state["on_luks"]]
    expected = {"on_luks": list(observed)}
    if plain:
        detail = ", ".join(f"{m} ({' > '.join(observed[m]['path'])})" for m in plain)
        return Verdict("drift", f"not on LUKS: {detail}", observed, expected)
    detail = ", ".join(
        f"{m} via {s['crypt_device']} ({s['luks_type']}, {s['cipher']})" for m, s in observed.items()
    )
    return Verdict("pass", f"on LUKS: {detail}", observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
