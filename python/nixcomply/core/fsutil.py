"""Durable file writes: a crash at any moment leaves either the old file or the new one.

The sequence is the classic one: write a temporary file in the same directory, fsync it,
rename it over the target (atomic on POSIX), then fsync the directory so the rename itself
survives a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from nixcomply.errors import HostIOError


def fsync_dir(directory: Path) -> None:
    """Make a rename or creation inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (and durably unless ``durable=False``).

    ``mode`` is applied to the temporary file before it becomes visible, so a private key
    written with ``mode=0o600`` is never readable by others, not even for a moment.
    """
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _naming(e, path) from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise _naming(e, path) from e
        raise
    if durable:
        fsync_dir(directory)


def _naming(e: OSError, path: Path) -> OSError:
    """``e`` about ``path``: the temporary file's name means nothing to whoever asked for
    ``path`` (the subclass, FileNotFoundError and the rest, follows from the errno)."""
    return OSError(e.errno, e.strerror, os.fspath(path)) if e.errno is not None else e


def atomic_write_text(path: Path, text: str, *, mode: int = 0o644, durable: bool = True) -> None:
    atomic_write(path, text.encode("utf-8"), mode=mode, durable=durable)


def ensure_dir(path: Path, *, mode: int = 0o755) -> Path:
    """Create ``path`` and its parents; fsync each parent that gained an entry."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=mode)
        fsync_dir(directory.parent)
    return path


def write_output(path: Path, data: bytes) -> bool:
    """Write a command's output file (``render -o``); return whether its content changed.

    A regular file (or a new one in an existing directory) is replaced atomically, after
    comparing at most ``len(data) + 1`` bytes of it, so an unchanged file is left alone. A
    character device or a FIFO (``/dev/stdout``, ``/dev/null``, a pipe) is written through
    as a stream, never replaced and never read. A symlink, a directory, a block device or a
    socket is refused: replacing or following one as root would destroy what it names or
    write where nobody meant to. Failures are a :class:`~nixcomply.errors.HostIOError`
    (exit 74) naming the path.
    """
    st = check_output(path)
    if st is None:
        try:
            atomic_write(path, data)
        except OSError as e:
            raise HostIOError.from_os_error(e, path=path) from None
        return True
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        _stream(path, data)
        return True
    if st.st_size == len(data) and _same(path, data):
        return False
    try:
        atomic_write(path, data)
    except OSError as e:
        raise HostIOError.from_os_error(e, path=path) from None
    return True


def check_output(path: Path) -> os.stat_result | None:
    """Whether :func:`write_output` may write ``path``, asked before the work that makes
    the output (so a directory given as ``-o`` is refused at once, never after an hour of
    verification, and no temporary file is ever made beside the directory): its ``lstat``,
    None for a new file in an existing directory, or a :class:`HostIOError` naming it."""
    try:
        st: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise HostIOError.from_os_error(e) from None
    if st is None:
        parent = path.parent
        if not parent.is_dir():
            raise HostIOError(
                f"{path}: the directory {parent} does not exist", hint="create it first, or give another path"
            )
    elif stat.S_ISLNK(st.st_mode):
        raise HostIOError(
            f"{path}: is a symbolic link; refusing to replace or follow it", hint="give the path it points to"
        )
    elif stat.S_ISDIR(st.st_mode):
        raise HostIOError(f"{path}: is a directory", hint="give a file name, not a directory")
    elif not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        raise HostIOError(f"{path}: is not a regular file (a block device or a socket); refusing to write it")
    return st


def _same(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        chunks: list[bytes] = []
        size = 0
        while size <= len(data):
            chunk = os.read(fd, len(data) + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks) == data
    finally:
        os.close(fd)


def _stream(path: Path, data: bytes) -> None:
    """Write through a character device or FIFO (no reader on a FIFO: refused, not waited on)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise HostIOError(f"{path}: a FIFO nobody reads; not waiting for a reader") from None
        raise HostIOError.from_os_error(e, path=path) from None
    try:
        os.set_blocking(fd, True)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as e:
        raise HostIOError.from_os_error(e, path=path) from None
    finally:
        os.close(fd)


class NotRegularFile(OSError):
    """:func:`read_regular` found a symbolic link, a FIFO, a socket or a device where a
    regular file belongs (``strerror`` says which): never followed, never read."""


_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
_CHUNK = 1 << 16


def read_regular(path: str | Path, *, dir_fd: int | None = None) -> bytes:
    """The whole of a regular file that someone else may have written (a store or packet
    being verified, the host's own evidence read for upload). A symbolic link is not
    followed and a FIFO, socket or device is not read (:class:`NotRegularFile`): a FIFO
    would block the reader for ever and ``/dev/zero`` would never end. The checks are on
    the open descriptor, so the file checked is the file read."""
    try:
        fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegularFile(
                errno.ELOOP, "is a symbolic link (never followed)", os.fspath(path)
            ) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a directory" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
            raise NotRegularFile(errno.EINVAL, f"is {what}, not a regular file (never read)", os.fspath(path))
        chunk = os.read(fd, _CHUNK)
        if len(chunk) < _CHUNK:  # a regular file reads short only at its end
            return chunk
        chunks = [chunk]
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
