"""Foreign checkpoints: the authors' GKMNet key layout, detection, and ``gkm models import``.

The released GKMNet code (csZcWu/GKMNet and GKMNet_updating; ``reference_gkmnet.md`` 5) saves
a plain state dict of 240 entries whose names differ from ours only by module paths; the
Gaussian bank is not in it. :func:`official_key` maps each of our keys to the authors' one (a
bijection, checked by the tests in both directions), :func:`from_official` renames a loaded
state dict into ours and :func:`to_official` does the inverse (the tests build the authors'
layout from our own network with it). Which bank a checkpoint expects (``official`` for
GKMNet, ``updating`` for GKMNet_updating) cannot be read from it: the user says so at import
and it is recorded in the config and the model card.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from gkm_cli.errors import ModelError, UsageError
from gkm_cli.fileio import file_sha256
from gkm_cli.nets.base import GkmNetwork
from gkm_cli.nets.gkmnet import GKMNet
from gkm_cli.nets.safe_pickle import load_torch_checkpoint, tensor_state_dict

#: Suffixes of ``torch.save`` files that are read through the safe loader.
TORCH_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".ckpt")

#: ``--variant`` -> the GKMNet bank layout it needs.
GKM_VARIANTS: dict[str, str] = {"gkmnet": "official", "gkmnet_updating": "updating"}

_BLOCKS = {
    "in_block": "in_block",
    "down1": "conv_block1_1",
    "down2": "conv_block2_1",
    "bottleneck": "bottle_neck_1",
    "up1": "conv_block3_1",
    "up2": "conv_block4_1",
}
_INSIDE_BLOCK = (  # our path after "extractor.<block>." -> theirs after "<block>."
    (r"0\.(0|1)\.", r"conv.\1."),  # first layer conv (+ BN) of the strided / transposed blocks
    (r"0\.", "conv.0."),  # in_block's first layer is a bare conv
    (r"1\.conv1\.", "res_block.conv."),
    (r"1\.conv2\.", "res_block.conv1."),
    (r"2\.(hw|cw|hc)\.conv\.", r"ta.\1.conv.conv."),
    (r"2\.(hw|cw|hc)\.bn\.", r"ta.\1.conv.bn."),
)
_OTHERS = (
    (r"apu\.detail\.", "APU.conv.conv."),
    (r"apu\.memory\.conv\.", "APU.conv_atten.conv."),
    (r"summation\.", "SumLayer.conv."),
)


def official_key(ours: str) -> str:
    """The authors' name of one of our GKMNet state-dict keys."""
    m = re.match(r"extractor\.(\w+?)\.(.*)$", ours)
    if m and m.group(1) in _BLOCKS:
        for pattern, repl in _INSIDE_BLOCK:
            rest, n = re.subn("^" + pattern, repl, m.group(2))
            if n:
                return f"{_BLOCKS[m.group(1)]}.{rest}"
    for pattern, repl in _OTHERS:
        theirs, n = re.subn("^" + pattern, repl, ours)
        if n:
            return theirs
    raise ModelError(f"no authors' name for GKMNet key {ours!r}")


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our GKMNet state dict renamed to the released code's layout (tests build checkpoints with it)."""
    return {official_key(k): v for k, v in state.items()}


def is_official_gkm(state: dict[str, torch.Tensor]) -> bool:
    """True for the released GKMNet / GKMNet_updating layout (same keys in both)."""
    return (
        "SumLayer.conv.weight" in state and "APU.conv_atten.conv.weight" in state and "in_block.conv.0.weight" in state
    )


def is_nrknet(state: dict[str, torch.Tensor]) -> bool:
    return "GCM.kernels" in state and "SummationLayer.conv.weight" in state


def official_config(state: dict[str, torch.Tensor], path: Path) -> dict[str, int | str]:
    """GKMNet config read from the shapes: width, kernels (bank size - 1), ConvLSTM kernel."""
    try:
        width = int(state["in_block.conv.0.weight"].shape[0])
        channels = int(state["SumLayer.conv.weight"].shape[1])
        maps = int(state["APU.conv.conv.0.weight"].shape[0])
        lstm_kernel = int(state["APU.conv_atten.conv.weight"].shape[-1])
    except (KeyError, IndexError) as e:
        raise ModelError(f"{path}: incomplete GKMNet checkpoint ({e})") from None
    if channels % 6 or maps != channels // 3:
        raise ModelError(
            f"{path}: GKMNet summation takes {channels} channels and the APU gives {maps} maps; expected 6K and 2K"
        )
    return {"width": width, "kernels": channels // 6 - 1, "lstm_kernel": lstm_kernel}


def from_official(
    state: dict[str, torch.Tensor], path: Path, *, variant: str = "gkmnet", batch_norm: str = "image"
) -> GkmNetwork:
    """Our GKMNet holding an authors' checkpoint, every key mapped, in eval mode (fp32)."""
    from gkm_cli.nets.registry import create_model

    if variant not in GKM_VARIANTS:
        raise UsageError(f"--variant must be one of {', '.join(GKM_VARIANTS)}, got {variant!r}")
    from gkm_cli.nets.registry import check_config

    try:  # the same bounds as our own checkpoints' configs, before anything is built
        config = check_config("gkmnet", official_config(state, path))
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from None
    model = create_model("gkmnet", **config, bank_layout=GKM_VARIANTS[variant], batch_norm=batch_norm)
    ours = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    for key in ours:
        theirs = official_key(key)
        if theirs not in state:
            raise ModelError(f"{path}: GKMNet checkpoint lacks {theirs}")
        if state[theirs].shape != ours[key].shape:
            raise ModelError(
                f"{path}: {theirs} has shape {tuple(state[theirs].shape)}, expected {tuple(ours[key].shape)}"
            )
        renamed[key] = state[theirs].float() if state[theirs].is_floating_point() else state[theirs]
    extra = sorted(set(state) - {official_key(k) for k in ours})
    if extra:
        raise ModelError(f"{path}: GKMNet checkpoint has unexpected keys {extra[:3]}")
    model.load_state_dict(renamed, strict=True)
    return model.eval()


@dataclass(frozen=True)
class Imported:
    """A loaded foreign checkpoint: the network, what it is, and the facts for its model card."""

    model: GkmNetwork
    kind: str  # "gkmnet" (the authors' layout) or "spandrel"
    variant: str | None
    state: dict[str, torch.Tensor]


def read_foreign_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt``/``.ckpt`` (safely) or of a non-gkm ``.safetensors``;
    every floating-point tensor must be finite (NaN weights would write black images)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        state = tensor_state_dict(load_torch_checkpoint(path), path)
    elif suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelError(f"{path}: not a readable safetensors file ({e})") from None
    else:
        raise UsageError(f"{path}: unsupported weights file (expected .safetensors, {', '.join(TORCH_SUFFIXES)})")
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelError(f"{path}: tensor {key} holds NaN or infinite values; these weights are broken")
    return state


def load_foreign(path: Path, *, variant: str | None = None, batch_norm: str = "image") -> Imported:
    """Detect and load a foreign checkpoint: the authors' GKMNet layout, else a spandrel architecture."""
    path = Path(path)
    state = read_foreign_state(path)
    if is_official_gkm(state):
        v = variant or "gkmnet"
        return Imported(from_official(state, path, variant=v, batch_norm=batch_norm), "gkmnet", v, state)
    if is_nrknet(state):
        raise ModelError(f"{path}: an NRKNet checkpoint (recognised, not supported yet: gkm has no NRKNet network)")
    if variant is not None:
        raise UsageError(f"{path}: --variant applies to the authors' GKMNet checkpoints, and this is not one")
    from gkm_cli.nets.zoo import load_spandrel

    return Imported(load_spandrel(state, path), "spandrel", None, state)


def import_card(source: Path, imported: Imported, licence: str, command: str) -> dict[str, object]:
    """The model card of an imported checkpoint: where it came from, under which licence, how."""
    from gkm_cli import __version__

    model = imported.model
    card: dict[str, object] = {
        "name": model.spec.name,
        "imported": True,
        "source": str(Path(source).resolve()),
        "source_sha256": file_sha256(source),
        "source_bytes": Path(source).stat().st_size,
        "licence": licence,
        "licence_note": "as stated by the user at import; gkm does not verify it",
        "kind": imported.kind,
        "variant": imported.variant,
        "parameters": model.inference_parameters(),
        "imported_with": f"gkm {__version__}, torch {torch.__version__}",
        "imported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
    }
    if imported.kind == "gkmnet":
        assert isinstance(model, GKMNet)  # kind "gkmnet": load_foreign built our GKMNet
        cfg = model.config
        card["config"] = {"width": cfg.width, "kernels": cfg.kernels, "lstm_kernel": cfg.lstm_kernel,
                          "bank_layout": cfg.bank_layout, "batch_norm": cfg.batch_norm}  # fmt: skip
        statistics = (
            "per-image statistics (as their test script, which never calls eval())"
            if cfg.batch_norm == "image"
            else "running statistics"
        )
        card["notes"] = (
            "Authors' GKMNet weights in our network with their bank channel map "
            f"({cfg.bank_layout!r}) and BatchNorm on {statistics}. "
            "Differences to their test pipeline: our pyramid is built inside the network (antialiased bilinear "
            "halving in float, theirs PIL bilinear on 8-bit), and inputs are reflect-padded bottom/right to a "
            "multiple of 16 (theirs: black, centred)."
        )
    else:
        card["architecture"] = model.spec.name
        card["notes"] = (
            "Run through spandrel (the gkm-cli[zoo] extra); respect the architecture's and the weights' licences."
        )
    return card


def save_imported(imported: Imported, destination: Path, card: Mapping[str, object]) -> None:
    """Write the imported network as safetensors + model card (atomically)."""
    from gkm_cli.nets.checkpoint import save_weights

    destination = Path(destination)
    if destination.suffix != ".safetensors":
        raise UsageError(f"{destination}: the output must be a .safetensors file")
    if imported.kind == "gkmnet":
        save_weights(imported.model, destination, card=card)
        return
    from gkm_cli.nets.zoo import save_spandrel

    save_spandrel(imported.state, imported.model, destination, card)


def _safetensors_format(path: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format")
    except (SafetensorError, OSError, ValueError):
        return None


def is_foreign_weights(path: Path) -> bool:
    """True for files our own safetensors loader does not handle: torch pickles and safetensors
    without our ``format = gkm`` (an imported spandrel model, or someone else's safetensors)."""
    path = Path(path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        return True
    if path.suffix.lower() == ".safetensors" and path.is_file():
        fmt = _safetensors_format(path)
        return (fmt is not None and fmt != "gkm") or (fmt is None and _has_tensors(path))
    return False


def _has_tensors(path: Path) -> bool:
    """A readable safetensors file without metadata (someone else's export)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return bool(list(f.keys()))
    except (SafetensorError, OSError, ValueError):
        return False


def load_any_foreign(path: Path) -> GkmNetwork:
    """The network of a foreign weights file (see :func:`is_foreign_weights`), for ``--weights``."""
    return load_foreign(path).model
