"""Evaluation of a trained RG-GAN on held-out (validation) patients: the public names in one place.

``bundle/configs/evaluate.yaml`` calls :func:`run_evaluation`. The code lives in one module per concept:

* :mod:`rggan.evaluation_metrics`: :func:`evaluate_generator` (feature realism, background preservation,
  mask-image consistency, patient fidelity, diversity, planted-association recovery on demo data) and the
  model-selection score :func:`key_metric` / :func:`scalar_metrics`;
* :mod:`rggan.diversity`: pairwise MS-SSIM and mask Dice (:func:`ms_ssim_metric`, :func:`pairwise_diversity`);
* :mod:`rggan.evaluation_report`: :func:`format_metrics` and :func:`run_evaluation` (the output files);
* the training-time validation handler is :class:`rggan.handlers.EvaluationHandler`
  (``rggan.evaluation.EvaluationHandler`` still resolves to it).
"""

from __future__ import annotations

import logging
from typing import Any

from rggan.diversity import MS_SSIM_WEIGHTS, mask_dice, ms_ssim_metric, pairwise_diversity
from rggan.evaluation_metrics import KEY_FEATURES, evaluate_generator, key_metric, scalar_metrics, w1_distance
from rggan.evaluation_report import format_metrics, jsonable, run_evaluation

__all__ = [
    "ms_ssim_metric",
    "pairwise_diversity",
    "evaluate_generator",
    "format_metrics",
    "run_evaluation",
    "scalar_metrics",
    "key_metric",
    "KEY_FEATURES",
]

logger = logging.getLogger(__name__)  # the logger of evaluation_report too (same name)

# the module's former private names, still importable from here
_MS_SSIM_WEIGHTS, _dice, _w1, _jsonable = MS_SSIM_WEIGHTS, mask_dice, w1_distance, jsonable


def __getattr__(name: str) -> Any:
    """``EvaluationHandler`` lives in :mod:`rggan.handlers`; imported only when asked for by this old path."""
    if name == "EvaluationHandler":
        from importlib import import_module

        return import_module("rggan.handlers.evaluation").EvaluationHandler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
