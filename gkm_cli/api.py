"""The public Python API (the CLI is built on it).

* :func:`list_model_info` -- what ``gkm models`` lists.
* :class:`Deblurrer` -- a network on a device with tiling settings: ``.deblur(array)`` and
  ``.blurmap(array)`` on numpy photos of any size, ``.deblur_image``/``.blurmap_image`` on
  :class:`gkm_cli.images.Image` (metadata kept). See docs/ENGINE.md.
* :func:`run_batch` -- what ``gkm deblur``/``gkm blurmap`` do to files and folders, as a
  generator of per-file records and a final summary.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gkm_cli.engine.batch import BatchRun, BatchSettings, BatchSummary
from gkm_cli.engine.pipeline import Record
from gkm_cli.engine.runner import Engine, EngineResult, TileProgress, check_strength
from gkm_cli.engine.tiling import TileSettings
from gkm_cli.errors import SettingError, UsageError
from gkm_cli.images import Image, with_pixels
from gkm_cli.nets import GkmNetwork, create_model, default_model, get_spec, list_models
from gkm_cli.nets.checkpoint import load_weights, resolve_model, shipped_weights
from gkm_cli.runtime import precision_name, resolve_device, select_dtype

__all__ = ["BatchSettings", "BatchSummary", "Deblurrer", "Record", "list_model_info", "run_batch"]


def list_model_info() -> list[dict]:
    """One record per registered architecture: name, params (inference), spec facts, weights path."""
    infos = []
    for name in list_models():
        spec = get_spec(name)
        weights = shipped_weights(name)
        infos.append(
            {
                "name": name,
                "params": create_model(name).inference_parameters(),
                "paper_params": spec.paper_params,
                "default": name == default_model(),
                "tile_exact": spec.tile_exact,
                "size_multiple": spec.size_multiple,
                "paper": spec.paper,
                "weights": str(weights) if weights else None,
            }
        )
    return infos


_INT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def _split(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """numpy photo -> (H x W x C float32 colour in [0, 1] with C = 1 or 3, raw alpha or None).

    Accepts H x W or H x W x C with C = 1 (gray), 2 (gray + alpha), 3 (RGB), 4 (RGBA), of
    dtype uint8, uint16 or float32 (float: [0, 1] expected, not clipped)."""
    a = np.asarray(array)
    if a.dtype not in (*_INT_DTYPES, np.dtype(np.float32)):
        raise UsageError(f"expected a uint8, uint16 or float32 array, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or min(a.shape[:2]) < 1:
        raise UsageError(f"expected an H x W or H x W x C array with C in 1..4, got shape {np.shape(array)}")
    colour_channels = 1 if a.shape[2] in (1, 2) else 3
    colour, alpha = a[:, :, :colour_channels], (a[:, :, colour_channels] if a.shape[2] in (2, 4) else None)
    if a.dtype.kind == "u":
        pixels = colour.astype(np.float32) / np.float32(np.iinfo(a.dtype).max)
    else:
        pixels = np.ascontiguousarray(colour, dtype=np.float32)
    return pixels, alpha


def _join(pixels: np.ndarray, alpha: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_split`: back to ``like``'s dtype and shape (alpha copied untouched)."""
    if like.dtype.kind == "u":
        top = np.float32(np.iinfo(like.dtype).max)
        colour = np.rint(np.clip(np.nan_to_num(pixels, nan=0.0), 0, 1) * top).astype(like.dtype)
    else:
        colour = pixels.astype(like.dtype, copy=False)
    if alpha is not None:
        colour = np.concatenate([colour, alpha[:, :, None].astype(like.dtype, copy=False)], axis=2)
    return colour[:, :, 0] if like.ndim == 2 else colour


class Deblurrer:
    """A deblurring network on a device, ready for photos of any size.

    ``model``: architecture name (default ``ggkmnet``); ``weights``: a ``.safetensors``
    checkpoint (default: the shipped ``models/<model>.safetensors``; a missing one raises
    :class:`gkm_cli.errors.ModelError`). ``device``: auto | cpu | cuda | cuda:N | mps;
    ``precision``: auto | fp32 | fp16 | bf16 (auto: bf16 on GPUs that support it, else fp32);
    ``tile``: core tile size in px (None: from free memory); ``tile_overlap``: context margin per
    side in px (None: the network's receptive radius rounded up to 16). ``strength``: 0..1, how
    much of the network's output to keep, ``S * output + (1 - S) * input`` (1: the output, 0: the
    photo unchanged); ``deblur``/``deblur_image`` take a per-call ``strength`` too.

    Arrays are H x W or H x W x C (C = 1, 2, 3, 4; the last of 2/4 is alpha, passed through
    untouched) of uint8, uint16 or float32 in [0, 1]; results have the input's dtype and shape.
    Gray is deblurred as gray replicated to RGB, the three outputs averaged back.

    Example (random weights, so the "deblurred" photo is just a shape check):

    >>> import numpy as np
    >>> from gkm_cli.nets import TINY_OVERRIDES, create_model
    >>> net = create_model("ggkmnet", **TINY_OVERRIDES["ggkmnet"])
    >>> d = Deblurrer.from_model(net, device="cpu")
    >>> photo = np.random.default_rng(0).integers(0, 65536, (40, 56, 3), dtype=np.uint16)
    >>> sharp = d.deblur(photo)
    >>> sharp.shape, sharp.dtype
    ((40, 56, 3), dtype('uint16'))
    >>> sigma = d.blurmap(photo)  # expected defocus sigma per pixel, in pixels
    >>> sigma.shape, sigma.dtype, bool((sigma >= 0).all())
    ((40, 56), dtype('float32'), True)
    >>> d.deblur(photo[:, :, 0]).shape  # gray in, gray out
    (40, 56)
    """

    def __init__(
        self,
        model: str | None = None,
        weights: Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        tile: int | None = None,
        tile_overlap: int | None = None,
        *,
        notify: Callable[[str], None] | None = None,
        local_rank: int | None = None,
        backend: str = "torch",
        strength: float = 1.0,
    ) -> None:
        from gkm_cli.nets.importers import is_foreign_weights, load_any_foreign

        if weights is not None and is_foreign_weights(Path(weights)):  # authors' GKMNet .pth, spandrel models
            path = Path(weights)
            foreign = load_any_foreign(path)
            net: GkmNetwork | None = foreign
            name = foreign.spec.name
        else:
            name, path = resolve_model(model, Path(weights) if weights is not None else None)
            net = None
        if model is not None and weights is not None and name != model:
            raise SettingError(
                "model", f"{model}: {weights} holds {name} weights, not {model}; name no model or pick matching weights"
            )
        if net is None:
            net = load_weights(path)
        self._setup(net, device, precision, tile, tile_overlap, notify, local_rank, path, backend, strength)

    @classmethod
    def from_model(
        cls,
        net: GkmNetwork,
        device: str = "auto",
        precision: str = "auto",
        tile: int | None = None,
        tile_overlap: int | None = None,
        *,
        notify: Callable[[str], None] | None = None,
        local_rank: int | None = None,
        strength: float = 1.0,
    ) -> Deblurrer:
        """Wrap an in-memory network (tests, training validation); it is moved to the device and
        run in eval mode (its own train/eval mode is restored after each call)."""
        self = cls.__new__(cls)
        self._setup(net, device, precision, tile, tile_overlap, notify, local_rank, None, strength=strength)
        return self

    def _setup(
        self,
        net: GkmNetwork,
        device: str,
        precision: str,
        tile: int | None,
        tile_overlap: int | None,
        notify: Callable[[str], None] | None,
        local_rank: int | None,
        weights: Path | None,
        backend: str = "torch",
        strength: float = 1.0,
    ) -> None:
        check_strength(strength)  # before the model moves to a device: a typo fails fast
        self.strength = float(strength)
        if backend not in ("torch", "onnxruntime"):
            raise SettingError("backend", f"must be torch or onnxruntime, got {backend!r}")
        self.backend = backend
        if backend == "onnxruntime":
            from gkm_cli.export import OnnxNetwork

            if device not in ("auto", "cpu") or precision not in ("auto", "fp32"):
                raise SettingError("backend", "onnxruntime runs on the CPU in fp32: use device cpu and precision fp32")
            device, precision = "cpu", "fp32"
            net = OnnxNetwork(net.eval())  # type: ignore[assignment]
        dev = resolve_device(device, local_rank)
        dtype = select_dtype(precision, dev, net.spec)
        self.weights = weights
        self.engine = Engine(net, dev, dtype, TileSettings(tile, tile_overlap), notify)

    # --- facts ------------------------------------------------------------------------------
    @property
    def model(self) -> GkmNetwork:
        return self.engine.model

    @property
    def name(self) -> str:
        return self.engine.model.spec.name

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def dtype(self) -> torch.dtype:
        return self.engine.dtype

    def describe(self) -> dict:
        """Model, weights, device and tiling settings (recorded in JSON records and sidecars)."""
        return {
            "model": self.name,
            "weights": str(self.weights) if self.weights is not None else None,
            "device": str(self.device),
            "backend": self.backend,
            "precision": precision_name(self.dtype),
            "tile": self.engine.tiling.tile,
            "tile_overlap": self.engine.overlap,
            "strength": self.strength,
        }

    def __repr__(self) -> str:
        d = self.describe()
        return f"Deblurrer(model={d['model']!r}, device={d['device']!r}, precision={d['precision']!r})"

    # --- arrays -----------------------------------------------------------------------------
    def run(self, pixels: np.ndarray, *, image: bool = True, sigma: bool = False) -> EngineResult:
        """The engine on H x W x C float32 pixels in [0, 1] (C = 1 or 3): image and/or sigma map."""
        return self.engine.run(pixels, image=image, sigma=sigma)

    def deblur(self, array: np.ndarray, *, strength: float | None = None) -> np.ndarray:
        """Deblurred copy of a photo array (same dtype and shape; alpha untouched).
        ``strength``: this call's blend with the input (None: the Deblurrer's)."""
        pixels, alpha = _split(array)
        result = self.engine.run(pixels, image=True, strength=self.strength if strength is None else strength)
        assert result.image is not None
        return _join(result.image, alpha, np.asarray(array))

    def blurmap(self, array: np.ndarray) -> np.ndarray:
        """H x W float32 map of the expected defocus blur sigma, in input pixels."""
        pixels, _alpha = _split(array)
        result = self.engine.run(pixels, image=False, sigma=True)
        assert result.sigma is not None
        return result.sigma

    # --- images with metadata ---------------------------------------------------------------
    def deblur_image(self, img: Image, on_tile: TileProgress | None = None, *, strength: float | None = None) -> Image:
        """Deblur a :class:`gkm_cli.images.Image`; metadata, alpha and sample type are kept.
        ``on_tile(done, total)`` reports progress through the tiles of a large image;
        ``strength``: this call's blend with the input (None: the Deblurrer's)."""
        result = self.engine.run(
            img.pixels, image=True, on_tile=on_tile, strength=self.strength if strength is None else strength
        )
        assert result.image is not None  # image=True
        return with_pixels(img, result.image)

    def blurmap_image(self, img: Image, on_tile: TileProgress | None = None) -> np.ndarray:
        """Sigma map (H x W float32, px) of a :class:`gkm_cli.images.Image`."""
        result = self.engine.run(img.pixels, image=False, sigma=True, on_tile=on_tile)
        assert result.sigma is not None
        return result.sigma


def run_batch(
    inputs: str | Path | list[str | Path] | tuple[str | Path, ...],
    output: str | Path | None = None,
    *,
    task: str = "deblur",
    notify: Callable[[str], None] | None = None,
    on_tile: TileProgress | None = None,
    **settings: Any,
) -> Generator[Record | BatchSummary, None, None]:
    """Deblur (``task="deblur"``) or map the blur of (``task="blurmap"``) files, folders and
    globs, as ``gkm deblur``/``gkm blurmap`` do: same output names, formats, resume manifest,
    torchrun split and records. ``output``: None (beside each input), a folder, one file name,
    or ``"-"`` (stdout). ``settings``: any other :class:`~gkm_cli.engine.batch.BatchSettings`
    field (``model``, ``weights``, ``device``, ``format``, ``bit_depth``, ``suffix``,
    ``recursive``, ``overwrite``, ``shard=(i, N)``, ``strength``, ...).

    Settings, inputs and the model are checked when it is called (a :class:`SettingError` names
    the setting); iterating runs the files and yields one :class:`Record` per input (``status``
    ok | skipped | failed, ``error``) in input order, then one :class:`BatchSummary` whose
    ``summary`` is the CLI's ``--json`` summary record. A disk that fills up stops the run (the
    summary's ``stopped``). Closing the generator early (``.close()``, or
    dropping it) stops the run at the next file or tile.

    >>> for record in run_batch(["photos/"], "sharp/", weights="my.safetensors"):  # doctest: +SKIP
    ...     print(record)
    """
    paths = (inputs,) if isinstance(inputs, (str, Path)) else tuple(inputs)
    batch = BatchSettings(
        task, tuple(str(p) for p in paths), None if output is None else str(output),
        **settings,
    )  # fmt: skip
    run = BatchRun(batch, notify=notify, on_tile=on_tile)
    return iter(run)
