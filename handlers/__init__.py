"""Ignite handlers specific to RG-GAN (installed as ``rggan.handlers``).

Everything else the training bundle uses comes from MONAI (``StatsHandler``, ``TensorBoardStatsHandler``,
``LrScheduleHandler``, ``CheckpointLoader``) or Ignite (``ProgressBar``; ``EMAHandler``, subclassed by
:class:`ForeachEMAHandler`).

* :class:`BestGeneratorSaver`: held-out model selection (best generator by a validation key metric).
* :class:`ConditioningProbe`: diagnosis of the conditioning (gene/noise effects on G, D's gene-match gap).
* :class:`GeneGroupLasso`: proximal group lasso on the gene encoder's input weights (sparse gene use).
* :class:`CheckpointSaver` / :func:`find_latest_checkpoint`: atomic, resumable training checkpoints (the last
  ``n_saved`` plus the final one); :class:`FinalModelSaver`: ``models/model.pt`` when a run completes.
* :class:`ForeachEMAHandler`: ignite's EMAHandler with a one-pass (fused) weight update.
* :class:`SampleSaver`: fixed-sample image grids (PNG + TensorBoard) from the EMA generator.
* :class:`TerminateOnNan`: stop on a non-finite loss with a clear message.
* :class:`TrainingStats`: learning rates and timing as epoch-level metrics; :class:`EpochCompleteFilter` drops
  Ignite's per-epoch "Complete" log line (the summaries carry the epoch time).
"""

from rggan.handlers.best_generator import BestGeneratorSaver
from rggan.handlers.checkpoint import CheckpointSaver, FinalModelSaver, UmaskDiskSaver, find_latest_checkpoint
from rggan.handlers.conditioning_probe import ConditioningProbe
from rggan.handlers.ema import ForeachEMAHandler
from rggan.handlers.gene_lasso import GeneGroupLasso
from rggan.handlers.sample_saver import SampleSaver, make_grid
from rggan.handlers.terminate_on_nan import TerminateOnNan
from rggan.handlers.training_stats import EpochCompleteFilter, TrainingStats

__all__ = [
    "BestGeneratorSaver",
    "ConditioningProbe",
    "GeneGroupLasso",
    "ForeachEMAHandler", "FinalModelSaver", "UmaskDiskSaver",
    "CheckpointSaver", "find_latest_checkpoint", "SampleSaver", "make_grid", "TerminateOnNan", "TrainingStats",
    "EpochCompleteFilter"]
