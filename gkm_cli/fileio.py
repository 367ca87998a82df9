"""The one home of file writing: atomic writes and the wording of operating-system errors.

Every output gkm writes (images, blur maps and their sidecars, reports, checkpoints, cards)
goes through :func:`atomic_write_bytes`: a temp file in the target folder, ``fsync``, the
permissions a plain ``open()`` would give (0o666 minus the umask, or the replaced file's
mode), ``os.replace``, then an ``fsync`` of the folder. A reader therefore sees the old file or
the complete new one, never a partial one; a failed write leaves no temp file behind.

:func:`describe_os_error` turns an ``OSError`` into the few words shown to the user, so every
command says "disk full", "read-only file system" or "permission denied" the same way.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = [
    "STOPPING_ERRNOS",
    "atomic_write_bytes",
    "describe_os_error",
    "file_sha256",
    "new_file_mode",
    "stops_the_run",
]

_REASONS: Final[dict[int, str]] = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EPIPE: "broken pipe: the reading side was closed before everything was written",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "is a folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
    errno.EFBIG: "file too large for this file system",
}

#: Write errors after which later outputs cannot succeed either: a run stops instead of
#: computing images it cannot store (every later input would fail the same way).
STOPPING_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EPIPE})


def describe_os_error(exc: OSError) -> str:
    """A short, user-facing reason for an ``OSError`` (no path, no errno number)."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return exc.strerror or type(exc).__name__


def stops_the_run(code: int | None) -> bool:
    """Whether a write error with this errno means no later output can be written either."""
    return code in STOPPING_ERRNOS


def new_file_mode(path: Path) -> int:
    """Mode for an output: the replaced file's, else 0o666 minus the umask (mkstemp uses 0o600)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        pass
    umask = 0o022
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
    except (OSError, ValueError):
        pass  # not Linux: the usual default
    return 0o666 & ~umask


def atomic_write_bytes(
    path: Path | str,
    data: bytes,
    *,
    make_parents: bool = True,
    before_replace: Callable[[Path], None] | None = None,
) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename + folder fsync).

    Raises ``OSError`` (the caller words it with :func:`describe_os_error`). ``before_replace``
    is called with the finished, fsynced temp file just before the rename (e.g. to record it
    in a manifest: a crash in between leaves no output, so the record cannot vouch for a
    missing or stale file).
    """
    path = Path(path)
    folder = path.parent
    if make_parents:
        folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), new_file_mode(path))
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename (POSIX); best effort, a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB chunks (weights, manifests, provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
