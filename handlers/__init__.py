"""Ignite handlers specific to RG-GAN (installed as ``rggan.handlers``).

Every Ignite handler of the project lives here; the core package ``rggan`` never imports this one.
Everything else the bundle uses comes from MONAI (``StatsHandler``, ``TensorBoardStatsHandler``,
``LrScheduleHandler``, ``CheckpointLoader``) or Ignite (``ProgressBar``; ``EMAHandler``, subclassed by
:class:`ForeachEMAHandler`).

Training:

* :class:`BestGeneratorSaver`: held-out model selection (best generator by a validation key metric).
* :class:`ConditioningProbe`: diagnosis of the conditioning (gene/noise effects on G, D's gene-match gap).
* :class:`EvaluationHandler`: validation every few epochs (held-out fidelity and realism into
  ``engine.state.metrics``, read by :class:`BestGeneratorSaver`).
* :class:`GeneGroupLasso`: proximal group lasso on the gene encoder's input weights (sparse gene use).
* :class:`CheckpointSaver`: atomic, resumable training checkpoints (the last ``n_saved`` plus the final one);
  :func:`find_latest_checkpoint` (from :mod:`rggan.checkpoint`) finds the latest;
  :class:`FinalModelSaver`: ``models/model.pt`` when a run completes.
* :class:`ForeachEMAHandler`: ignite's EMAHandler with a one-pass (fused) weight update.
* :class:`SampleSaver`: fixed-sample image grids (PNG + TensorBoard) from the EMA generator.
* :class:`TerminateOnNan`: stop on a non-finite loss with a clear message.
* :class:`TrainingStats`: learning rates and timing as epoch-level metrics; :class:`EpochCompleteFilter` drops
  Ignite's per-epoch "Complete" log line (the summaries carry the epoch time).

Inference:

* :class:`GeneratedNoduleWriter`: the evaluator's NIfTI / PNG / ``index.csv`` outputs, all or nothing.

Divergence is handled with Ignite's own mechanism: :class:`TerminateOnNan` calls
``engine.terminate(skip_completed=True)``, so no ``EPOCH_COMPLETED`` / ``COMPLETED`` handler (checkpoints,
sample grids, ``model.pt``) runs after a diverged step, and :class:`ForeachEMAHandler` reads
``engine.should_terminate``; the handlers share no state flag.
"""

from rggan.handlers.best_generator import BestGeneratorSaver
from rggan.handlers.checkpoint import CheckpointSaver, FinalModelSaver, UmaskDiskSaver
from rggan.handlers.conditioning_probe import ConditioningProbe
from rggan.handlers.ema import ForeachEMAHandler
from rggan.handlers.evaluation import EvaluationHandler
from rggan.handlers.gene_lasso import GeneGroupLasso
from rggan.handlers.nodule_writer import GeneratedNoduleWriter
from rggan.handlers.sample_saver import SampleSaver, make_grid
from rggan.handlers.terminate_on_nan import TerminateOnNan
from rggan.handlers.training_stats import EpochCompleteFilter, TrainingStats

from rggan.checkpoint import find_latest_checkpoint

__all__ = [
    "BestGeneratorSaver",
    "CheckpointSaver",
    "ConditioningProbe",
    "EpochCompleteFilter",
    "EvaluationHandler",
    "FinalModelSaver",
    "ForeachEMAHandler",
    "GeneGroupLasso",
    "GeneratedNoduleWriter",
    "SampleSaver",
    "TerminateOnNan",
    "TrainingStats",
    "UmaskDiskSaver",
    "find_latest_checkpoint",
    "make_grid",
]
