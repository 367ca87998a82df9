"""Typed errors. Raised deep in the code, turned into one-line messages and exit codes by the CLI."""

from __future__ import annotations

import re
from collections.abc import Callable

_SETTING_REF = re.compile("\x00(\\w+)\x00")


def setting_ref(setting: str) -> str:
    """``setting`` named inside a message (a :class:`SettingText`): the library shows the name,
    the CLI the flag. NUL delimits it: no file name or argument can contain one."""
    return f"\x00{setting}\x00"


class SettingText(str):
    """A message that names library settings; as a ``str`` it reads with the setting names
    (``tile_overlap 40 rounded up ...``), :meth:`worded` spells them another way (the CLI passes
    its flag names). Build it from text in which every setting is :func:`setting_ref`."""

    raw: str

    def __new__(cls, raw: str) -> SettingText:
        self = super().__new__(cls, _SETTING_REF.sub(r"\1", raw))
        self.raw = raw
        return self

    def worded(self, spell: Callable[[str], str]) -> str:
        """The message with every setting named ``spell(setting)``."""
        return _SETTING_REF.sub(lambda m: spell(m.group(1)), self.raw)


class GkmError(Exception):
    """Base class: the message is shown to the user as one line."""

    exit_code = 1

    @property
    def message(self) -> str:
        """The message: a :class:`SettingText` when it names settings (the CLI words them as flags)."""
        text = self.args[0] if len(self.args) == 1 else None
        return text if isinstance(text, SettingText) else str(self)


class UsageError(GkmError):
    """The command line asks for something impossible (bad flag combination, bad model name)."""

    exit_code = 2


class SettingError(UsageError):
    """A library setting (``tile``, ``device``, ``strength``...) has an impossible value.

    The message names the setting, not a command-line flag: ``str(e)`` is ``"tile must be at
    least 16 px"``. The CLI words it with the flag the user typed (``"--tile must be ..."``).
    ``detail`` may name other settings with :func:`setting_ref`; ``leading=False`` when the
    message does not start with the setting (``"x.png: refusing to write over the input ..."``).
    """

    def __init__(self, setting: str, detail: str, *, leading: bool = True) -> None:
        self.text = SettingText(f"{setting_ref(setting)} {detail}" if leading else detail)
        super().__init__(self.text)
        self.setting = setting
        self.detail = SettingText(detail)

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
