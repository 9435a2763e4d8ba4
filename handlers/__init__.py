"""Ignite handlers specific to RG-GAN (installed as ``rggan.handlers``).

Everything else the training bundle uses comes from MONAI (``StatsHandler``, ``TensorBoardStatsHandler``,
``LrScheduleHandler``, ``CheckpointLoader``) or Ignite (``EMAHandler``, ``ProgressBar``).

* :class:`CheckpointSaver` / :func:`find_latest_checkpoint`: atomic, resumable training checkpoints.
* :class:`SampleSaver`: fixed-sample image grids (PNG + TensorBoard) from the EMA generator.
* :class:`TerminateOnNan`: stop on a non-finite loss with a clear message.
* :class:`TrainingStats`: learning rates and timing as epoch-level metrics.
"""

from rggan.handlers.checkpoint import CheckpointSaver, find_latest_checkpoint
from rggan.handlers.sample_saver import SampleSaver, make_grid
from rggan.handlers.terminate_on_nan import TerminateOnNan
from rggan.handlers.training_stats import TrainingStats

__all__ = ["CheckpointSaver", "find_latest_checkpoint", "SampleSaver", "make_grid", "TerminateOnNan", "TrainingStats"]
