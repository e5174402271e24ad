"""restore_test: the last restore test succeeded and is at most
``parameters.restore_test_max_age_days`` old.

RB-RESTORE-001 restores a sample from the newest backup into a scratch directory, compares
checksums with the live copy, and records the outcome in ``checks.restore_test.result_file``
as JSON (:class:`RestoreTestResult`)::

    {"finished_at": "2026-11-20T03:12:09+00:00", "ok": true, "files_compared": 412}

A failed test, a test that compared no file, a missing file or too old a test is drift; a
file that is not this JSON is an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import AwareDatetime, Field, ValidationError

from nixcomply.checks.base import CheckError, CheckSpec, Controls, Outputs, Verdict, age_text, per_control
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.core.fsutil import atomic_write_text, ensure_dir
from nixcomply.model.base import StrictModel

NAME: Final = "restore_test"
SPEC: Final = CheckSpec(name=NAME, severity="medium", runbook="RB-RESTORE-001", expect_keys=frozenset())


class RestoreTestResult(StrictModel):
    """The restore-test result file (written by RB-RESTORE-001, read by this check)."""

    finished_at: AwareDatetime = Field(description="when the comparison finished (ISO 8601 with zone)")
    ok: bool = Field(description="every restored file matched the live copy")
    files_compared: int = Field(ge=0, description="number of files whose checksums were compared")


def parse_result(text: str) -> RestoreTestResult:
    if not text.strip():
        raise ValueError("the restore-test result file is empty")
    try:
        return RestoreTestResult.model_validate(json.loads(text))
    except json.JSONDecodeError as e:
        raise ValueError(f"the restore-test result is not JSON: {e.msg}") from None
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(f"the restore-test result is malformed: {problems}") from None


def write_result(path: Path, result: RestoreTestResult) -> None:
    """Record a restore test's outcome atomically (the runbook executor calls this)."""

    ensure_dir(path.parent)
    atomic_write_text(path, result.model_dump_json() + "\n")


def observe(ctx: CheckContext) -> tuple[RestoreTestResult | None, Outputs]:
    path = ctx.host_path(ctx.config.restore_test.result_file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, {}
    try:
        return parse_result(text), {"restore_test_result": text}
    except ValueError as e:
        raise CheckError(
            f"{ctx.config.restore_test.result_file}: {e}", outputs={"restore_test_result": text}
        ) from None


def judge(result: RestoreTestResult | None, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    cfg = ctx.config.restore_test
    limit = ctx.parameters.restore_test_max_age_days
    params: dict[str, str | int] = {
        "restore_unit": cfg.unit,
        "scratch": str(cfg.scratch),
        "sample": str(cfg.sample),
    }
    expected = {"ok": True, "max_age_days": limit}
    if result is None:
        return Verdict(
            "drift",
            f"no restore test recorded ({cfg.result_file} missing)",
            {"recorded": False},
            expected,
            params,
        )
    age = (ctx.now - result.finished_at).total_seconds()
    observed = {
        "finished_at": result.finished_at.isoformat(),
        "ok": result.ok,
        "files_compared": result.files_compared,
        "age_days": round(age / 86400, 2),
    }
    if not result.ok:
        return Verdict(
            "drift", f"the last restore test ({age_text(age)} ago) failed", observed, expected, params
        )
    if result.files_compared == 0:
        return Verdict("drift", "the last restore test compared no files", observed, expected, params)
    if age > limit * 86400:
        return Verdict(
            "drift",
            f"the last restore test is {age_text(age)} old (limit {limit} d)",
            observed,
            expected,
            params,
        )
    return Verdict(
        "pass",
        f"restore test {age_text(age)} ago compared {result.files_compared} file(s), all matched",
        observed,
        expected,
        params,
    )


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
