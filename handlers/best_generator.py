"""Held-out model selection: keep the generator with the best validation key metric.

The MONAI/Ignite validation pattern: a validation handler (:class:`rggan.handlers.EvaluationHandler`)
writes its metrics into ``engine.state.metrics`` every few epochs; :class:`BestGeneratorSaver`, attached
after it, gives that key metric to Ignite's ``Checkpoint`` as its ``score_function`` (``n_saved=1``,
atomic ``UmaskDiskSaver``), so ``best_generator_epoch=<E>_<metric>=<score>.pt`` always holds the best
EMA generator so far. When the run completes, the best generator's weights become ``model_path`` (the bundle's
``models/model.pt``); a run that never evaluated writes the generator as it is.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from rggan.handlers.checkpoint import UmaskDiskSaver
from torch import nn

__all__ = ["BestGeneratorSaver"]


class BestGeneratorSaver:
    """Save the generator whenever ``engine.state.metrics[key_metric]`` reaches a new maximum.

    Args:
        generator: the network to keep (the EMA generator).
        save_dir: folder of the best checkpoint (created if needed).
        model_path: where the best generator's weights are written when the run completes
            (e.g. ``models/model.pt``); None: not written.
        key_metric: name in ``engine.state.metrics`` (higher is better).
        interval: epochs between checks; must match the validation handler's interval.
        name: logger name (default: the engine's logger).
    """

    def __init__(
        self,
        generator: nn.Module,
        save_dir: str | os.PathLike,
        model_path: str | os.PathLike | None = None,
        key_metric: str = "eval_key_metric",
        interval: int = 50,
        name: str | None = None,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.generator = generator
        self.model_path = None if model_path is None else Path(model_path)
        self.key_metric = key_metric
        self.interval = int(interval)
        self.logger = logging.getLogger(name) if name else None
        self.checkpoint = Checkpoint(
            {"generator": generator},
            UmaskDiskSaver(str(save_dir), require_empty=False, atomic=True, create_dir=True),
            filename_prefix="best",
            score_function=self._score,
            score_name=key_metric,
            global_step_transform=lambda engine, _: engine.state.epoch,
            filename_pattern="{filename_prefix}_{name}_epoch={global_step}_{score_name}={score}.{ext}",
            n_saved=1,
        )

    def _score(self, engine: Engine) -> float:
        value = float(engine.state.metrics.get(self.key_metric, float("nan")))
        return value if math.isfinite(value) else -math.inf

    def attach(self, engine: Engine) -> None:
        """Check every ``interval`` epochs; write ``model_path`` at ``COMPLETED`` (if set)."""
        if self.logger is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        if self.model_path is not None:
            engine.add_event_handler(Events.COMPLETED, self.write_model)

    def __call__(self, engine: Engine) -> None:
        """Save the generator if the key metric is a new best (raises KeyError if it was not computed)."""
        if self.key_metric not in engine.state.metrics:
            raise KeyError(
                f"BestGeneratorSaver: no metric {self.key_metric!r} at epoch {engine.state.epoch}; attach the "
                "validation handler that computes it first, with the same interval."
            )
        before = self.checkpoint.last_checkpoint
        self.checkpoint(engine)
        if self.checkpoint.last_checkpoint != before:
            self.logger.debug(
                "new best generator (%s %.4g): %s",
                self.key_metric, engine.state.metrics[self.key_metric], self.checkpoint.last_checkpoint,
            )  # fmt: skip

    @property
    def best_path(self) -> Path | None:
        """File of the best generator so far (None before the first save)."""
        last = self.checkpoint.last_checkpoint
        return None if last is None else Path(last)

    def write_model(self, engine: Engine | None = None) -> Path:
        """Write the best generator's weights (else the generator as it is) to ``model_path``."""
        from rggan.export import save_generator_weights
        from rggan.io import atomic_write

        if self.model_path is None:
            raise ValueError("BestGeneratorSaver has no model_path")
        best = self.best_path
        if best is None:
            return save_generator_weights(self.generator, self.model_path)
        state = torch.load(best, map_location="cpu", weights_only=True)
        path = atomic_write(self.model_path, lambda handle: torch.save(state, handle))
        if self.logger is not None:
            self.logger.info("model.pt = best generator %s", best.name)
        return path
