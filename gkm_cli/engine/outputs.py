"""Where a folder run's outputs go: files (atomic, with their folder), or a stream (stdout).

Every failure is one :class:`ImageWriteError` line with the operating system's ``errno``, so a
run stops on errors every later write would hit too (disk full, read-only, closed pipe; see
:data:`gkm_cli.fileio.STOPPING_ERRNOS`) and goes on after the others.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from gkm_cli.engine.folders import stale_temp_files
from gkm_cli.errors import ImageWriteError
from gkm_cli.fileio import atomic_write_bytes, describe_os_error

__all__ = ["check_writable", "prepare_folder", "write_file", "write_stream"]


def write_file(path: Path, data: bytes, before_replace: Callable[[Path], None] | None = None) -> None:
    """Atomic write (temp file + fsync + rename) with OS errors as one-line ImageWriteErrors."""
    try:
        atomic_write_bytes(path, data, before_replace=before_replace)
    except OSError as e:
        raise ImageWriteError(f"{path}: cannot write ({describe_os_error(e)})", errno=e.errno) from None


def _silence(stream: BinaryIO) -> None:
    """Point a failed stdout at /dev/null, so the interpreter's final flush of what is still
    buffered cannot fail again (a second message, or a traceback at exit)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _unread_after_close(stream: BinaryIO, wait_s: float = 0.05) -> int:
    """Bytes still in the pipe behind ``stream`` although its reader has gone (0: none, or not a
    pipe). A reader that quits early (``| head -c 10``) loses them, and nothing else would tell."""
    import fcntl
    import select
    import stat
    import termios

    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        poller = select.poll()
        poller.register(fd, 0)  # only POLLERR / POLLHUP: the reading end was closed
        if not poller.poll(int(wait_s * 1000)):
            return 0
        buf = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, "little")
    except (OSError, ValueError, AttributeError):
        return 0


def write_stream(stream: BinaryIO, data: bytes) -> None:
    """Write one output (or JSON line) to stdout; a full disk or a closed pipe is one
    ImageWriteError (which stops the run), never a traceback or a false "written"."""
    try:
        stream.write(data)
        stream.flush()
    except OSError as e:
        _silence(stream)
        raise ImageWriteError(f"<stdout>: cannot write ({describe_os_error(e)})", errno=e.errno) from None
    lost = _unread_after_close(stream)
    if lost:
        _silence(stream)
        raise ImageWriteError(f"<stdout>: the reader closed the pipe with {lost} bytes unread", errno=errno.EPIPE)


def _folder_error(folder: Path, e: OSError) -> ImageWriteError:
    return ImageWriteError(f"{folder}: cannot create output folder ({describe_os_error(e)})", errno=e.errno)


def prepare_folder(path: Path) -> None:
    """Create an output's folder and remove temp files left by an interrupted earlier run."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _folder_error(path.parent, e) from None
    for stale in stale_temp_files(path):
        stale.unlink(missing_ok=True)


def check_writable(folder: Path) -> None:
    """Fail early, with one line, when the output folder cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _folder_error(folder, e) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            read_only = False
        why = "read-only file system" if read_only else "permission denied"
        raise ImageWriteError(
            f"{folder}: output folder is not writable ({why})", errno=errno.EROFS if read_only else errno.EACCES
        )
