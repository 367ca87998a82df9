"""Typed errors. Raised deep in the code, turned into one-line messages and exit codes by the CLI."""

from __future__ import annotations


class GkmError(Exception):
    """Base class: the message is shown to the user as one line."""

    exit_code = 1


class UsageError(GkmError):
    """The command line asks for something impossible (bad flag combination, bad model name)."""

    exit_code = 2


class SettingError(UsageError):
    """A library setting (``tile``, ``device``, ``strength``...) has an impossible value.

    The message names the setting, not a command-line flag: ``str(e)`` is ``"tile must be at
    least 16 px"``. The CLI words it with the flag the user typed (``"--tile must be ..."``).
    """

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(f"{setting} {detail}")
        self.setting = setting
        self.detail = detail

    @property
    def flag(self) -> str:
        """The command-line spelling of the setting: ``tile_overlap`` -> ``--tile-overlap``."""
        return "--" + self.setting.replace("_", "-")


class ImageReadError(GkmError):
    """An input file is missing, unreadable, corrupt, truncated or of an unsupported kind."""


class ImageWriteError(GkmError):
    """An output could not be written (unwritable folder, disk full, would overwrite an input).

    ``errno`` is the operating system's error number when there was one: a folder run stops on
    errors that every later write would hit too (disk full, read-only file system, closed pipe).
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class ModelError(GkmError):
    """Unknown architecture, missing or incompatible weights."""

    exit_code = 2


class DataError(GkmError):
    """A dataset folder has no recognisable layout or no usable pairs."""

    exit_code = 2
