"""firewall: the loaded ruleset defaults to deny, logs refused connections, and is the one
the running generation loaded.

nftables (``networking.nftables`` / the nftables firewall backend): ``nft -j list ruleset``.
The input policy is ``drop`` when an ``inet`` input-hook filter chain (or one of each of
``ip`` and ``ip6``) drops what no rule accepted: its policy is drop, or it ends in an
unconditional drop/reject (directly or through an unconditional jump). Refused connections
are logged when a ``log`` statement sits in an input-hook chain or a chain it jumps to.

iptables (NixOS's default backend): ``iptables-save``. NixOS leaves ``INPUT`` at policy
ACCEPT and jumps to ``nixos-fw``, whose last rule jumps through ``nixos-fw-log-refuse`` (a
``LOG`` rule) to ``nixos-fw-refuse`` (``DROP``): the effective policy follows unconditional
jumps the same way. Only IPv4 (``iptables-save``) is read.

The ruleset hash (:func:`ruleset_hash`) is over a normalised form: counters, handles and
nft's metainfo are dropped and set elements sorted, so traffic and reloads do not change
it but any rule added by hand does. The reconciler records the hash after activating a
generation (:func:`observe_ruleset`); a different hash later is drift.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, expect_bool, per_control, run_command
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "firewall"
SPEC: Final = CheckSpec(
    name=NAME,
    severity="high",
    runbook="RB-FIREWALL-001",
    expect_keys=frozenset({"enabled", "input_policy", "log_refused"}),
)
DEFAULT_EXPECT: Final[Mapping[str, Any]] = {"enabled": True, "input_policy": "drop"}
Policy = Literal["drop", "accept", "none"]
_MAX_DEPTH: Final = 32
_VOLATILE_KEYS: Final = frozenset({"handle", "packets", "bytes", "used", "used_unit"})


@dataclass(frozen=True)
class Ruleset:
    """What the firewall check concludes from one ruleset listing."""

    backend: Literal["nftables", "iptables"]
    enabled: bool  # some chain filters input
    input_policy: Policy
    log_refused: bool
    input_chains: tuple[str, ...]
    ruleset_hash: str


# -- hashing -------------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _strip_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in _VOLATILE_KEYS:
                continue
            if key in ("elem", "set") and isinstance(item, list):
                out[key] = sorted((_strip_volatile(v) for v in item), key=_canonical)
            else:
                out[key] = _strip_volatile(item)
        return out
    if isinstance(value, list):
        return [_strip_volatile(v) for v in value]
    return value


def normalise_nft_json(data: Any) -> list[Any]:
    if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
        raise ValueError("not nft JSON: no top-level 'nftables' list")
    items = []
    for item in data["nftables"]:
        if not isinstance(item, dict) or len(item) != 1:
            raise ValueError(f"not nft JSON: unexpected item {str(item)[:80]}")
        if "metainfo" in item:
            continue
        items.append(_strip_volatile(item))
    return items


_TEXT_VOLATILE: Final = (
    (re.compile(r"\s*# handle \d+"), ""),
    (re.compile(r"counter packets \d+ bytes \d+"), "counter"),
    (re.compile(r"^\[\d+:\d+\] "), ""),  # iptables-save -c
    (re.compile(r" \[\d+:\d+\]$"), ""),  # chain counters
)


def normalise_text(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for pattern, replacement in _TEXT_VOLATILE:
            line = pattern.sub(replacement, line)
        lines.append(line)
    return lines


def ruleset_hash(text: str) -> str:
    """sha256 of a normalised ruleset listing: ``nft -j list ruleset`` output (JSON) or a text
    listing (``nft list ruleset``, ``iptables-save``). Compare hashes of the same form only."""
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e.msg} at line {e.lineno}") from None
        canonical = _canonical(normalise_nft_json(data))
    else:
        canonical = "\n".join(normalise_text(text))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# -- nftables ------------------------------------------------------------------------------


def _walk(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _targets(expr: Any) -> set[str]:
    found = set()
    for node in _walk(expr):
        for verb in ("jump", "goto"):
            target = node.get(verb)
            if isinstance(target, dict) and isinstance(target.get("target"), str):
                found.add(target["target"])
    return found


_NFT_MATCHES: Final = frozenset({"match"})  # a rule with a match is conditional


def _nft_final(rules: list[list[Any]], chains: Mapping[str, list[list[Any]]], depth: int) -> str | None:
    """``drop``/``accept`` when the chain's last unconditional verdict decides, else None."""
    if depth > _MAX_DEPTH:
        return None
    for expr in reversed(rules):
        if any(isinstance(s, dict) and set(s) & _NFT_MATCHES for s in expr):
            continue
        for statement in expr:
            if not isinstance(statement, dict):
                continue
            if "drop" in statement or "reject" in statement:
                return "drop"
            if "accept" in statement:
                return "accept"
            for verb in ("jump", "goto"):
                target = statement.get(verb)
                if isinstance(target, dict) and target.get("target") in chains:
                    decided = _nft_final(chains[target["target"]], chains, depth + 1)
                    if decided is not None:
                        return decided
        # an unconditional non-verdict rule (log, counter) does not decide; look further up
    return None


def parse_nft_json(text: str) -> Ruleset:
    if not text.strip():
        raise ValueError("nft -j list ruleset printed nothing")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"nft -j output is not JSON: {e.msg} at line {e.lineno}") from None
    items = normalise_nft_json(data)
    chains: dict[tuple[str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str], list[list[Any]]] = {}
    for item in items:
        if "chain" in item:
            chain = item["chain"]
            key = (f"{chain['family']} {chain['table']}", chain["name"])
            chains[key] = chain
            rules.setdefault(key, [])
        elif "rule" in item:
            rule = item["rule"]
            key = (f"{rule['family']} {rule['table']}", rule["chain"])
            rules.setdefault(key, []).append(list(rule.get("expr", [])))
    drop_families: set[str] = set()
    log_refused = False
    input_chains = []
    for key, chain in sorted(chains.items()):
        if chain.get("hook") != "input" or chain.get("type", "filter") != "filter":
            continue
        table, name = key
        family = table.split(" ", 1)[0]
        input_chains.append(f"{table} {name}")
        same_table = {n: r for (t, n), r in rules.items() if t == table}
        decided = _nft_final(rules.get(key, []), same_table, 0)
        if chain.get("policy", "accept") == "drop" or decided == "drop":
            drop_families.add(family)
        reachable, todo = {name}, [name]
        while todo:
            for expr in same_table.get(todo.pop(), []):
                if any(isinstance(s, dict) and "log" in s for s in expr):
                    log_refused = True
                for target in _targets(expr) - reachable:
                    reachable.add(target)
                    todo.append(target)
    policy: Policy = "none"
    if input_chains:
        policy = "drop" if "inet" in drop_families or {"ip", "ip6"} <= drop_families else "accept"
    return Ruleset(
        backend="nftables",
        enabled=bool(input_chains),
        input_policy=policy,
        log_refused=log_refused,
        input_chains=tuple(input_chains),
        ruleset_hash=ruleset_hash(text),
    )


# -- iptables ------------------------------------------------------------------------------

_BUILTIN: Final = frozenset({"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"})
_TERMINAL_DROP: Final = frozenset({"DROP", "REJECT"})


@dataclass(frozen=True)
class _IptRule:
    conditional: bool
    target: str | None


def parse_iptables_save(text: str) -> Ruleset:
    """``iptables-save`` output (the filter table). Empty output means no table is loaded."""
    policies: dict[str, str] = {}
    chains: dict[str, list[_IptRule]] = {}
    table: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = re.sub(r"^\[\d+:\d+\] ", "", line)
        if line.startswith("*"):
            table = line[1:]
        elif line == "COMMIT":
            table = None
        elif table is None:
            raise ValueError(f"iptables-save line {number} outside a table: {line[:80]!r}")
        elif table != "filter":
            continue
        elif line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                raise ValueError(f"iptables-save line {number}: malformed chain {line[:80]!r}")
            policies[parts[0]] = parts[1]
            chains.setdefault(parts[0], [])
        elif line.startswith("-A "):
            try:
                words = shlex.split(line)
            except ValueError as e:
                raise ValueError(f"iptables-save line {number}: {e}") from None
            target = None
            if "-j" in words[2:]:
                at = words.index("-j", 2)
                target = words[at + 1] if at + 1 < len(words) else None
                conditional = at != 2
            elif "-g" in words[2:]:
                at = words.index("-g", 2)
                target = words[at + 1] if at + 1 < len(words) else None
                conditional = at != 2
            else:
                conditional = True
            chains.setdefault(words[1], []).append(_IptRule(conditional, target))
        else:
            raise ValueError(f"iptables-save line {number} not understood: {line[:80]!r}")
    if table is not None:
        raise ValueError(f"iptables-save output ends inside table {table} (no COMMIT)")

    def final(chain: str, depth: int) -> str | None:
        if depth > _MAX_DEPTH:
            return None
        for rule in chains.get(chain, []):
            if rule.conditional or rule.target is None:
                continue
            if rule.target in _TERMINAL_DROP:
                return "drop"
            if rule.target == "ACCEPT":
                return "accept"
            if rule.target == "RETURN":
                return None
            if rule.target in chains:
                decided = final(rule.target, depth + 1)
                if decided is not None:
                    return decided
        if chain in _BUILTIN:
            return "drop" if policies.get(chain) in _TERMINAL_DROP else "accept"
        return None

    log_refused = False
    reachable, todo = {"INPUT"}, ["INPUT"]
    while todo:
        for rule in chains.get(todo.pop(), []):
            if rule.target in ("LOG", "NFLOG"):
                log_refused = True
            if rule.target in chains and rule.target not in reachable:
                reachable.add(rule.target)
                todo.append(rule.target)
    enabled = "INPUT" in chains and (bool(chains["INPUT"]) or policies.get("INPUT") in _TERMINAL_DROP)
    policy: Policy = "none"
    if "INPUT" in chains:
        policy = "drop" if final("INPUT", 0) == "drop" else "accept"
    return Ruleset(
        backend="iptables",
        enabled=enabled,
        input_policy=policy,
        log_refused=log_refused,
        input_chains=("filter INPUT",) if "INPUT" in chains else (),
        ruleset_hash=ruleset_hash(text),
    )


# -- the check -----------------------------------------------------------------------------


def argv(ctx: CheckContext) -> list[str]:
    exe = ctx.config.executables
    if ctx.config.firewall.backend == "nftables":
        return [exe.nft, "-j", "list", "ruleset"]
    return [exe.iptables_save]


def observe_ruleset(ctx: CheckContext) -> tuple[Ruleset, Outputs]:
    """The ruleset now; the reconciler records ``.ruleset_hash`` after an activation."""
    result = run_command(ctx, argv(ctx))
    if ctx.config.firewall.backend == "nftables":
        return parse_nft_json(result.stdout), {"nft_list_ruleset": result.stdout}
    return parse_iptables_save(result.stdout), {"iptables_save": result.stdout}


def judge(rules: Ruleset, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    expect = expect or DEFAULT_EXPECT
    enabled = expect_bool(expect, "enabled")
    log_refused = expect_bool(expect, "log_refused")
    policy = expect.get("input_policy")
    if policy not in (None, "drop", "accept"):
        raise ValueError(f"expect.input_policy must be drop or accept, not {policy!r}")
    recorded = ctx.generation.firewall_ruleset_hash if ctx.generation else None
    observed = {
        "backend": rules.backend,
        "enabled": rules.enabled,
        "input_policy": rules.input_policy,
        "log_refused": rules.log_refused,
        "input_chains": list(rules.input_chains),
        "ruleset_hash": rules.ruleset_hash,
    }
    expected: dict[str, Any] = dict(expect)
    wrong = []
    if enabled is not None and rules.enabled != enabled:
        wrong.append("no input filtering is loaded" if enabled else "a firewall is loaded")
    if policy is not None and rules.input_policy != policy:
        wrong.append(f"input policy is {rules.input_policy}, expected {policy}")
    if log_refused is not None and rules.log_refused != log_refused:
        wrong.append(
            "refused connections are not logged" if log_refused else "refused connections are logged"
        )
    if recorded is not None:
        expected["ruleset_hash"] = recorded
        if rules.ruleset_hash != recorded:
            wrong.append("the ruleset differs from the one recorded when this generation was activated")
    params = {"unit": ctx.config.firewall.effective_unit}
    if wrong:
        return Verdict(
            "drift", f"firewall ({rules.backend}): " + "; ".join(wrong), observed, expected, params
        )
    summary = f"firewall ({rules.backend}): input policy {rules.input_policy}"
    if rules.log_refused:
        summary += ", refused connections logged"
    if recorded is not None:
        summary += ", ruleset as recorded for the generation"
    return Verdict("pass", summary, observed, expected, params)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe_ruleset, judge)
