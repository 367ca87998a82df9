"""Other restoration architectures through spandrel (the optional ``gkm-cli[zoo]`` extra).

spandrel (MIT, chaiNNer's model loader) recognises an architecture and its hyper-parameters
from a state dict. :func:`load_spandrel` wraps what it finds in :class:`ZooNetwork`, a
:class:`GkmNetwork` whose forward is the spandrel model, so ``gkm deblur`` / ``gkm evaluate``
run it through our engine (tiling, metadata, atomic writes, JSON records). Only same-size
RGB -> RGB models qualify (no super-resolution, no dual-pixel or masked inputs).

The state dict always comes from our safe loader (:mod:`gkm_cli.nets.safe_pickle`), never
from spandrel's own file loading. Architectures of ``spandrel_extra_arches`` (Restormer,
MPRNet, ... under restrictive licences) are used when that package is installed; they are
added to a registry local to each load, never to spandrel's global one.

An imported spandrel model is saved as safetensors with ``format = gkm-zoo`` metadata (the
architecture is detected again from the tensors when it is loaded).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gkm_cli.errors import ModelError, UsageError
from gkm_cli.nets.base import Context, DeblurOutput, GkmNetwork, ModelSpec, pad_to_multiple

ZOO_FORMAT = "gkm-zoo"
INSTALL_HINT = "install the zoo extra: pip install 'gkm-cli[zoo]'"


@contextlib.contextmanager
def _torchvision_placeholder() -> Iterator[None]:
    """Let ``import spandrel`` succeed where torchvision is absent or cannot be imported.

    spandrel imports torchvision at import time only for LaMa (inpainting) and RestoreFormer
    (faces), which gkm never runs. A PyPI torchvision wheel is built against CUDA torch and
    raises on import next to a CPU-only torch, so CPU installs leave it out. For the duration
    of the import, a placeholder module whose functions refuse to run stands in; it is removed
    from ``sys.modules`` afterwards, so nothing else ever sees it.
    """
    try:
        importlib.import_module("torchvision.transforms.functional")
        yield
        return
    except Exception:  # absent (ModuleNotFoundError) or broken (RuntimeError: operator ... does not exist)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]

    def refuse(*args: object, **kwargs: object) -> Any:
        raise ModelError("this spandrel architecture needs torchvision, which is not importable here")

    root = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = types.SimpleNamespace(NEAREST="nearest", BILINEAR="bilinear", BICUBIC="bicubic")  # type: ignore[attr-defined]
    functional.rotate = refuse  # type: ignore[attr-defined]
    functional.normalize = refuse  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    placed = {
        "torchvision": root,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
    }
    sys.modules.update(placed)
    try:
        yield
    finally:
        for name, module in placed.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def spandrel_available() -> bool:
    return importlib.util.find_spec("spandrel") is not None


def import_spandrel() -> types.ModuleType:
    """``import spandrel`` (through :func:`_torchvision_placeholder` the first time)."""
    if not spandrel_available():
        raise ModelError(f"spandrel is not installed: {INSTALL_HINT}")
    if "spandrel" not in sys.modules:
        with _torchvision_placeholder():
            importlib.import_module("spandrel")
    return sys.modules["spandrel"]


def _loader() -> Any:
    """A spandrel ModelLoader over a registry local to this call (main + extra architectures)."""
    spandrel = import_spandrel()

    registry = spandrel.ArchRegistry()
    registry.add(*spandrel.MAIN_REGISTRY)
    if importlib.util.find_spec("spandrel_extra_arches") is not None:
        from spandrel_extra_arches import EXTRA_REGISTRY

        registry.add(*EXTRA_REGISTRY, ignore_duplicates=True)
    return spandrel.ModelLoader(device="cpu", registry=registry)


@dataclass(frozen=True)
class ZooConfig:
    """What a spandrel model is (recorded in reports; the tensors rebuild it)."""

    architecture: str
    tags: tuple[str, ...]
    purpose: str


@dataclass
class _ZooOutput(DeblurOutput):
    def sigma_map(self, eps: float = 1e-6) -> torch.Tensor:
        raise UsageError("spandrel models predict no defocus map: gkm blurmap needs a GKM-family network")


class ZooNetwork(GkmNetwork):
    """A spandrel image model behind our network interface (forward -> DeblurOutput)."""

    def __init__(self, descriptor: Any) -> None:
        super().__init__()
        self.descriptor = descriptor
        self.net = descriptor.model  # registered, so .to(device) / .eval() reach it
        req = descriptor.size_requirements
        # Tiles must stay multiples of 16 (the engine's alignment) and of the model's own multiple.
        multiple = math.lcm(16, max(1, int(req.multiple_of)))
        self.minimum = int(req.minimum)
        self.square = bool(req.square)
        self.spec = ModelSpec(
            name=f"spandrel:{descriptor.architecture.id}",
            paper=f"{descriptor.architecture.name} via spandrel",
            size_multiple=multiple,
            receptive_radius=64,  # unknown for foreign models: a generous overlap
            tile_exact=False,  # most pool globally (channel attention, global average pooling)
            supports_bf16=bool(descriptor.supports_bfloat16),
            supports_fp16=bool(descriptor.supports_half),
        )
        self.config = ZooConfig(descriptor.architecture.id, tuple(descriptor.tags), str(descriptor.purpose))

    def forward(self, y: torch.Tensor, context: Context | None = None, *, reconstruct: bool = False) -> DeblurOutput:
        if y.dim() != 4 or y.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W input, got {tuple(y.shape)}")
        h, w = y.shape[-2:]
        x, _ = pad_to_multiple(y, self.spec.size_multiple)
        side = max(x.shape[-2], x.shape[-1], self.minimum) if self.square else 0
        if side or min(x.shape[-2:]) < self.minimum:
            ph = max(side, self.minimum, x.shape[-2]) - x.shape[-2]
            pw = max(side, self.minimum, x.shape[-1]) - x.shape[-1]
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
        param = next(self.net.parameters(), None)
        if param is not None and not torch.is_autocast_enabled(x.device.type):
            x = x.to(param.dtype)
        # spandrel's call API runs one image at a time; the engine sends one, tests may send more.
        out = torch.cat([self.descriptor(x[i : i + 1]) for i in range(x.shape[0])], 0)[..., :h, :w].to(y.dtype)
        zeros = out.new_zeros(out.shape[0], 1, h, w)
        return _ZooOutput(image=out, scales=[out], spatial_weights=zeros, group_sigmas=out.new_zeros(out.shape[0], 1))


def load_spandrel(state: dict[str, torch.Tensor], path: Path) -> ZooNetwork:
    """Detect the architecture of ``state`` with spandrel and wrap it (eval mode, CPU)."""
    loader = _loader()
    spandrel = import_spandrel()

    try:
        descriptor = loader.load_from_state_dict(spandrel.canonicalize_state_dict(state))
    except spandrel.UnsupportedModelError:
        raise ModelError(
            f"{path}: not a gkm checkpoint, not the authors' GKMNet layout, and no architecture spandrel knows"
        ) from None
    except (RuntimeError, KeyError, ValueError) as e:
        raise ModelError(
            f"{path}: spandrel could not load it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelError(
            f"{path}: {descriptor.architecture.name} is a {descriptor.purpose} model with a mask input; gkm restores "
            "plain images"
        )
    if descriptor.scale != 1:
        raise ModelError(
            f"{path}: {descriptor.architecture.name} upscales x{descriptor.scale}; gkm runs same-size restoration "
            "models only"
        )
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelError(
            f"{path}: {descriptor.architecture.name} takes {descriptor.input_channels} and gives "
            f"{descriptor.output_channels} channels; "
            "gkm runs RGB -> RGB models (dual-pixel models need both DP views)"
        )
    return ZooNetwork(descriptor).eval()


def save_spandrel(
    state: dict[str, torch.Tensor], model: GkmNetwork, destination: Path, card: Mapping[str, object]
) -> None:
    """The model's tensors as safetensors (``format = gkm-zoo``) + model card, atomically."""
    from safetensors.torch import save

    from gkm_cli.fileio import atomic_write_bytes
    from gkm_cli.nets.checkpoint import card_path

    # Clones: safetensors refuses tensors sharing storage (tied weights).
    tensors = {
        k[len("net.") :]: v.detach().cpu().clone() for k, v in model.state_dict().items() if k.startswith("net.")
    }
    metadata = {
        "format": ZOO_FORMAT,
        "architecture": model.spec.name,
        "config": json.dumps(model.config.__dict__, default=list),
    }
    atomic_write_bytes(destination, save(tensors, metadata=metadata))  # the one atomic writer (fsync, umask)
    atomic_write_bytes(card_path(destination), (json.dumps(card, indent=2) + "\n").encode())
