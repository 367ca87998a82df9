"""The optional decoders of the ``gkm-cli[formats]`` extra, imported when a file needs one.

PNG, TIFF and JPEG need nothing beyond the base install; the other formats each need one
package. A missing one is a one-line error naming the file, the package and the install
command, so a folder run reports that file and goes on with the rest.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Final

from gkm_cli.errors import ImageReadError, ImageWriteError

#: Importable module -> the PyPI package that provides it.
PACKAGES: Final = {"rawpy": "rawpy", "pillow_heif": "pillow-heif", "PIL": "pillow", "OpenEXR": "openexr"}
INSTALL_HINT: Final = "pip install 'gkm-cli[formats]'"


def load(module: str, what: str, name: str, *, writing: bool = False) -> ModuleType:
    """``import module`` or raise a one-line error: ``name: reading WHAT needs the PKG package``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = PACKAGES.get(module.split(".")[0], module)
        verb = "writing" if writing else "reading"
        text = f"{name}: {verb} {what} needs the {package} package ({INSTALL_HINT})"
        raise (ImageWriteError(text) if writing else ImageReadError(text)) from None
