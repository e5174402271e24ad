"""file_content: a file on the host exists and says what a control requires (a login
banner in ``/etc/issue``, a setting in a file no option manages).

``expect``: ``path`` (absolute, read under the root) and one or more of ``contains`` (a
substring), ``not_contains``, ``equals`` (the whole content, trailing newline ignored) or
``exists: false`` (the file must be absent). The content itself is not kept as evidence
(files may hold anything); its sha256 and size are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from nixcomply.checks.base import CheckError, CheckSpec, Controls, Outputs, Verdict, per_control
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "file_content"
SPEC: Final = CheckSpec(
    name=NAME,
    severity="medium",
    runbook="RB-DRIFT-001",
    expect_keys=frozenset({"path", "contains", "not_contains", "equals", "exists"}),
    needs_control=True,
)
MAX_BYTES: Final = 1 << 20


def observe(ctx: CheckContext) -> tuple[CheckContext, Outputs]:
    return ctx, {}  # the paths come from each control's expect


def judge(ctx: CheckContext, expect: Mapping[str, Any], _ctx: CheckContext) -> Verdict:
    path = expect.get("path")
    if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"expect.path must be an absolute path without '..', not {path!r}")
    must_exist = expect.get("exists", True)
    if not isinstance(must_exist, bool):
        raise ValueError("expect.exists must be true or false")
    texts = {k: expect[k] for k in ("contains", "not_contains", "equals") if k in expect}
    for key, value in texts.items():
        if not isinstance(value, str):
            raise ValueError(f"expect.{key} must be a string")
    if must_exist and not texts:
        raise ValueError("expect needs contains, not_contains or equals (or exists: false)")
    host = ctx.host_path(path)
    expected = dict(expect)
    if not host.exists():
        observed: dict[str, Any] = {"exists": False}
        if must_exist:
            return Verdict("drift", f"{path} does not exist", observed, expected, subject=path)
        return Verdict("pass", f"{path} is absent", observed, expected, subject=path)
    if not must_exist:
        return Verdict("drift", f"{path} exists but must not", {"exists": True}, expected, subject=path)
    if host.stat().st_size > MAX_BYTES:
        raise CheckError(f"{path} is larger than {MAX_BYTES} bytes")
    data = host.read_bytes()
    text = data.decode("utf-8", "replace")
    observed = {"exists": True, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    wrong = []
    if "contains" in texts and texts["contains"] not in text:
        wrong.append(f"does not contain {texts['contains'][:60]!r}")
    if "not_contains" in texts and texts["not_contains"] in text:
        wrong.append(f"contains {texts['not_contains'][:60]!r}")
    if "equals" in texts and text.rstrip("\n") != texts["equals"].rstrip("\n"):
        wrong.append("content differs from the expected text")
    observed["matches"] = not wrong
    if wrong:
        return Verdict("drift", f"{path}: " + "; ".join(wrong), observed, expected, subject=path)
    return Verdict("pass", f"{path} has the expected content", observed, expected, subject=path)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
