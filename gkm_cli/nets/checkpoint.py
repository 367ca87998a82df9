"""Weights as safetensors plus a model card JSON beside them; never pickles.

``ggkmnet.safetensors`` holds the tensors and, in its metadata, the architecture name and config
(JSON), so a checkpoint rebuilds its network without the card. ``ggkmnet.json`` (the model card)
holds what a person needs: data, steps, hardware, scores and the commands behind them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from gkm_cli.errors import ModelError
from gkm_cli.fileio import atomic_write_bytes, file_sha256
from gkm_cli.nets.base import GkmNetwork
from gkm_cli.nets.registry import check_config, create_model, model_config
from gkm_cli.shipped import models_dir  # re-exported: the CLI names the folder in its messages

FORMAT_VERSION = "1"


def card_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_weights(
    model: GkmNetwork, path: Path, *, card: Mapping[str, object] | None = None, half: bool = False
) -> None:
    """Save a network's state (inference + training heads) and optionally its model card, atomically."""
    path = Path(path)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    metadata = {
        "format": "gkm",
        "format_version": FORMAT_VERSION,
        "architecture": model.spec.name,
        "config": json.dumps(model_config(model), sort_keys=True),
    }
    atomic_write_bytes(path, save(state, metadata=metadata))
    if card is not None:
        atomic_write_bytes(card_path(path), (json.dumps(card, indent=2, sort_keys=False) + "\n").encode())


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not a readable safetensors checkpoint ({_first_line(e)})") from None


def load_weights(path: Path, *, map_location: str | torch.device = "cpu") -> GkmNetwork:
    """Rebuild the network recorded in a checkpoint and load its weights (eval mode, fp32).

    Nothing in the file is trusted before it is checked, and nothing real is built before the
    checks pass: the metadata config must be a JSON object of the architecture's fields within
    :data:`~gkm_cli.nets.registry.CONFIG_BOUNDS`; the tensor names, shapes and kinds must equal
    those of that network (built on the ``meta`` device, which allocates nothing); every
    floating-point tensor must be finite. Any failure is a one-line :class:`ModelError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    meta, shapes = _read_header(path)
    if meta.get("format") != "gkm" or "architecture" not in meta:
        raise ModelError(f"{path}: not a gkm checkpoint (no architecture in its metadata)")
    arch = meta["architecture"]
    try:
        raw_config = json.loads(meta.get("config", "{}"))
    except ValueError:
        raise ModelError(f"{path}: the config in its metadata is not valid JSON") from None
    try:
        config = check_config(arch, raw_config)
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from None
    _check_layout(path, arch, config, shapes)
    model = create_model(arch, **config)
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: cannot read the weights ({_first_line(e)})") from None
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelError(f"{path}: tensor {key} holds NaN or infinite values; these weights are broken")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=False)  # names and shapes were checked above
    return model.eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[tuple[int, ...], str]]]:
    """Metadata and (shape, dtype) of every tensor, from the safetensors header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            shapes = {}
            for key in f.keys():  # noqa: SIM118 (safe_open has keys() but is not iterable)
                part = f.get_slice(key)
                shapes[key] = (tuple(int(n) for n in part.get_shape()), str(part.get_dtype()))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not a readable safetensors checkpoint ({_first_line(e)})") from None
    return meta, shapes


def _check_layout(
    path: Path, arch: str, config: Mapping[str, object], shapes: dict[str, tuple[tuple[int, ...], str]]
) -> None:
    """Tensor names, shapes and kinds must be exactly those of ``arch`` with ``config``."""
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            expected = create_model(arch, **config).state_dict()
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(
            f"{path}: config {json.dumps(config, sort_keys=True)} does not build {arch} ({_first_line(e)})"
        ) from None
    # "srm." tensors are training-only heads that older checkpoints may lack.
    missing = sorted(k for k in expected if k not in shapes and not k.startswith("srm."))
    unexpected = sorted(k for k in shapes if k not in expected)
    if missing or unexpected:
        what = []
        if missing:
            what.append(
                f"missing {', '.join(missing[:3])}" + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            )
        if unexpected:
            what.append(
                f"unexpected {', '.join(unexpected[:3])}"
                + (f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else "")
            )
        raise ModelError(f"{path}: weights do not match {arch} ({'; '.join(what)})")
    for key, (shape, dtype) in shapes.items():
        want = expected[key]
        if tuple(want.shape) != shape:
            raise ModelError(f"{path}: tensor {key} has shape {list(shape)}, {arch} expects {list(want.shape)}")
        is_float = dtype.startswith(("F", "BF"))
        if is_float != want.is_floating_point():
            raise ModelError(f"{path}: tensor {key} has type {dtype}, {arch} expects {want.dtype}")


def shipped_weights(name: str) -> Path | None:
    """The trained weights of architecture ``name`` in :func:`models_dir` if the file exists, else
    None: the spec's ``pretrained.filename``, or ``<name>.safetensors`` for one without an entry."""
    from gkm_cli.nets.registry import get_spec

    pretrained = get_spec(name).pretrained
    p = models_dir() / (pretrained.filename if pretrained else f"{name}.safetensors")
    return p if p.is_file() else None


def check_pretrained(name: str, path: Path) -> None:
    """The shipped weights must hash to the spec's sha256: a truncated or damaged file (a broken
    install, a partial copy) fails here in one line instead of loading into odd pixels."""
    from gkm_cli.nets.registry import get_spec

    pretrained = get_spec(name).pretrained
    if pretrained is None:
        return
    digest = file_sha256(path)
    if digest != pretrained.sha256:
        raise ModelError(
            f"{path}: sha256 {digest[:16]}... is not that of the shipped {name} weights ({pretrained.sha256[:16]}...); "
            f"the file is damaged or truncated: reinstall gkm-cli, or pass --weights FILE"
        )


def resolve_model(name: str | None, weights: Path | None) -> tuple[str, Path]:
    """Pick the checkpoint for a run: explicit ``weights`` wins, else the shipped one for ``name``."""
    from gkm_cli.nets.registry import default_model, get_spec

    if weights is not None:
        if not Path(weights).is_file():
            raise ModelError(f"{weights}: weights file not found")
        return read_metadata(Path(weights)).get("architecture", name or "?"), Path(weights)
    name = name or default_model()
    get_spec(name)  # unknown names fail here with the list of valid ones
    found = shipped_weights(name)
    if found is None:
        raise ModelError(
            f"no trained weights for {name!r} in {models_dir()} (none are shipped yet for it); "
            f"train some with `gkm train` or pass --weights FILE"
        )
    check_pretrained(name, found)
    return name, found
