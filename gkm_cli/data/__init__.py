"""Data: dataset layouts on disk, synthetic defocus, and torch datasets for training.

- :mod:`gkm_cli.data.layouts`: ``detect_layout`` / ``list_pairs`` for DPDD, LFDOF, RealDOF,
  RTF and generic ``blur/`` + ``sharp/`` folders.
- :mod:`gkm_cli.data.synth`: physically based synthetic defocus (thin lens, disk / polygon /
  Gaussian PSFs, occlusion-aware layers in linear light, noise, JPEG), dead-leaves images and
  fixed synthetic validation sets on disk.
- :mod:`gkm_cli.data.datasets`: ``PairPatchDataset`` and ``SynthPatchDataset`` (torch), photo
  listing and a deterministic train/validation holdout.
"""

from gkm_cli.data.datasets import (
    PairPatchDataset,
    SynthPatchDataset,
    list_sharp_photos,
    split_holdout,
    worker_init_fn,
)
from gkm_cli.data.layouts import (
    DatasetLayout,
    MissingPartner,
    Pair,
    PairList,
    detect_layout,
    list_pairs,
)
from gkm_cli.data.synth import (
    Aperture,
    Lens,
    SynthConfig,
    SynthParams,
    SynthSample,
    dead_leaves,
    psf_kernel,
    render_defocus,
    synthesize,
    write_synthetic_set,
)

__all__ = [
    "Aperture",
    "DatasetLayout",
    "Lens",
    "MissingPartner",
    "Pair",
    "PairList",
    "PairPatchDataset",
    "SynthConfig",
    "SynthParams",
    "SynthPatchDataset",
    "SynthSample",
    "dead_leaves",
    "detect_layout",
    "list_pairs",
    "list_sharp_photos",
    "psf_kernel",
    "render_defocus",
    "split_holdout",
    "synthesize",
    "worker_init_fn",
    "write_synthetic_set",
]
