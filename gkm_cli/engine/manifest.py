"""What a resumed run trusts: a record of every output file gkm finished, per output folder.

Each folder gkm writes into holds ``.gkm-outputs.jsonl``: one JSON line per file written (an image,
a blur map, a sidecar) with the file's size, modification time and SHA-256, and the SHA-256, size
and modification time of the input it was made from plus a key of the settings that change its
content (task, model, weights, format, bit depth, quality, map encoding, deblur strength when not
1). The line is appended (``O_APPEND``, one ``write``: lines from several processes do not
interleave on local file systems) after the temp file is complete and fsynced and *before* it is
renamed into place, so a record can only vouch for a file that was completely written; a crash
between the two leaves a record that no existing file matches.

A re-run skips an input only when every output of it is **done**: recorded for the same input
content and settings, and the file is still the one recorded (same size, and same modification
time or same SHA-256). An existing file gkm recorded but that is stale (other input content or
settings) is **ours** and is replaced. Any other existing file (a 0-byte file, somebody's photo,
a user's ``NAME.json``) is **foreign**: it is never replaced without ``--overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gkm_cli.fileio import file_sha256  # re-exported: the folder runs hash inputs through it

__all__ = ["MANIFEST_NAME", "InputId", "Manifest", "file_sha256", "settings_key"]

MANIFEST_NAME: Final = ".gkm-outputs.jsonl"
#: One JSON line of the manifest as read back (written by this module; checked field by field).
ManifestRecord = dict[str, Any]


def settings_key(settings: Mapping[str, object]) -> str:
    """A short stable key of the settings that change an output's content."""
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class InputId:
    """What an output was made from: the input file's size, mtime and (lazily) content hash."""

    path: Path
    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> InputId:
        st = path.stat()
        return cls(path, st.st_size, st.st_mtime_ns, file_sha256(path))


@dataclass
class Manifest:
    """Records of the output folders of one run (read once per folder; appended as it goes).

    ``settings`` is the :func:`settings_key` of this run.
    """

    settings: str
    _folders: dict[Path, dict[str, ManifestRecord]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # reader and writer threads

    # --- reading ------------------------------------------------------------------------------
    def _records(self, folder: Path) -> dict[str, ManifestRecord]:
        key = folder.resolve()
        with self._lock:
            if key in self._folders:
                return self._folders[key]
        found: dict[str, ManifestRecord] = {}
        try:
            with open(folder / MANIFEST_NAME, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a torn or damaged line vouches for nothing
                    if isinstance(rec, dict) and isinstance(rec.get("file"), str):
                        found[rec["file"]] = rec  # the last record of a file wins
        except OSError:
            pass
        with self._lock:
            return self._folders.setdefault(key, found)

    def record_for(self, path: Path) -> ManifestRecord | None:
        """The record of ``path`` if the file there is still the one recorded, else None."""
        rec = self._records(path.parent).get(path.name)
        if rec is None or not _unchanged(path, rec.get("size"), rec.get("mtime_ns"), rec.get("sha256")):
            return None
        return rec

    def is_ours(self, path: Path) -> bool:
        """``path`` is a file gkm recorded writing (whatever it was made from)."""
        return self.record_for(path) is not None

    def is_done(self, path: Path, source: Path) -> bool:
        """``path`` is gkm's output of ``source``'s current content with this run's settings."""
        rec = self.record_for(path)
        if rec is None or rec.get("settings") != self.settings:
            return False
        return _unchanged(source, rec.get("input_size"), rec.get("input_mtime_ns"), rec.get("input_sha256"))

    # --- writing ------------------------------------------------------------------------------
    def add(self, final: Path, written: Path, source: InputId | None) -> None:
        """Record that ``written`` (the finished temp file) becomes ``final``; call before the rename."""
        st = written.stat()
        rec = {
            "file": final.name,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": file_sha256(written),
            "settings": self.settings,
            "input": None if source is None else str(source.path),
            "input_size": None if source is None else source.size,
            "input_mtime_ns": None if source is None else source.mtime_ns,
            "input_sha256": None if source is None else source.sha256,
        }
        line = (json.dumps(rec, sort_keys=True) + "\n").encode()
        fd = os.open(final.parent / MANIFEST_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        records = self._records(final.parent)
        with self._lock:
            records[final.name] = rec


def _unchanged(path: Path, size: object, mtime_ns: object, sha256: object) -> bool:
    """``path`` still holds the recorded file: same size, and same modification time or, when it
    was copied or touched, the same SHA-256 (the content decides)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != size:
        return False
    if st.st_mtime_ns == mtime_ns:
        return True
    try:
        return file_sha256(path) == sha256
    except OSError:
        return False
