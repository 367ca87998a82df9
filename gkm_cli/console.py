"""Text from outside (file names, messages that quote them) shown safely on a Rich console.

A file may be called ``[bold red]z.png``, ``:thumbs_up:.png`` or contain ESC sequences and line
breaks. Shown through :func:`message`, such a name appears exactly as its characters are:
Rich markup and emoji codes are not interpreted (the text is a ``rich.text.Text``, never parsed),
and control characters are made visible (``\\x1b``, ``\\n``), so nothing reaches the terminal as
a command and every message stays on one line.
"""

from __future__ import annotations

from rich.text import Text

from gkm_cli.errors import SettingText

__all__ = ["flag_of", "message", "visible", "worded_for_cli"]

#: Settings whose flag is not ``--`` + the name with dashes (``-o x.png: names one file ...``).
_FLAG_EXCEPTIONS = {"output": "-o", "init_from": "--init"}

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str) -> str:
    """``text`` with every non-printable character replaced by a Python-style escape."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def message(label: str, style: str, text: str, prefix: str = "") -> Text:
    """One console line: ``prefix`` + styled ``label`` + the outside ``text`` shown literally."""
    return Text.assemble(visible(prefix), (label, style), " ", visible(text))


def flag_of(setting: str) -> str:
    """The command-line spelling of a library setting: ``tile_overlap`` -> ``--tile-overlap``."""
    return _FLAG_EXCEPTIONS.get(setting) or "--" + setting.replace("_", "-")


def worded_for_cli(text: str) -> str:
    """A library message as the CLI says it: settings it names (a SettingText) become flags."""
    return text.worded(flag_of) if isinstance(text, SettingText) else text
