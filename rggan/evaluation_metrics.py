"""The metrics of a trained RG-GAN on held-out (validation) patients, and the model-selection score.

:func:`evaluate_generator` synthesises ``num_samples`` nodules per held-out patient (its own expression,
background patch ``base_index``, latents fixed by ``seed`` as in :mod:`rggan.inputs`) and computes:

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
  also carry some background information); beside it, ``patient_fidelity_linear``: the same Spearman for
  the sparse linear read-out of the genes fitted on the training patients
  (:func:`rggan.adaptive_lasso.linear_readout`), the reference a generator's fidelity is read against on
  any data, since no planted truth is needed; and for a generator trained with a phenotype prior
  (:func:`prior_fidelity`), ``patient_fidelity_prior``: the same Spearman for the prior's own scores, which
  are what this generator was handed, and ``prior_followed``: how G's mean generated features rank against
  those scores (1: G carries its prior to new patients exactly);
* **diversity** across latents and across patients (:mod:`rggan.diversity`);
* on demo data (``demo_truth.json`` found or given): planted-association recovery of both radiogenomic
  maps (:func:`rggan.radiogenomic_map.score_against_truth`), the synthesis map computed over
  ``map_split`` patients with ``map_latents`` latents; and the **fidelity ceiling**
  (:func:`fidelity_ceiling`): the patient fidelity a generator would score if it drew each held-out
  patient's planted phenotype exactly. One 2D slice measures a 3D phenotype with noise (a lobe may miss
  the slice), so over ~20 held-out patients no generator can be expected to exceed it.

:func:`key_metric` condenses the metrics into one model-selection score, :func:`scalar_metrics` into the
headline numbers logged during training.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rggan.diversity import diversity_metrics
from rggan.features import FEATURE_NAMES, FEATURE_UNITS, features_frame, nodule_features, to_hu
from rggan.generation import generate
from rggan.inputs import build_inputs, prepared_items
from rggan.intensity import hu_per_unit, hu_range_of

__all__ = [
    "KEY_FEATURES",
    "w1_distance",
    "feature_realism",
    "patient_fidelity",
    "fidelity_ceiling",
    "linear_fidelity",
    "prior_fidelity",
    "intensity_metrics",
    "planted_recovery",
    "evaluate_generator",
    "key_metric",
    "scalar_metrics",
]

#: the image features of the demo's four planted phenotypes (size, intensity, texture, margin)
KEY_FEATURES: tuple[str, ...] = ("equivalent_radius_mm", "mean_hu", "std_hu", "irregularity")


def w1_distance(gen: pd.Series, real: pd.Series) -> tuple[float, float]:
    """Wasserstein-1 distance between two samples (NaN ignored), plain and over the real values' SD.

    Args:
        gen, real: the generated and real values.

    Returns:
        ``(w1, w1 / sd(real))``; NaN when a sample is empty (the second also when the SD is 0).
    """
    from scipy.stats import wasserstein_distance

    g, r = gen.dropna().to_numpy(), real.dropna().to_numpy()
    if len(g) == 0 or len(r) == 0:
        return float("nan"), float("nan")
    w = float(wasserstein_distance(g, r))
    sd = float(np.std(r))
    return w, (w / sd if sd > 0 else float("nan"))


def feature_realism(gen: pd.DataFrame, real: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per feature, the Wasserstein-1 distance between generated and real values.

    Args:
        gen, real: feature tables (columns :data:`rggan.features.FEATURE_NAMES`).

    Returns:
        ``{feature: {w1, w1_over_sd, unit, generated_mean, real_mean}}``.
    """
    realism = {}
    for f in FEATURE_NAMES:
        w, wn = w1_distance(gen[f], real[f])
        realism[f] = {
            "w1": w,
            "w1_over_sd": wn,
            "unit": FEATURE_UNITS[f],
            "generated_mean": float(gen[f].mean()),
            "real_mean": float(real[f].mean()),
        }
    return realism


def patient_fidelity(gen: pd.DataFrame, real: pd.DataFrame) -> dict[str, float]:
    """Per feature, Spearman correlation across patients of the real value and the mean generated value.

    Args:
        gen: generated feature table with a ``patient`` column (several latents per patient).
        real: real feature table indexed by patient.

    Returns:
        ``{feature: rho}``; NaN with fewer than 3 patients or a constant column.
    """
    from scipy.stats import spearmanr

    per_patient = gen.groupby("patient")[list(FEATURE_NAMES)].mean()
    fidelity = {}
    for f in FEATURE_NAMES:
        both = pd.concat([real[f], per_patient[f]], axis=1, join="inner").dropna()
        ok = len(both) >= 3 and both.iloc[:, 0].nunique() > 1 and both.iloc[:, 1].nunique() > 1
        fidelity[f] = float(spearmanr(both.iloc[:, 0], both.iloc[:, 1]).statistic) if ok else float("nan")
    return fidelity


def fidelity_ceiling(real: pd.DataFrame, truth: Mapping[str, Any]) -> dict[str, float]:
    """Per feature of a planted phenotype, the fidelity of a generator that knew each patient's phenotype.

    Args:
        real: real feature table indexed by patient (the held-out patients).
        truth: the demo truth (:func:`rggan.radiogenomic.truth.load_truth`).

    Returns:
        ``{feature: rho}``: Spearman across the patients of ``real`` between the real feature and the
        patient's planted phenotype value (the features of :data:`rggan.radiogenomic.truth.PHENOTYPE_FEATURES`);
        NaN with fewer than 3 patients in the truth.
    """
    from scipy.stats import spearmanr

    from rggan.radiogenomic.truth import PHENOTYPE_FEATURES

    patients = truth.get("patients") or {}
    out = {}
    for phenotype, features in PHENOTYPE_FEATURES.items():
        planted = pd.Series(
            {p: float(patients[p]["phenotypes"][phenotype]) for p in real.index
             if phenotype in (patients.get(p) or {}).get("phenotypes", {})},
            dtype=np.float64,
        )  # fmt: skip
        for f in features:
            if f not in real.columns:
                continue
            both = pd.concat([real[f], planted], axis=1, join="inner").dropna()
            ok = len(both) >= 3 and both.iloc[:, 0].nunique() > 1 and both.iloc[:, 1].nunique() > 1
            out[f] = float(spearmanr(both.iloc[:, 0], both.iloc[:, 1]).statistic) if ok else float("nan")
    return out


def linear_fidelity(
    dataset_dir: str | os.PathLike, real: pd.DataFrame, split: str, refit_alpha: float = 0.0
) -> dict[str, float] | None:
    """Patient fidelity of the genes' sparse linear read-out (:func:`rggan.adaptive_lasso.linear_readout`).

    Args:
        dataset_dir: a prepared folder; real: the real feature table of ``split``'s patients;
        split: the held-out patients (the read-out is fitted on the training patients).
        refit_alpha: > 0: the read-out's fits refitted as adaptive lassos
            (:func:`rggan.adaptive_lasso.phenotype_prior`); 0: the prior's default fits.

    Returns:
        ``{feature: rho}`` as :func:`patient_fidelity`; None when ``split`` is the training split itself or the
        training split is too small to fit (fewer than 3 patients).
    """
    from rggan.adaptive_lasso import linear_readout
    from rggan.errors import InputError

    if split == "training":
        return None
    try:
        predicted = linear_readout(dataset_dir, split, refit_alpha=refit_alpha)
    except InputError:
        return None
    return patient_fidelity(predicted.rename_axis(None).assign(patient=predicted.index), real)


def prior_fidelity(
    network: torch.nn.Module, expression: Mapping[str, np.ndarray], real: pd.DataFrame, gen: pd.DataFrame
) -> dict[str, dict[str, float]] | None:
    """How well a generator's own phenotype prior ranks the held-out patients, and how closely G follows it.

    A generator trained with ``phenotype_prior`` holds fixed scores ``W rna + c`` (buffers ``prior_weight``,
    ``prior_bias``: one lasso fit per feature on the training patients, on the targets that run trained
    with, e.g. slice-averaged margins) that enter its gene embedding. These scores are the linear read-out
    this generator was actually handed; :func:`linear_fidelity` refits one on single-slice features.

    Args:
        network: the generator; expression: each held-out patient's prepared expression vector (``rna.npy``);
        real: their real feature table indexed by patient; gen: the generated feature table (``patient`` column).

    Returns:
        ``{"read_out": {feature: rho(score, real)}, "followed": {feature: rho(mean generated, score)}}`` over
        :data:`rggan.features.FEATURE_NAMES` (Spearman across patients as :func:`patient_fidelity`); None when
        the generator has no prior.
    """
    weight, bias = getattr(network, "prior_weight", None), getattr(network, "prior_bias", None)
    if weight is None or bias is None or weight.shape[0] != len(FEATURE_NAMES):
        return None
    patients = [str(p) for p in expression]
    rna = np.stack([np.asarray(v, np.float64).reshape(-1) for v in expression.values()])
    w, c = weight.detach().cpu().double().numpy(), bias.detach().cpu().double().numpy()
    scores = pd.DataFrame(rna @ w.T + c, index=pd.Index(patients, name="patient"), columns=list(FEATURE_NAMES))
    return {
        "read_out": patient_fidelity(scores.rename_axis(None).assign(patient=patients), real),
        "followed": patient_fidelity(gen, scores),
    }


def _inside_minus_outside(hu: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Per image, mean HU inside the mask minus mean HU outside it (empty parts count as 0)."""
    n_in, n_out = inside.flatten(1).sum(1), (~inside).flatten(1).sum(1)
    return (hu * inside).flatten(1).sum(1) / n_in.clamp(min=1) - (hu * ~inside).flatten(1).sum(1) / n_out.clamp(
        min=1
    )


def intensity_metrics(
    out: Mapping[str, torch.Tensor],
    base: torch.Tensor,
    real_image: torch.Tensor,
    real_mask: torch.Tensor,
    hu_range: Sequence[float],
) -> dict[str, dict[str, float]]:
    """Background preservation and mask-image consistency (see the module docstring).

    Args:
        out: generated ``image`` and ``mask`` (N, 1, S, S) in [-1, 1].
        base: (N, 1, S, S) background patches the nodules were generated on.
        real_image, real_mask: (M, 1, S, S) real nodules in [-1, 1] and their bool masks.
        hu_range: the HU window of [-1, 1].

    Returns:
        ``{"background_preservation": {...}, "mask_image_consistency": {...}}``.
    """
    per_unit = hu_per_unit(hu_range)  # HU per unit of the [-1, 1] scale
    inside = out["mask"] > 0
    diff_hu = (out["image"] - base).abs() * per_unit
    n_in, n_out = inside.flatten(1).sum(1), (~inside).flatten(1).sum(1)
    outside_l1 = (diff_hu * (~inside)).flatten(1).sum(1) / n_out.clamp(min=1)
    inside_l1 = torch.where(n_in > 0, (diff_hu * inside).flatten(1).sum(1) / n_in.clamp(min=1), torch.nan)
    contrast = _inside_minus_outside(to_hu(out["image"], hu_range), inside)
    gen_contrast = torch.where((n_in > 0) & (n_out > 0), contrast, torch.nan)
    real_contrast = _inside_minus_outside(to_hu(real_image.double(), hu_range), real_mask)
    any_inside = bool((n_in > 0).any())
    return {
        "background_preservation": {
            "l1_outside_mask_hu": float(np.nanmean(outside_l1.numpy())),
            "l1_outside_mask_normalised": float(np.nanmean(outside_l1.numpy())) / per_unit,
        },
        "mask_image_consistency": {
            "l1_inside_mask_hu": float(np.nanmean(inside_l1.numpy())) if any_inside else float("nan"),
            "contrast_inside_minus_outside_hu": float(np.nanmean(gen_contrast.numpy())) if any_inside else float("nan"),
            "real_contrast_inside_minus_outside_hu": float(real_contrast.mean()),
            "empty_mask_fraction": float((n_in == 0).float().mean()),
        },
    }


def _real_nodules(items: Sequence[Mapping[str, Any]], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 1, S, S) images in [-1, 1] and bool masks of prepared items."""
    image = torch.as_tensor(np.stack([np.load(it["image"]).reshape(1, image_size, image_size) for it in items]))
    mask = torch.as_tensor(np.stack([np.load(it["mask"]).reshape(1, image_size, image_size) for it in items])) > 0
    return image, mask


def planted_recovery(
    network: torch.nn.Module,
    folder: Path,
    genes: Sequence[str],
    truth_path: str | os.PathLike,
    generation: Mapping[str, Any],
    *,
    map_split: str = "all",
    map_latents: int = 2,
    map_delta: float = 0.5,
    map_perturbation: str = "coexpression",
    main_component_only: bool = False,
    hu_range: Sequence[float],
    truth: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Recovery of the demo's planted gene-phenotype associations by both radiogenomic maps.

    Args:
        network: the generator.
        folder: prepared dataset folder.
        genes: the model's genes (gene transform order).
        truth_path: the demo's ``demo_truth.json``.
        generation: ``image_size``, ``latent_size``, ``seed``, ``base_index``, ``batch_size``, ``device``
            and ``progress`` of :func:`evaluate_generator`.
        map_split, map_latents, map_delta: patients, latents per patient and expression step of the
            synthesis map.
        map_perturbation: ``"coexpression"`` or ``"gene"``, as ``run radiogenomic_map``'s ``perturbation``.
        main_component_only: measure only the largest connected component of each mask.
        hu_range: the HU window of [-1, 1].
        truth: the contents of ``truth_path`` when the caller has already read it (read here when None).

    Returns:
        Scores per pairing, their means and the main-driver agreement, for both maps.
    """
    from rggan.radiogenomic.perturbation import check_perturbation, coexpression_slopes
    from rggan.radiogenomic_map import (
        conventional_map,
        load_truth,
        main_driver_agreement,
        real_features,
        score_against_truth,
        summarise_scores,
        synthesis_map,
    )

    g = generation
    truth = load_truth(truth_path) if truth is None else truth
    map_requests = build_inputs(
        folder, num_genes=len(genes), image_size=g["image_size"], latent_size=g["latent_size"],
        num_samples=map_latents, seed=g["seed"], split=map_split, base_index=g["base_index"],
    )  # fmt: skip
    map_items = prepared_items(folder, map_split)
    expression = pd.DataFrame(
        np.stack([np.load(it["rna"]).astype(np.float64).reshape(-1) for it in map_items]),
        index=[str(it["patient"]) for it in map_items],
        columns=genes,
    )
    coexpression = check_perturbation(map_perturbation, "map_perturbation") == "coexpression"
    slopes = coexpression_slopes(expression) if coexpression else None
    synth = synthesis_map(
        network, map_requests, genes, delta=map_delta, coexpression=slopes, batch_size=max(2, 2 * g["batch_size"]),
        device=g["device"], progress=g["progress"], main_component_only=main_component_only, hu_range=hu_range,
    )  # fmt: skip
    map_real = real_features(map_items, hu_range)
    conv = conventional_map(map_real, expression)
    s_syn = score_against_truth(synth["effect"], truth, expression=expression)
    s_conv = score_against_truth(conv["rho"], truth, expression=expression)
    return {
        "truth_file": str(truth_path),
        "map_split": map_split,
        "map_latents": map_latents,
        "delta": map_delta,
        "perturbation": map_perturbation,
        "summary": {"synthesis": summarise_scores(s_syn), "conventional": summarise_scores(s_conv)},
        "synthesis": s_syn.to_dict(orient="records"),
        "conventional": s_conv.to_dict(orient="records"),
        "main_drivers": {
            "synthesis": main_driver_agreement(synth["effect"], truth, feature_scale=map_real.std().to_dict()),
            "conventional": main_driver_agreement(conv["rho"], truth),
        },
    }


@torch.no_grad()
def evaluate_generator(
    network: torch.nn.Module,
    dataset_dir: str | os.PathLike,
    *,
    latent_size: int,
    image_size: int,
    split: str = "validation",
    num_samples: int = 16,
    seed: int = 12345,
    base_index: int | str = 0,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    truth_file: str | os.PathLike | None = "auto",
    map_split: str = "all",
    map_latents: int = 2,
    map_delta: float = 0.5,
    map_perturbation: str = "coexpression",
    progress: bool = False,
    main_component_only: bool = False,
    linear_reference: bool = True,
) -> dict[str, Any]:
    """All metrics (see the module docstring) as a JSON-ready dict plus the feature tables.

    Args:
        network: the generator.
        dataset_dir: prepared dataset folder.
        latent_size, image_size: the generator's sizes.
        split: the held-out patients (a prepared split).
        num_samples: nodules (latents) per patient.
        seed, base_index: latent seed and background patch (:func:`rggan.inputs.build_inputs`).
        batch_size, device, progress: how the generator runs (:func:`rggan.generation.generate`).
        truth_file: ``demo_truth.json``, ``"auto"`` (look beside the dataset) or None (no map scores).
        map_split, map_latents, map_delta, map_perturbation: see :func:`planted_recovery`.
        main_component_only: measure only the largest connected component of each mask.
        linear_reference: also score the genes' linear read-out (``patient_fidelity_linear``, seven lasso fits;
            a validation step during training leaves it out, since it does not change with the generator).

    Returns:
        ``{"metrics": {...}, "generated_features": DataFrame, "real_features": DataFrame}``.
    """
    from rggan.data.rna import GeneTransform
    from rggan.radiogenomic_map import real_features, resolve_truth

    folder = Path(dataset_dir)
    genes = GeneTransform.load(folder / "gene_transform.json").genes
    generation = {"image_size": image_size, "latent_size": latent_size, "seed": seed, "base_index": base_index,
                  "batch_size": batch_size, "device": device, "progress": progress}  # fmt: skip
    requests = build_inputs(
        folder, num_genes=len(genes), image_size=image_size, latent_size=latent_size, num_samples=num_samples,
        seed=seed, split=split, base_index=base_index,
    )  # fmt: skip
    out = generate(network, requests, batch_size=batch_size, device=device, progress=progress)
    spacing = torch.tensor([r["spacing"] for r in requests], dtype=torch.float64)
    hu_range = hu_range_of(folder)
    feats = nodule_features(
        out["image"], out["mask"], spacing, main_component_only=main_component_only, hu_range=hu_range
    )
    gen = features_frame(feats, [r["id"] for r in requests])
    gen.insert(0, "patient", [r["patient"] for r in requests])
    gen.index.name = "id"
    items = prepared_items(folder, split)
    real = real_features(items, hu_range)
    real_image, real_mask = _real_nodules(items, image_size)
    base = torch.as_tensor(np.stack([r["base"] for r in requests]))
    patients = [r["patient"] for r in requests]
    prior = prior_fidelity(network, {r["patient"]: r["rna"] for r in requests}, real, gen)  # rna already loaded
    metrics: dict[str, Any] = {
        "patients": len(items),
        "split": split,
        "samples_per_patient": num_samples,
        "generated": len(requests),
        "feature_realism": feature_realism(gen, real),
        "patient_fidelity_spearman": patient_fidelity(gen, real),
        "patient_fidelity_linear": linear_fidelity(folder, real, split) if linear_reference else None,
        "patient_fidelity_prior": None if prior is None else prior["read_out"],
        "prior_followed": None if prior is None else prior["followed"],
        **intensity_metrics(out, base, real_image, real_mask, hu_range),
        "diversity": diversity_metrics(out["image"], out["mask"], patients, real_image, real_mask),
    }
    truth_path = resolve_truth(truth_file, folder)
    if truth_path is not None:
        from rggan.radiogenomic.truth import load_truth

        truth = load_truth(truth_path)  # read once: the recovery scores and the ceiling
        metrics["planted_recovery"] = planted_recovery(
            network, folder, genes, truth_path, generation, map_split=map_split, map_latents=map_latents,
            map_delta=map_delta, map_perturbation=map_perturbation, main_component_only=main_component_only,
            hu_range=hu_range, truth=truth,
        )  # fmt: skip
        metrics["patient_fidelity_ceiling"] = fidelity_ceiling(real, truth)
    return {"metrics": metrics, "generated_features": gen, "real_features": real}


def key_metric(metrics: Mapping[str, Any], features: Sequence[str] = KEY_FEATURES) -> float:
    """Model-selection score: mean patient fidelity minus mean W1/SD over ``features``.

    Both terms are in comparable units (a Spearman correlation, a distance in real SDs), so a generator
    scores high only when its held-out nodules are both realistic (W1/SD near 0) and patient-specific
    (fidelity near 1). W1/SD is capped at 2 so one broken feature does not dominate. NaN (e.g. empty
    masks) counts as the worst value of its term.

    Args:
        metrics: the metrics of :func:`evaluate_generator`.
        features: the features averaged.

    Returns:
        The score (higher is better; at most 1).
    """
    fid = [metrics["patient_fidelity_spearman"].get(f, float("nan")) for f in features]
    w1 = [metrics["feature_realism"][f]["w1_over_sd"] for f in features]
    fid = [v if np.isfinite(v) else -1.0 for v in fid]
    w1 = [min(v, 2.0) if np.isfinite(v) else 2.0 for v in w1]
    return float(np.mean(fid) - np.mean(w1))


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers of :func:`evaluate_generator`'s metrics.

    Args:
        metrics: the metrics of :func:`evaluate_generator`.

    Returns:
        A flat ``{name: float}``: the key metric, fidelity and W1/SD per feature, background L1, empty-mask
        fraction, contrast, MS-SSIM and mask Dice.
    """
    out = {"key_metric": key_metric(metrics)}
    out.update({f"fidelity/{f}": v for f, v in metrics["patient_fidelity_spearman"].items()})
    out.update({f"w1_over_sd/{f}": v["w1_over_sd"] for f, v in metrics["feature_realism"].items()})
    out["background_l1_hu"] = metrics["background_preservation"]["l1_outside_mask_hu"]
    out["empty_mask_fraction"] = metrics["mask_image_consistency"]["empty_mask_fraction"]
    out["contrast_hu"] = metrics["mask_image_consistency"]["contrast_inside_minus_outside_hu"]
    out["ms_ssim"] = metrics["diversity"]["ms_ssim"]
    out["mask_dice"] = metrics["diversity"]["mask_dice"]
    return {k: float(v) for k, v in out.items()}
