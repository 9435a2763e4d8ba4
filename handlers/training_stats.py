"""Learning rates and timing as epoch-level metrics (GanTrainer's output has neither)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping

from ignite.engine import Engine, Events
from torch.optim import Optimizer

__all__ = ["TrainingStats", "EpochCompleteFilter"]


class TrainingStats:
    """Put learning rates and timing into ``engine.state.metrics`` at every epoch end.

    MONAI's ``StatsHandler`` and ``TensorBoardStatsHandler`` log ``engine.state.metrics`` at epoch end,
    so attach this handler **before** them.  Metrics written:

    * ``lr_<name>``: the first parameter group's learning rate of each optimiser in ``optimizers``;
    * ``time_iteration_s``: mean wall time of one training step (forward + backward + update) in the epoch;
    * ``time_data_s``: mean time waiting for a batch from the data loader;
    * ``time_epoch_s``: wall time of the epoch.

    Args:
        optimizers: ``{"g": g_optimizer, "d": d_optimizer}``.
    """

    def __init__(self, optimizers: Mapping[str, Optimizer] | None = None) -> None:
        self.optimizers = dict(optimizers or {})
        self._reset()

    def _reset(self, engine: Engine | None = None) -> None:
        self._epoch_start = time.perf_counter()
        self._t0 = self._d0 = 0.0
        self._iter_sum = self._data_sum = 0.0
        self._n = self._nd = 0

    def attach(self, engine: Engine) -> None:
        """Time every iteration and data wait; write the metrics at ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._data_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._data_completed)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _data_started(self, engine: Engine) -> None:
        self._d0 = time.perf_counter()

    def _data_completed(self, engine: Engine) -> None:
        self._data_sum += time.perf_counter() - self._d0
        self._nd += 1

    def _iteration_started(self, engine: Engine) -> None:
        self._t0 = time.perf_counter()

    def _iteration_completed(self, engine: Engine) -> None:
        self._iter_sum += time.perf_counter() - self._t0
        self._n += 1

    def _epoch_completed(self, engine: Engine) -> None:
        metrics = engine.state.metrics
        for name, opt in self.optimizers.items():
            metrics[f"lr_{name}"] = float(opt.param_groups[0]["lr"])
        metrics["time_iteration_s"] = self._iter_sum / max(self._n, 1)
        metrics["time_data_s"] = self._data_sum / max(self._nd, 1)
        metrics["time_epoch_s"] = time.perf_counter() - self._epoch_start


class EpochCompleteFilter(logging.Filter):
    """Drop Ignite's ``Epoch[N] Complete. Time taken: ...`` INFO line from an engine's logger.

    Ignite logs it after every epoch; with short epochs it is most of a log.  The epoch time is still reported,
    as ``time_epoch_s`` of :class:`TrainingStats` in the epoch summaries of ``StatsHandler``.
    ``attach(engine)`` adds the filter to ``engine.logger`` (so it can sit in a MONAI handler list).
    """

    PATTERN = re.compile(r"^Epoch\[\d+\] Complete\. Time taken")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and self.PATTERN.match(str(record.msg)))

    def attach(self, engine: Engine) -> None:
        """Filter the engine's logger."""
        engine.logger.addFilter(self)
