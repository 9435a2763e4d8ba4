"""The evaluation workflow's outputs: readable tables and the files of ``output_dir``.

:func:`run_evaluation` runs :func:`rggan.evaluation_metrics.evaluate_generator` and writes
``metrics.json``, ``metrics.txt`` (readable tables), ``generated_features.csv`` and
``real_features.csv`` into ``output_dir``, all or nothing (:func:`rggan.staging.staged_output`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from rggan.evaluation_metrics import evaluate_generator
from rggan.options import as_flag
from rggan.staging import staged_output

__all__ = ["format_metrics", "jsonable", "run_evaluation"]

logger = logging.getLogger("rggan.evaluation")


def _planted_lines(pr: Mapping[str, Any]) -> list[str]:
    lines = [f"Planted-association recovery ({pr['truth_file']}; map over {pr['map_split']} patients):"]
    for name in ("synthesis", "conventional"):
        md = pr["main_drivers"][name]
        df = pd.DataFrame(pr[name]).drop(columns=["drivers"], errors="ignore")
        means = ", ".join(f"{k} {v:.3f}" for k, v in pr["summary"][name].items())
        lines += [
            f"  {name} map (means over the main pairings): {means}; main-driver Spearman {md['spearman']:.3f} "
            f"({md['n_pairs']} driver-phenotype pairs)",
            df.to_string(index=False, float_format=lambda v: f"{v:.3f}"),
            "",
        ]
    return lines


def _num(v: Any) -> str:
    """A metric for the text report: 4 significant digits, ``nan`` for a missing value."""
    return "nan" if v is None else f"{float(v):.4g}"


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """The metrics as readable text tables.

    Args:
        metrics: the metrics of :func:`rggan.evaluation_metrics.evaluate_generator`.

    Returns:
        The text, ending with a newline.
    """
    lines = [
        f"RG-GAN evaluation: {metrics['patients']} {metrics['split']} patients x {metrics['samples_per_patient']} "
        f"samples = {metrics['generated']} generated nodules",
        "",
        "Feature realism (Wasserstein-1, generated vs real):",
    ]
    fr = pd.DataFrame(metrics["feature_realism"]).T[["unit", "w1", "w1_over_sd", "generated_mean", "real_mean"]]
    lines += [fr.to_string(float_format=lambda v: f"{v:.4g}"), ""]
    if "patient_fidelity_spearman" in metrics:
        lines.append("Patient fidelity (Spearman across patients, real feature vs mean generated feature):")
        ceiling = metrics.get("patient_fidelity_ceiling") or {}
        linear = metrics.get("patient_fidelity_linear") or {}
        prior = metrics.get("patient_fidelity_prior") or {}
        followed = metrics.get("prior_followed") or {}
        if linear:
            lines.append("  (linear: the same with a lasso read-out of the genes, fitted on the training patients)")
        if prior:
            lines.append("  (prior: the same with the generator's own prior scores; followed: G's mean vs the scores)")
        if ceiling:
            lines.append("  (ceiling: the same with each patient's planted phenotype for the generated feature)")
        for k, v in metrics["patient_fidelity_spearman"].items():
            lines.append(
                f"  {k:40s} {_num(v)}"
                + (f"   linear {_num(linear[k])}" if k in linear else "")
                + (f"   prior {_num(prior[k])}   followed {_num(followed.get(k))}" if k in prior else "")
                + (f"   ceiling {_num(ceiling[k])}" if k in ceiling else "")
            )
        lines.append("")
    for section in ("background_preservation", "mask_image_consistency", "diversity"):
        lines.append(section.replace("_", " ").capitalize() + ":")
        for k, v in metrics[section].items():
            lines.append(f"  {k:40s} {v:.4g}" if isinstance(v, float) else f"  {k:40s} {v}")
        lines.append("")
    if metrics.get("planted_recovery"):
        lines += _planted_lines(metrics["planted_recovery"])
    return "\n".join(lines) + "\n"


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN/inf as None and numpy scalars as Python numbers (for ``json.dumps``)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def run_evaluation(
    network: torch.nn.Module,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    settings: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Evaluate the generator and write the results into ``output_dir``, all or nothing.

    ``metrics.json`` (NaN -> null), ``metrics.txt`` and the feature CSVs; the text tables are also logged.

    Args:
        network: the generator.
        dataset_dir: prepared dataset folder.
        output_dir: destination folder.
        settings: recorded under ``settings`` in the metrics (e.g. the checkpoint used).
        kwargs: :func:`rggan.evaluation_metrics.evaluate_generator` options (``progress``,
            ``main_component_only`` and ``linear_reference`` may be command-line strings).

    Returns:
        The metrics, with ``settings``.
    """
    for flag in ("progress", "main_component_only", "linear_reference"):  # CLI strings too
        if flag in kwargs:
            kwargs[flag] = as_flag(kwargs[flag])
    result = evaluate_generator(network, dataset_dir, **kwargs)
    metrics = {**result["metrics"], "settings": dict(settings or {})}
    text = format_metrics(metrics)
    with staged_output(output_dir) as staging:
        (staging / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=1) + "\n")
        (staging / "metrics.txt").write_text(text)
        result["generated_features"].to_csv(staging / "generated_features.csv", float_format="%.6g")
        result["real_features"].to_csv(staging / "real_features.csv", float_format="%.6g")
    logger.info("evaluation written to %s\n%s", output_dir, text)
    return metrics
