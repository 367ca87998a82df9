"""Training: losses, settings, the resumable trainer, checkpoints and validation.

- :mod:`.config`: :class:`TrainConfig` (frozen; every CLI flag), :class:`LossConfig`, the
  step-based learning-rate schedule ``lr_at``. A rank's place in a launch is
  :class:`gkm_cli.runtime.RankInfo`.
- :mod:`.losses`: the papers' multi-scale losses as pure functions (``loss_terms``).
- :mod:`.sampling`: batches that depend only on (seed, step); each rank's share of the global batch.
- :mod:`.loop`: :class:`Trainer`.
- :mod:`.distributed`: process group, DDP wrapper (the torchrun environment: :mod:`gkm_cli.runtime`).
- :mod:`.stopping`: SIGTERM/SIGINT as a stop at the next step with a checkpoint.
- :mod:`.checkpointing`: state as safetensors + JSON (no pickles), atomic writes.
- :mod:`.validation`: in-memory validation sets and PSNR/SSIM.
- :mod:`.plot`: training curves as a PNG (optional matplotlib).
"""

from gkm_cli.training.config import LossConfig, TrainConfig, check_training_path, lr_at
from gkm_cli.training.loop import Trainer, TrainingDiverged, TrainingInterrupted, TrainResult

__all__ = [
    "LossConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "check_training_path",
    "lr_at",
]
