"""The runbook actions: one function per :class:`~nixcomply.heal.runbook.Action`.

Each takes the arguments :mod:`nixcomply.heal.guard` checked and typed (units allowlisted,
paths resolved inside the allowed roots, an argv rebuilt by the program's audited builder
with its absolute path) and an
:class:`ActionEnv`, and returns an :class:`ActionResult`: whether the step did what it
promised, one line saying so, data for evidence and the output it captured. Expected
failures (a job that failed, a unit that did not come up, a checksum that differs) are
results with ``ok=False``; errors that stop an action (systemd unreachable, a command not
found, a step timeout) are raised and the executor records them as a failed step.

Nothing here runs a shell, follows a symlink while removing or hashing files, or imports
the reconciler: ``sync_generation`` calls back into whoever runs the runbook. Every program
runs with the fixed environment of :data:`nixcomply.heal.programs.ENVIRONMENT`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, assert_never

from pydantic import JsonValue

from nixcomply.core import process
from nixcomply.errors import CommandError, NixcomplyError
from nixcomply.heal.config import HealConfig
from nixcomply.heal.programs import ENVIRONMENT
from nixcomply.heal.runbook import Action
from nixcomply.heal.sync import SyncGeneration
from nixcomply.host.systemd import Systemd, unit_record

logger = logging.getLogger(__name__)

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_LISTED: Final = 50  # names of differing files kept in evidence
MAX_DEPTH: Final = 128  # directory levels clean_directory and verify_checksums descend
_RUNNING: Final = frozenset({"active", "activating", "deactivating", "reloading", "refreshing"})


class StepTimeoutError(NixcomplyError):
    """Raised by an action that did not finish within its step's ``timeout``."""


@dataclass(frozen=True)
class ActionResult:
    """``output`` is everything the step printed (the executor keeps a bounded part);
    ``data`` goes into evidence as it is, so actions bound what they put there."""

    ok: bool
    detail: str
    data: dict[str, JsonValue] = field(default_factory=dict)
    output: str = ""
    command: tuple[str, ...] = ()
    exit_code: int | None = None


@dataclass(frozen=True)
class ActionEnv:
    """What an action may use. ``systemd()`` returns the run's open connection (opened on
    first use); ``timeout`` is this step's, in seconds."""

    config: HealConfig
    systemd: Callable[[], Systemd]
    timeout: float
    sync_generation: SyncGeneration | None = None
    user_mode: bool = False
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def deadline(self) -> float:
        return time.monotonic() + self.timeout


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` bytes of UTF-8, saying how much was cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + f"\n[... {len(data) - limit} more bytes not kept]"


# -- commands --------------------------------------------------------------------------------


def run_command(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    argv: tuple[str, ...] = args["argv"]
    result = process.run(argv, check=False, timeout=env.timeout, env=ENVIRONMENT)
    output = result.stdout + (("\n" if result.stdout and result.stderr else "") + result.stderr)
    data: dict[str, JsonValue] = {
        "argv": list(argv),
        "exit_code": result.returncode,
        "duration_s": round(result.duration, 3),
        "output": bounded(output, env.config.max_output_bytes),
    }
    what = f"{Path(argv[0]).name} exited with status {result.returncode}"
    return ActionResult(result.ok, what, data, output, argv, result.returncode)


def send_alert(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    """One line to the journal (``systemd-cat``), or syslog through ``logger`` when the
    journal cannot be reached; the message goes on stdin, never into an argv."""
    cfg = env.config.alert
    message: str = args["message"]
    priority: str = args.get("priority") or cfg.priority
    logger_argv = [cfg.logger, "--tag", cfg.tag, "--priority", f"user.{priority}", "--socket-errors=on"]
    attempts: list[list[str]]
    if cfg.socket is not None:
        attempts = [[*logger_argv, "--socket", str(cfg.socket)]]
    else:
        attempts = [[cfg.systemd_cat, "-t", cfg.tag, "-p", priority], logger_argv]
    errors: list[str] = []
    data: dict[str, JsonValue] = {"tag": cfg.tag, "priority": priority, "message": message}
    for argv in attempts:
        try:
            result = process.run(
                argv, check=False, timeout=min(env.timeout, 30), input=message + "\n", env=ENVIRONMENT
            )
        except CommandError as e:
            errors.append(str(e))
            continue
        if result.ok:
            data["via"] = Path(argv[0]).name
            return ActionResult(True, f"alert sent via {data['via']} ({priority})", data, "", tuple(argv), 0)
        errors.append(f"{Path(argv[0]).name} exited with status {result.returncode}: {result.stderr.strip()}")
    data["errors"] = [*errors]
    return ActionResult(
        False, "the alert could not be sent: " + "; ".join(errors), data, "", tuple(attempts[-1])
    )


# -- systemd ---------------------------------------------------------------------------------


def restart_service(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    return _job(args["unit"], "restart", env)


def start_unit(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    return _job(args["unit"], "start", env)


def _job(unit: str, verb: str, env: ActionEnv) -> ActionResult:
    """A job must end ``done`` and leave the unit not failed. "done" alone proves little: a
    ``Type=simple`` service is "started" once forked, even if it dies a moment later."""
    sd = env.systemd()
    job_result = (
        sd.restart(unit, timeout=env.timeout) if verb == "restart" else sd.start(unit, timeout=env.timeout)
    )
    state = sd.unit_state(unit)
    data: dict[str, JsonValue] = {
        "unit": unit,
        "job": verb,
        "job_result": job_result,
        "state": unit_record(state),
    }
    if job_result != "done":
        return ActionResult(False, f"{verb} job of {unit} ended {job_result!r} ({state.describe()})", data)
    if state.is_failed:
        return ActionResult(False, f"{unit} failed right after the {verb} job ({state.describe()})", data)
    return ActionResult(True, f"{verb} job of {unit} done; it is {state.describe()}", data)


def wait_unit(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    """Wait until ``unit`` reaches ``state`` and stays there ``stable_seconds``. Waiting for
    ``active`` stops at once when the unit is ``failed``: it will not come up by itself."""
    unit: str = args["unit"]
    wanted: str = args.get("state") or "active"
    stable = args.get("stable_seconds")
    stable_for = min(float(env.config.unit_settle_seconds if stable is None else stable), env.timeout)
    sd = env.systemd()
    deadline = env.deadline()
    reached: float | None = None
    while True:
        state = sd.unit_state(unit)
        now = time.monotonic()
        data: dict[str, JsonValue] = {"unit": unit, "wanted": wanted, "state": unit_record(state)}
        if state.active_state == wanted:
            reached = now if reached is None else reached
            if now - reached >= stable_for:
                return ActionResult(True, f"{unit} is {state.describe()} (held {stable_for:g} s)", data)
        else:
            reached = None
            if wanted != "failed" and state.is_failed:
                return ActionResult(False, f"{unit} is {state.describe()}, not {wanted}", data)
        if now >= deadline:
            return ActionResult(
                False,
                f"{unit} did not stay {wanted} within {env.timeout:g} s (it is {state.describe()})",
                data,
            )
        time.sleep(min(env.config.poll_interval_seconds, max(deadline - now, 0.01)))


def trigger_backup(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    """Start the backup unit, wait for its job and for the backup to finish (a ``oneshot``
    finishes with its job; another type when it stops), then require ``Result=success``."""
    unit: str = args["unit"]
    sd = env.systemd()
    deadline = env.deadline()
    job_result = sd.start(unit, timeout=env.timeout)
    state = sd.unit_state(unit)
    while job_result == "done" and state.active_state in _RUNNING and state.sub_state != "exited":
        if time.monotonic() >= deadline:
            raise StepTimeoutError(
                f"backup unit {unit} still runs after {env.timeout:g} s ({state.describe()})"
            )
        time.sleep(env.config.poll_interval_seconds)
        state = sd.unit_state(unit)
    data: dict[str, JsonValue] = {"unit": unit, "job_result": job_result, "state": unit_record(state)}
    if job_result != "done":
        return ActionResult(False, f"backup job of {unit} ended {job_result!r} ({state.describe()})", data)
    if state.is_failed or state.result != "success":
        return ActionResult(
            False, f"backup {unit} did not succeed: Result={state.result} ({state.describe()})", data
        )
    return ActionResult(True, f"backup {unit} finished with Result=success", data)


def capture_state(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    """Record a unit's state (and optionally its last journal lines) and/or the loaded
    firewall ruleset with its sha256. The unit's state is the point: when it cannot be read
    the step fails; a journal or ruleset that cannot be read is noted in the data."""
    limit = env.config.max_output_bytes
    data: dict[str, JsonValue] = {}
    details: list[str] = []
    outputs: list[str] = []
    ok = True
    unit: str | None = args.get("unit")
    if unit is not None:
        state = env.systemd().unit_state(unit)
        data["unit"] = unit_record(state)
        details.append(f"{unit} is {state.describe()}")
        lines = int(args.get("journal_lines") or 0)
        if lines:
            flag = "--user-unit" if env.user_mode else "--unit"
            argv = [env.config.binaries["journalctl"], f"{flag}={unit}", f"--lines={lines}", "--no-pager"]
            text, error = _capture(argv, env)
            data["journal"] = bounded(text, limit) if error is None else None
            if error is not None:
                data["journal_error"] = error
            else:
                outputs.append(text)
    if args.get("ruleset"):
        text, error = _capture([env.config.binaries["nft"], "list", "ruleset"], env)
        if error is None:
            data["ruleset_sha256"] = hashlib.sha256(text.encode()).hexdigest()
            data["ruleset"] = bounded(text, limit)
            outputs.append(text)
            details.append(f"ruleset sha256 {data['ruleset_sha256']}")
        else:
            data["ruleset_error"] = error
            details.append(f"ruleset not readable: {error}")
            ok = unit is not None
    return ActionResult(ok, "; ".join(details), data, "\n".join(outputs))


def _capture(argv: list[str], env: ActionEnv) -> tuple[str, str | None]:
    try:
        result = process.run(argv, check=True, timeout=env.timeout, env=ENVIRONMENT)
    except CommandError as e:
        return "", str(e)
    return result.stdout, None


# -- files -----------------------------------------------------------------------------------


def check_disk_space(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    path: Path = args["path"]
    vfs = os.statvfs(path)
    total = vfs.f_blocks * vfs.f_frsize
    available = vfs.f_bavail * vfs.f_frsize
    used = total - vfs.f_bfree * vfs.f_frsize
    # as df computes it: used / (used + available to unprivileged users)
    used_percent = round(100 * used / (used + available), 2) if used + available else 0.0
    free_percent = round(100 - used_percent, 2)
    data: dict[str, JsonValue] = {
        "path": str(path),
        "total_bytes": total,
        "available_bytes": available,
        "used_percent": used_percent,
        "free_percent": free_percent,
        "free_inodes": vfs.f_favail,
    }
    what = f"{path}: {used_percent:g}% used, {available} bytes available"
    min_percent = int(args.get("min_free_percent") or 0)
    min_bytes = int(args.get("min_free_bytes") or 0)
    if free_percent < min_percent:
        return ActionResult(False, f"{what}: less than {min_percent}% free", data)
    if available < min_bytes:
        return ActionResult(False, f"{what}: less than {min_bytes} bytes free", data)
    return ActionResult(True, what, data)


def _open_dir(path: Path) -> int:
    """Open the directory the guard resolved, refusing a symlink put there since then."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        if path.is_symlink():
            raise NixcomplyError(
                f"{path} became a symlink since it was checked; refusing to follow it"
            ) from None
        raise
    actual = os.readlink(f"/proc/self/fd/{fd}")
    if actual != str(path):
        os.close(fd)
        raise NixcomplyError(f"{path} moved since it was checked (it is now {actual}); refusing")
    return fd


@dataclass
class _Cleaned:
    cutoff: float | None
    dev: int
    deadline: float
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    kept: int = 0
    errors: list[str] = field(default_factory=list)


def clean_directory(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    """Remove what is inside ``path`` (never ``path`` itself): everything, or with
    ``older_than_days`` only files (and symlinks) last modified before then. Symlinks are
    removed, never followed; other filesystems mounted inside are left alone."""
    path: Path = args["path"]
    days = args.get("older_than_days")
    cutoff = None if days is None else env.now().timestamp() - int(days) * 86400
    if not path.exists():
        data: dict[str, JsonValue] = {
            "path": str(path),
            "removed_files": 0,
            "removed_dirs": 0,
            "freed_bytes": 0,
        }
        return ActionResult(True, f"{path} does not exist: nothing to clean", data)
    fd = _open_dir(path)
    stats = _Cleaned(cutoff=cutoff, dev=os.fstat(fd).st_dev, deadline=env.deadline())
    try:
        _clean(fd, str(path), stats)
    finally:
        os.close(fd)
    data = {
        "path": str(path),
        "older_than_days": days,
        "removed_files": stats.files,
        "removed_dirs": stats.dirs,
        "freed_bytes": stats.bytes,
        "kept": stats.kept,
        "errors": [*stats.errors[:_LISTED]],
    }
    what = f"removed {stats.files} files and {stats.dirs} directories ({stats.bytes} bytes) under {path}"
    if stats.errors:
        return ActionResult(False, f"{what}; {len(stats.errors)} could not be removed", data)
    return ActionResult(True, what, data)


def _clean(top: int, where: str, stats: _Cleaned) -> None:
    cutoff = stats.cutoff

    def visit(dir_fd: int, name: str, rel: str) -> bool:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if st.st_dev == stats.dev:
                    return True
                stats.kept += 1
                stats.errors.append(f"{where}/{rel}: another filesystem is mounted here; left alone")
            elif cutoff is None or st.st_mtime < cutoff:
                os.unlink(name, dir_fd=dir_fd)
                stats.files += 1
                stats.bytes += st.st_size if stat.S_ISREG(st.st_mode) else 0
            else:
                stats.kept += 1
        except OSError as e:
            stats.errors.append(f"{where}/{rel}: {e.strerror}")
        return False

    def leave(dir_fd: int, name: str, rel: str) -> None:
        if cutoff is None:
            try:
                os.rmdir(name, dir_fd=dir_fd)
                stats.dirs += 1
            except OSError as e:
                stats.errors.append(f"{where}/{rel}: {e.strerror}")

    def refused(rel: str, why: str) -> None:
        stats.kept += 1
        stats.errors.append(f"{where}/{rel}: {why}; left alone")

    _walk(top, f"cleaning {where}", stats.deadline, visit, leave, refused, ordered=False)


def _walk(  # noqa: PLR0917 - the parts of one traversal, named where it is used
    top: int,
    what: str,
    deadline: float,
    visit: Callable[[int, str, str], bool],
    leave: Callable[[int, str, str], None],
    refused: Callable[[str, str], None],
    *,
    ordered: bool,
) -> None:
    """Depth first through the tree under the open directory ``top``, without recursion and
    without following a symlink: ``visit(dir_fd, name, rel)`` sees every entry and says
    whether to descend into it (a directory); ``leave(dir_fd, name, rel)`` follows a
    directory's last entry. Each level holds one file descriptor, so a tree deeper than
    :data:`MAX_DEPTH` is not descended (``refused``), and the step's deadline is checked at
    every entry: whoever may write inside an allowed root can make a tree thousands of
    levels deep or millions of entries wide, which must cost a bounded refusal, never a
    RecursionError, a descriptor per level or a step that never ends."""
    stack: list[tuple[int, str, Iterator[str], Callable[[], None]]] = []

    def enter(fd: int, rel: str) -> None:
        try:
            if ordered:
                names: Iterator[str] = iter(sorted(os.listdir(fd)))
                stack.append((fd, rel, names, lambda: None))
            else:
                scan = os.scandir(fd)
                stack.append((fd, rel, (e.name for e in scan), scan.close))
        except BaseException:
            if fd != top:
                os.close(fd)
            raise

    enter(top, "")
    try:
        while stack:
            fd, rel, names, close = stack[-1]
            name = next(names, None)
            if name is None:
                close()
                stack.pop()
                if stack:
                    os.close(fd)
                    leave(stack[-1][0], rel.rsplit("/", 1)[-1], rel)
                continue
            if time.monotonic() > deadline:
                raise StepTimeoutError(f"{what} took longer than the step's timeout")
            path = f"{rel}/{name}" if rel else name
            if not visit(fd, name, path):
                continue
            if len(stack) > MAX_DEPTH:
                refused(path, f"nested more than {MAX_DEPTH} directories deep")
                continue
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                refused(path, f"cannot be opened without following a symlink ({e.strerror})")
                continue
            enter(sub, path)
    finally:
        for fd, _, _, close in reversed(stack):
            close()
            if fd != top:
                os.close(fd)


def verify_checksums(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    """sha256 of every regular file under ``restored`` and ``reference`` (symlinks compared
    by their target text, never followed); any missing, extra or differing entry, or no file
    at all, fails. With ``result_file``, the outcome is written there as JSON for the
    restore_test check: ``{"finished_at", "ok", "files_compared"}``."""
    deadline = env.deadline()
    inventories: list[dict[str, str]] = []
    unreadable: list[str] = []
    hashed = 0
    for path in (args["restored"], args["reference"]):
        found: dict[str, str] = {}
        problems: list[str] = []
        fd = _open_dir(path)
        try:
            hashed += _inventory(fd, found, problems, deadline)
        finally:
            os.close(fd)
        inventories.append(found)
        unreadable.extend(f"{path}/{p}" for p in problems)
    restored, reference = inventories
    missing = sorted(set(reference) - set(restored))
    extra = sorted(set(restored) - set(reference))
    differing = sorted(k for k in set(reference) & set(restored) if reference[k] != restored[k])
    compared = sum(1 for k, v in reference.items() if v.startswith("sha256:") and k in restored)
    ok = not (missing or extra or differing or unreadable) and compared > 0
    data: dict[str, JsonValue] = {
        "restored": str(args["restored"]),
        "reference": str(args["reference"]),
        "ok": ok,
        "files_compared": compared,
        "bytes_hashed": hashed,
        "missing": [*missing[:_LISTED]],
        "extra": [*extra[:_LISTED]],
        "differing": [*differing[:_LISTED]],
        "unreadable": [*unreadable[:_LISTED]],
        "counts": {
            "missing": len(missing),
            "extra": len(extra),
            "differing": len(differing),
            "unreadable": len(unreadable),
        },
    }
    result_file: Path | None = args.get("result_file")
    if result_file is not None:
        record = {"finished_at": env.now().isoformat(), "ok": ok, "files_compared": compared}
        _write_unfollowed(result_file, (json.dumps(record) + "\n").encode())
        data["result_file"] = str(result_file)
    if ok:
        return ActionResult(True, f"{compared} files match", data)
    if unreadable:
        return ActionResult(False, f"{len(unreadable)} entries could not be compared: {unreadable[0]}", data)
    if compared == 0 and not (missing or extra or differing):
        return ActionResult(False, "no file was compared (the restore produced nothing)", data)
    return ActionResult(
        False,
        f"{len(missing)} missing, {len(extra)} extra, {len(differing)} differing of {compared} compared",
        data,
    )


def _write_unfollowed(path: Path, data: bytes) -> None:
    """Write ``path`` (the guard resolved it: no component is a symlink) atomically, walking
    down from ``/`` one directory at a time without following a symlink, creating what is
    missing: a directory swapped for a symlink since the check is refused, never followed
    out of the allowed root."""
    fd = os.open("/", _DIR_FLAGS)
    try:
        for part in path.parent.parts[1:]:
            try:
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                sub = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NixcomplyError(
                        f"{path}: {part} became a symlink (or a file) since it was checked; refusing to follow it"
                    ) from None
                raise
            os.close(fd)
            fd = sub
        temp = f".{path.name}.{os.getpid()}.tmp"
        out = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd
        )
        try:
            with os.fdopen(out, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path.name, src_dir_fd=fd, dst_dir_fd=fd)  # replaces a symlink, never follows it
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=fd)
            raise
        os.fsync(fd)
    finally:
        os.close(fd)


def _inventory(top: int, found: dict[str, str], unreadable: list[str], deadline: float) -> int:
    """Fill ``found`` (relative path -> what it is) and ``unreadable`` (what could not be
    compared: a verification with any such entry fails); return the bytes hashed."""
    hashed = 0

    def visit(dir_fd: int, name: str, rel: str) -> bool:
        nonlocal hashed
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            return True
        if stat.S_ISREG(st.st_mode):
            digest, size = _digest(dir_fd, name, rel, deadline)
            hashed += size
            if digest is None:
                unreadable.append(f"{rel}: no longer a regular file when it was opened")
            else:
                found[rel] = "sha256:" + digest
        elif stat.S_ISLNK(st.st_mode):
            found[rel] = "symlink:" + os.readlink(name, dir_fd=dir_fd)
        else:
            found[rel] = "other:" + stat.filemode(st.st_mode)[0]
        return False

    def refused(rel: str, why: str) -> None:
        unreadable.append(f"{rel}: {why}")

    _walk(top, "checksumming", deadline, visit, lambda *_: None, refused, ordered=True)
    return hashed


def _digest(dir_fd: int, name: str, rel: str, deadline: float) -> tuple[str | None, int]:
    """sha256 of a regular file and the bytes read; None when it is no longer a regular file
    once opened (swapped for a FIFO or a device since it was listed). The deadline holds
    within a file too (a sparse file of a terabyte reads for hours)."""
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    with os.fdopen(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, 0
        digest = hashlib.sha256()
        size = 0
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
            if time.monotonic() > deadline:
                raise StepTimeoutError(f"checksumming {rel} took longer than the step's timeout")
    return digest.hexdigest(), size


# -- the reconciler --------------------------------------------------------------------------


def sync_generation(args: Mapping[str, Any], env: ActionEnv) -> ActionResult:
    if env.sync_generation is None:
        return ActionResult(False, "no reconciler was given to re-apply the approved generation")
    result = env.sync_generation(env.timeout)
    return ActionResult(result.ok, result.detail, dict(result.data))


# -- registry and dry-run descriptions -------------------------------------------------------

ActionFn = Callable[[Mapping[str, Any], ActionEnv], ActionResult]

ACTIONS: Final[Mapping[Action, ActionFn]] = {
    Action.RUN_COMMAND: run_command,
    Action.RESTART_SERVICE: restart_service,
    Action.START_UNIT: start_unit,
    Action.WAIT_UNIT: wait_unit,
    Action.CAPTURE_STATE: capture_state,
    Action.CHECK_DISK_SPACE: check_disk_space,
    Action.TRIGGER_BACKUP: trigger_backup,
    Action.SYNC_GENERATION: sync_generation,
    Action.SEND_ALERT: send_alert,
    Action.VERIFY_CHECKSUMS: verify_checksums,
    Action.CLEAN_DIRECTORY: clean_directory,
}


def describe(action: Action, args: Mapping[str, Any], config: HealConfig, timeout: float) -> str:
    """What the action would do with these arguments, for a dry run."""
    within = f"within {timeout:g} s"
    match action:
        case Action.RUN_COMMAND:
            import shlex

            return f"run {shlex.join(args['argv'])} (no shell) {within}; fail unless it exits 0"
        case Action.RESTART_SERVICE | Action.START_UNIT:
            verb = "restart" if action == Action.RESTART_SERVICE else "start"
            return f"{verb} {args['unit']} and wait {timeout:g} s for the job; fail unless it is done and the unit not failed"
        case Action.WAIT_UNIT:
            stable = args.get("stable_seconds")
            stable = config.unit_settle_seconds if stable is None else stable
            return f"wait until {args['unit']} is {args.get('state') or 'active'} for {stable:g} s, {within}"
        case Action.CAPTURE_STATE:
            parts = []
            if args.get("unit"):
                parts.append(f"the state of {args['unit']}")
                if args.get("journal_lines"):
                    parts.append(f"its last {args['journal_lines']} journal lines")
            if args.get("ruleset"):
                parts.append(f"`{config.binaries['nft']} list ruleset` and its sha256")
            return "record " + ", ".join(parts)
        case Action.CHECK_DISK_SPACE:
            return (
                f"measure the filesystem of {args['path']}; fail below {args.get('min_free_percent') or 0}% "
                f"or {args.get('min_free_bytes') or 0} bytes free"
            )
        case Action.TRIGGER_BACKUP:
            return (
                f"start {args['unit']}, wait up to {timeout:g} s for it to finish; fail unless Result=success"
            )
        case Action.SYNC_GENERATION:
            return f"re-apply the approved generation through the reconciler {within}"
        case Action.SEND_ALERT:
            where = f"syslog socket {config.alert.socket}" if config.alert.socket else "the journal"
            priority = args.get("priority") or config.alert.priority
            return f"send to {where} (tag {config.alert.tag}, priority {priority}): {args['message']}"
        case Action.VERIFY_CHECKSUMS:
            out = f"; write the result to {args['result_file']}" if args.get("result_file") else ""
            return f"compare sha256 of every file under {args['restored']} with {args['reference']}{out}"
        case Action.CLEAN_DIRECTORY:
            days = args.get("older_than_days")
            which = "everything" if days is None else f"files older than {days} days"
            return f"remove {which} under {args['path']} (not the directory itself; symlinks not followed)"
        case unreachable:
            assert_never(unreachable)
