"""Validation during training: evaluate the (EMA) generator on held-out patients every few epochs."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from rggan.evaluation_metrics import KEY_FEATURES, evaluate_generator, scalar_metrics

__all__ = ["EvaluationHandler"]


class EvaluationHandler:
    """Validation handler: every ``interval`` epochs, evaluate the (EMA) generator on held-out patients.

    Runs :func:`rggan.evaluation.evaluate_generator` (no radiogenomic map: ``truth_file=None``) and logs
    :func:`rggan.evaluation.scalar_metrics` through the trainer's logger and, if given, a TensorBoard
    ``summary_writer`` (tags ``<tag>/<metric>``, step = epoch). The key metric also goes into
    ``engine.state.metrics`` as ``<tag>_key_metric`` (see :func:`rggan.evaluation.key_metric`), where
    :class:`rggan.handlers.BestGeneratorSaver` reads it. Add it to a training config, e.g.::

        +train#handlers:
          - _target_: rggan.handlers.EvaluationHandler
            generator: "$@train#ema.ema_model"
            dataset_dir: "@prepared_dir"
            interval: 50
            summary_writer: "@tb_writer"

    Args:
        generator: the network (``RGGenerator``; its ``latent_size`` / ``image_size`` are used).
        dataset_dir: the prepared dataset folder.
        interval: epochs between evaluations.
        split, num_samples, seed, batch_size: as :func:`rggan.evaluation.evaluate_generator`.
        summary_writer: optional TensorBoard writer.
        tag: TensorBoard tag prefix.
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        dataset_dir: str | os.PathLike,
        interval: int = 50,
        split: str = "validation",
        num_samples: int = 2,
        seed: int = 12345,
        batch_size: int = 64,
        summary_writer: Any | None = None,
        tag: str = "eval",
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.generator = generator
        self.dataset_dir = dataset_dir
        self.interval = int(interval)
        self.kwargs = {"split": split, "num_samples": num_samples, "seed": seed, "batch_size": batch_size}
        self.summary_writer = summary_writer
        self.tag = tag
        self.history: list[tuple[int, dict[str, float]]] = []

    def attach(self, engine: Engine) -> None:
        """Evaluate at ``EPOCH_COMPLETED`` every ``interval`` epochs.

        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> dict[str, float]:
        """Evaluate, record and log.

        Args:
            engine: the trainer.

        Returns:
            The scalar metrics of this evaluation.
        """
        net = self.generator
        result = evaluate_generator(
            net, self.dataset_dir, latent_size=net.latent_size, image_size=net.image_size, truth_file=None,
            linear_reference=False, **self.kwargs,
        )  # fmt: skip
        scalars = scalar_metrics(result["metrics"])
        epoch = int(engine.state.epoch)
        self.history.append((epoch, scalars))
        engine.state.metrics[f"{self.tag}_key_metric"] = scalars["key_metric"]  # for model selection
        shown = {k: v for k, v in scalars.items() if k == "key_metric" or k.split("/")[-1] in KEY_FEATURES}
        engine.logger.info("Epoch[%d] evaluation: %s", epoch, " ".join(f"{k}: {v:.3g}" for k, v in shown.items()))
        if self.summary_writer is not None:
            for k, v in scalars.items():
                if np.isfinite(v):
                    self.summary_writer.add_scalar(f"{self.tag}/{k}", v, epoch)
        return scalars
