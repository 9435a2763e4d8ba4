"""Evaluation of a trained RG-GAN on held-out (validation) patients.

:func:`evaluate_generator` synthesises ``num_samples`` nodules per held-out patient (its own expression,
background patch ``base_index``, latents fixed by ``seed`` as in :mod:`rggan.inference`) and computes:

* **feature realism**: per nodule feature (:mod:`rggan.features`), the Wasserstein-1 distance
  (``scipy.stats.wasserstein_distance``) between the generated nodules' values and the real held-out
  nodules' values, also divided by the real values' standard deviation (``w1_over_sd``, unit-free);
* **background preservation**: mean |generated - background| outside the generated mask, in HU
  (0 = the background is kept exactly where there is no nodule);
* **mask-image consistency**: mean |generated - background| inside the generated mask (how much the
  nodule changes the patch where the mask says "nodule"), and the HU contrast inside vs. outside the
  generated mask next to the same contrast of the real nodules; the fraction of empty generated masks;
* **patient fidelity**: per feature, Spearman correlation across patients between the real nodule's
  value and the mean over latents of the generated nodules' values (does G give each held-out patient
  its own phenotype from its genes? The patient's own background patch is used, so intensity features
  also carry some background information);
* **diversity across latents**: mean pairwise MS-SSIM between the nodules of one patient (1 = all
  latents give the same image) and mean pairwise Dice of their masks; **across patients**: the same
  for one generated nodule per patient, beside the same figure for the real held-out nodules (real
  data have one nodule per patient, so this is the real reference for diversity); MS-SSIM uses
  ``monai.metrics.MultiScaleSSIMMetric`` with as many of its 5 default scales as the image size allows
  (kernel 11: 2 scales at 32 px, 3 at 64, 4 at 128; weights renormalised);
* on demo data (``demo_truth.json`` found or given): planted-association recovery of both radiogenomic
  maps (:func:`rggan.radiogenomic_map.score_against_truth`), the synthesis map computed over
  ``map_split`` patients with ``map_latents`` latents.

:func:`run_evaluation` writes ``metrics.json``, ``metrics.txt`` (readable tables), ``generated_features.csv``
and ``real_features.csv`` atomically into ``output_dir``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rggan.features import FEATURE_NAMES, FEATURE_UNITS, features_frame, nodule_features, to_hu
from rggan.intensity import hu_range_of

__all__ = [
    "ms_ssim_metric",
    "pairwise_diversity",
    "evaluate_generator",
    "format_metrics",
    "run_evaluation",
    "scalar_metrics",
    "key_metric",
    "KEY_FEATURES",
    "EvaluationHandler",
]

logger = logging.getLogger(__name__)

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_metric(image_size: int, kernel_size: int = 11):
    """``MultiScaleSSIMMetric`` for [-1, 1] images of side ``image_size``, with as many scales as fit.

    MONAI needs ``image_size > (kernel_size - 1) * 2 ** (scales - 1)``; with one scale this is SSIM.
    """
    from monai.metrics import MultiScaleSSIMMetric

    scales = 1
    while scales < len(_MS_SSIM_WEIGHTS) and image_size > (kernel_size - 1) * 2**scales:
        scales += 1
    w = _MS_SSIM_WEIGHTS[:scales]
    weights = tuple(v / sum(w) for v in w)
    return MultiScaleSSIMMetric(spatial_dims=2, data_range=2.0, kernel_size=kernel_size, weights=weights), scales


def _dice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = (a > 0).flatten(1).float(), (b > 0).flatten(1).float()
    den = a.sum(1) + b.sum(1)
    return torch.where(den > 0, 2 * (a * b).sum(1) / den.clamp(min=1), torch.ones_like(den))


def pairwise_diversity(images: torch.Tensor, masks: torch.Tensor, groups: Sequence[str]) -> dict[str, float]:
    """Mean pairwise MS-SSIM of images and Dice of masks within each group (patient), over all groups.

    Args:
        images, masks: (N, 1, S, S) in [-1, 1].
        groups: N group labels (pairs are only formed within a group).
    """
    metric, scales = ms_ssim_metric(int(images.shape[-1]))
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(str(g), []).append(i)
    pairs = [(i, j) for idx in by_group.values() for i, j in combinations(idx, 2)]
    if not pairs:
        return {"ms_ssim": float("nan"), "mask_dice": float("nan"), "pairs": 0, "ms_ssim_scales": scales}
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    ssim = metric(images[a].float(), images[b].float()).flatten()
    dice = _dice(masks[a], masks[b])
    return {
        "ms_ssim": float(np.nanmean(ssim.numpy())),
        "mask_dice": float(dice.mean()),
        "pairs": len(pairs),
        "ms_ssim_scales": scales,
    }


def _w1(gen: pd.Series, real: pd.Series) -> tuple[float, float]:
    from scipy.stats import wasserstein_distance

    g, r = gen.dropna().to_numpy(), real.dropna().to_numpy()
    if len(g) == 0 or len(r) == 0:
        return float("nan"), float("nan")
    w = float(wasserstein_distance(g, r))
    sd = float(np.std(r))
    return w, (w / sd if sd > 0 else float("nan"))


@torch.no_grad()
def evaluate_generator(
    network: torch.nn.Module,
    dataset_dir: str | os.PathLike,
    *,
    latent_size: int,
    image_size: int,
    split: str = "validation",
    num_samples: int = 4,
    seed: int = 12345,
    base_index: int | str = 0,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    truth_file: str | os.PathLike | None = "auto",
    map_split: str = "all",
    map_latents: int = 2,
    map_delta: float = 0.5,
    progress: bool = False,
    main_component_only: bool = False,
) -> dict[str, Any]:
    """All metrics (see the module docstring) as a JSON-ready dict plus the feature tables.

    Returns:
        ``{"metrics": {...}, "generated_features": DataFrame, "real_features": DataFrame}``.
    """
    from rggan.data.rna import GeneTransform
    from rggan.inference import build_inputs, generate
    from rggan.radiogenomic_map import (
        conventional_map,
        load_truth,
        main_driver_agreement,
        real_features,
        resolve_truth,
        score_against_truth,
        summarise_scores,
        synthesis_map,
    )

    folder = Path(dataset_dir)
    genes = GeneTransform.load(folder / "gene_transform.json").genes
    requests = build_inputs(
        folder, num_genes=len(genes), image_size=image_size, latent_size=latent_size, num_samples=num_samples,
        seed=seed, split=split, base_index=base_index,
    )  # fmt: skip
    out = generate(network, requests, batch_size=batch_size, device=device, progress=progress)
    spacing = torch.tensor([r["spacing"] for r in requests], dtype=torch.float64)
    hu_range = hu_range_of(folder)
    hu_per_unit = (hu_range[1] - hu_range[0]) / 2.0  # HU per unit of the [-1, 1] scale
    feats = nodule_features(
        out["image"], out["mask"], spacing, main_component_only=main_component_only, hu_range=hu_range
    )
    gen = features_frame(feats, [r["id"] for r in requests])
    gen.insert(0, "patient", [r["patient"] for r in requests])
    gen.index.name = "id"

    from rggan.inference import _prepared_items

    items = _prepared_items(folder, split)
    real = real_features(items, hu_range)

    realism = {}
    for f in FEATURE_NAMES:
        w, wn = _w1(gen[f], real[f])
        realism[f] = {
            "w1": w,
            "w1_over_sd": wn,
            "unit": FEATURE_UNITS[f],
            "generated_mean": float(gen[f].mean()),
            "real_mean": float(real[f].mean()),
        }

    base = torch.as_tensor(np.stack([r["base"] for r in requests]))
    inside = out["mask"] > 0
    diff_hu = (out["image"] - base).abs() * hu_per_unit
    n_in, n_out = inside.flatten(1).sum(1), (~inside).flatten(1).sum(1)
    outside_l1 = (diff_hu * (~inside)).flatten(1).sum(1) / n_out.clamp(min=1)
    inside_l1 = torch.where(n_in > 0, (diff_hu * inside).flatten(1).sum(1) / n_in.clamp(min=1), torch.nan)
    hu = to_hu(out["image"], hu_range)
    gen_contrast = torch.where(
        (n_in > 0) & (n_out > 0),
        (hu * inside).flatten(1).sum(1) / n_in.clamp(min=1) - (hu * ~inside).flatten(1).sum(1) / n_out.clamp(min=1),
        torch.nan,
    )
    real_img = torch.as_tensor(np.stack([np.load(it["image"]).reshape(1, image_size, image_size) for it in items]))
    real_msk = torch.as_tensor(np.stack([np.load(it["mask"]).reshape(1, image_size, image_size) for it in items])) > 0
    rhu = to_hu(real_img.double(), hu_range)
    rn_in, rn_out = real_msk.flatten(1).sum(1), (~real_msk).flatten(1).sum(1)
    real_contrast = (rhu * real_msk).flatten(1).sum(1) / rn_in.clamp(min=1) - (rhu * ~real_msk).flatten(1).sum(
        1
    ) / rn_out.clamp(min=1)

    # does G give each patient its own phenotype? Spearman across patients, real vs mean generated feature
    from scipy.stats import spearmanr

    per_patient = gen.groupby("patient")[list(FEATURE_NAMES)].mean()
    fidelity = {}
    for f in FEATURE_NAMES:
        both = pd.concat([real[f], per_patient[f]], axis=1, join="inner").dropna()
        ok = len(both) >= 3 and both.iloc[:, 0].nunique() > 1 and both.iloc[:, 1].nunique() > 1
        fidelity[f] = float(spearmanr(both.iloc[:, 0], both.iloc[:, 1]).statistic) if ok else float("nan")

    diversity = pairwise_diversity(out["image"], out["mask"], [r["patient"] for r in requests])
    # across patients: the first sample of each patient, and the real nodules, each as one group
    first = [i for i, r in enumerate(requests) if i == 0 or r["patient"] != requests[i - 1]["patient"]]
    across = pairwise_diversity(out["image"][first], out["mask"][first], ["all"] * len(first))
    real_msk_pm = real_msk.float() * 2 - 1
    real_across = pairwise_diversity(real_img.float(), real_msk_pm, ["all"] * len(real_img))
    metrics: dict[str, Any] = {
        "patients": len(items),
        "split": split,
        "samples_per_patient": num_samples,
        "generated": len(requests),
        "feature_realism": realism,
        "patient_fidelity_spearman": fidelity,
        "background_preservation": {
            "l1_outside_mask_hu": float(np.nanmean(outside_l1.numpy())),
            "l1_outside_mask_normalised": float(np.nanmean(outside_l1.numpy())) / hu_per_unit,
        },
        "mask_image_consistency": {
            "l1_inside_mask_hu": float(np.nanmean(inside_l1.numpy())) if bool((n_in > 0).any()) else float("nan"),
            "contrast_inside_minus_outside_hu": float(np.nanmean(gen_contrast.numpy()))
            if bool((n_in > 0).any())
            else float("nan"),
            "real_contrast_inside_minus_outside_hu": float(real_contrast.mean()),
            "empty_mask_fraction": float((n_in == 0).float().mean()),
        },
        "diversity": {
            **diversity,
            "ms_ssim_diversity": 1.0 - diversity["ms_ssim"],
            "mask_dice_diversity": 1.0 - diversity["mask_dice"],
            "across_patients_ms_ssim_diversity": 1.0 - across["ms_ssim"],
            "real_across_patients_ms_ssim_diversity": 1.0 - real_across["ms_ssim"],
            "across_patients_mask_dice_diversity": 1.0 - across["mask_dice"],
            "real_across_patients_mask_dice_diversity": 1.0 - real_across["mask_dice"],
        },
    }

    truth_path = resolve_truth(truth_file, folder)
    if truth_path is not None:
        truth = load_truth(truth_path)
        map_requests = build_inputs(
            folder, num_genes=len(genes), image_size=image_size, latent_size=latent_size, num_samples=map_latents,
            seed=seed, split=map_split, base_index=base_index,
        )  # fmt: skip
        synth = synthesis_map(
            network, map_requests, genes, delta=map_delta, batch_size=max(2, 2 * batch_size), device=device,
            progress=progress, main_component_only=main_component_only, hu_range=hu_range,
        )  # fmt: skip
        map_items = _prepared_items(folder, map_split)
        expression = pd.DataFrame(
            np.stack([np.load(it["rna"]).astype(np.float64).reshape(-1) for it in map_items]),
            index=[str(it["patient"]) for it in map_items],
            columns=genes,
        )
        map_real = real_features(map_items, hu_range)
        conv = conventional_map(map_real, expression)
        s_syn = score_against_truth(synth["effect"], truth, expression=expression)
        s_conv = score_against_truth(conv["rho"], truth, expression=expression)
        metrics["planted_recovery"] = {
            "truth_file": str(truth_path),
            "map_split": map_split,
            "map_latents": map_latents,
            "delta": map_delta,
            "summary": {"synthesis": summarise_scores(s_syn), "conventional": summarise_scores(s_conv)},
            "synthesis": s_syn.to_dict(orient="records"),
            "conventional": s_conv.to_dict(orient="records"),
            "main_drivers": {
                "synthesis": main_driver_agreement(synth["effect"], truth, feature_scale=map_real.std().to_dict()),
                "conventional": main_driver_agreement(conv["rho"], truth),
            },
        }
    return {"metrics": metrics, "generated_features": gen, "real_features": real}


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """The metrics as readable text tables."""
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
        for k, v in metrics["patient_fidelity_spearman"].items():
            lines.append(f"  {k:40s} {v:.4g}")
        lines.append("")
    for section in ("background_preservation", "mask_image_consistency", "diversity"):
        lines.append(section.replace("_", " ").capitalize() + ":")
        for k, v in metrics[section].items():
            lines.append(f"  {k:40s} {v:.4g}" if isinstance(v, float) else f"  {k:40s} {v}")
        lines.append("")
    pr = metrics.get("planted_recovery")
    if pr:
        lines.append(f"Planted-association recovery ({pr['truth_file']}; map over {pr['map_split']} patients):")
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
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
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
    """:func:`evaluate_generator`, then ``metrics.json`` (NaN -> null), ``metrics.txt`` and the feature CSVs
    written atomically to ``output_dir``; the text tables are also logged. Returns the metrics."""
    from rggan.inference import as_flag, commit_staging, make_staging

    for flag in ("progress", "main_component_only"):  # CLI strings too
        if flag in kwargs:
            kwargs[flag] = as_flag(kwargs[flag])
    result = evaluate_generator(network, dataset_dir, **kwargs)
    metrics = {**result["metrics"], "settings": dict(settings or {})}
    text = format_metrics(metrics)
    staging = make_staging(output_dir)
    try:
        (staging / "metrics.json").write_text(json.dumps(_jsonable(metrics), indent=1) + "\n")
        (staging / "metrics.txt").write_text(text)
        result["generated_features"].to_csv(staging / "generated_features.csv", float_format="%.6g")
        result["real_features"].to_csv(staging / "real_features.csv", float_format="%.6g")
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit_staging(staging, output_dir)
    logger.info("evaluation written to %s\n%s", output_dir, text)
    return metrics


#: the image features of the demo's four planted phenotypes (size, intensity, texture, margin)
KEY_FEATURES: tuple[str, ...] = ("equivalent_radius_mm", "mean_hu", "std_hu", "irregularity")


def key_metric(metrics: Mapping[str, Any], features: Sequence[str] = KEY_FEATURES) -> float:
    """Model-selection score: mean patient fidelity minus mean W1/SD over ``features``.

    Both terms are in comparable units (a Spearman correlation, a distance in real SDs), so a generator
    scores high only when its held-out nodules are both realistic (W1/SD near 0) and patient-specific
    (fidelity near 1). W1/SD is capped at 2 so one broken feature does not dominate. NaN (e.g. empty
    masks) counts as the worst value of its term.
    """
    fid = [metrics["patient_fidelity_spearman"].get(f, float("nan")) for f in features]
    w1 = [metrics["feature_realism"][f]["w1_over_sd"] for f in features]
    fid = [v if np.isfinite(v) else -1.0 for v in fid]
    w1 = [min(v, 2.0) if np.isfinite(v) else 2.0 for v in w1]
    return float(np.mean(fid) - np.mean(w1))


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers of :func:`evaluate_generator`'s metrics as a flat ``{name: float}``."""
    out = {"key_metric": key_metric(metrics)}
    out.update({f"fidelity/{f}": v for f, v in metrics["patient_fidelity_spearman"].items()})
    out.update({f"w1_over_sd/{f}": v["w1_over_sd"] for f, v in metrics["feature_realism"].items()})
    out["background_l1_hu"] = metrics["background_preservation"]["l1_outside_mask_hu"]
    out["empty_mask_fraction"] = metrics["mask_image_consistency"]["empty_mask_fraction"]
    out["contrast_hu"] = metrics["mask_image_consistency"]["contrast_inside_minus_outside_hu"]
    out["ms_ssim"] = metrics["diversity"]["ms_ssim"]
    out["mask_dice"] = metrics["diversity"]["mask_dice"]
    return {k: float(v) for k, v in out.items()}


class EvaluationHandler:
    """Validation handler: every ``interval`` epochs, evaluate the (EMA) generator on held-out patients.

    Runs :func:`evaluate_generator` (no radiogenomic map: ``truth_file=None``) and logs
    :func:`scalar_metrics` through the trainer's logger and, if given, a TensorBoard ``summary_writer``
    (tags ``<tag>/<metric>``, step = epoch). The key metric also goes into ``engine.state.metrics`` as
    ``<tag>_key_metric`` (see :func:`key_metric`), where :class:`rggan.handlers.BestGeneratorSaver` reads it.
    Add it to a training config, e.g.::

        +train#handlers:
          - _target_: rggan.evaluation.EvaluationHandler
            generator: "$@train#ema.ema_model"
            dataset_dir: "@prepared_dir"
            interval: 50
            summary_writer: "@tb_writer"

    Args:
        generator: the network (``RGGenerator``; its ``latent_size`` / ``image_size`` are used).
        dataset_dir: the prepared dataset folder.
        interval: epochs between evaluations.
        split, num_samples, seed, batch_size: as :func:`evaluate_generator`.
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

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Any) -> dict[str, float]:
        net = self.generator
        result = evaluate_generator(
            net, self.dataset_dir, latent_size=net.latent_size, image_size=net.image_size, truth_file=None,
            **self.kwargs,
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
