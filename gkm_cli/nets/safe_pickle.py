"""Reading pickled checkpoints without ever running their code (the one home for it).

A pickle is a program: its ``GLOBAL``/``STACK_GLOBAL`` opcodes import any callable and
``REDUCE`` calls it, so ``torch.load`` of an untrusted ``.pth`` can run anything. Two layers:

1. :func:`check_torch_checkpoint` unpickles ``data.pkl`` of a ``torch.save`` zip (or the
   leading pickles of the legacy format) with :class:`RestrictedUnpickler`, which resolves only
   the tensor-rebuild globals and resolves them to *inert stand-ins*, so the pass executes
   nothing from the file: it only proves that the file names no other global.
2. :func:`load_torch_checkpoint` then lets ``torch.load(weights_only=True)`` build the tensors
   (PyTorch's own allow-list unpickler).

Anything else (a plain pickle, an unknown global, a file that is neither format) is refused
with one line naming the file: :class:`UnsafeCheckpointError`, exit code 2.

:data:`NUMPY_GLOBALS` serves ``scripts/convert_lpips_weights.py`` (Flax arrays in a pickle).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gkm_cli.errors import ModelError


class UnsafeCheckpointError(ModelError):
    """A checkpoint names code to run (or is no checkpoint at all); nothing of it was executed."""


def _numpy_reconstruct() -> Callable[..., Any]:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


#: numpy array reconstruction only (the real callables: these pickles are built, not checked).
NUMPY_GLOBALS: Mapping[tuple[str, str], Callable[[], object]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}

#: What a ``torch.save`` of tensors (state dicts, nested dicts of tensors and plain values) names.
TORCH_TENSOR_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("collections", "OrderedDict"),
        ("torch", "Size"),
        ("torch.storage", "UntypedStorage"),
    }
    | {
        ("torch", f"{kind}Storage")
        for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
    }
    | {
        ("torch", name)
        for name in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allowed globals; any other one raises ``UnpicklingError``.

    ``allowed`` maps (module, name) to a factory of the object to use for it. Persistent ids
    (torch's storages) are refused unless ``persistent`` handles them.
    """

    def __init__(
        self,
        file: io.BufferedIOBase | io.BytesIO,
        allowed: Mapping[tuple[str, str], Callable[[], object]],
        persistent: Callable[[object], object] | None = None,
    ) -> None:
        super().__init__(file)
        self._allowed = allowed
        self._persistent = persistent

    def find_class(self, module: str, name: str) -> object:
        factory = self._allowed.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return factory()

    def persistent_load(self, pid: object) -> object:
        if self._persistent is None:
            raise pickle.UnpicklingError("persistent ids are not allowed")
        return self._persistent(pid)


class _Inert:
    """Stands in for every allowed global and for whatever calling it returns: records nothing,
    runs nothing (the checking pass never builds a tensor)."""

    def __call__(self, *args: object, **kwargs: object) -> _Inert:
        return _Inert()

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:  # OrderedDict stand-in
        pass


def _inert_globals() -> dict[tuple[str, str], Callable[[], object]]:
    return {key: _Inert for key in TORCH_TENSOR_GLOBALS}


def _check_pickle(data: io.BytesIO | io.BufferedReader, path: Path) -> None:
    try:
        RestrictedUnpickler(data, _inert_globals(), persistent=lambda pid: _Inert()).load()
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: refusing to load: the pickle names {e} (only tensor data is allowed; nothing in it was run)"
        ) from None
    except Exception as e:  # a truncated or garbled stream
        raise UnsafeCheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None


def check_torch_checkpoint(path: Path) -> None:
    """Raise :class:`UnsafeCheckpointError` unless ``path`` is a ``torch.save`` file of tensors."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            pickles = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pickles) != 1:
                raise UnsafeCheckpointError(f"{path}: a zip file but not a torch checkpoint (no single data.pkl)")
            _check_pickle(io.BytesIO(z.read(pickles[0])), path)
        return
    # Legacy (torch < 1.6) format: magic number, protocol, sys info, the object, storage keys.
    with open(path, "rb") as f:
        for _ in range(5):
            _check_pickle(f, path)


def load_torch_checkpoint(path: Path) -> object:
    """The object in a ``torch.save`` file of tensors, on the CPU; refuses anything that runs code."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    check_torch_checkpoint(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(f"{path}: refused by torch.load(weights_only=True): {first}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise ModelError(
            f"{path}: not a readable torch checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def tensor_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: the dict itself, or one under a usual key
    (``state_dict``, ``model``, ``params_ema``, ...); a ``module.`` (DataParallel) prefix is dropped."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "params_ema", "params", "model", "net", "generator"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"{path}: holds no state dict (a mapping of names to tensors)")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{path}: holds no tensors at its top level or under state_dict/model/params")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors
