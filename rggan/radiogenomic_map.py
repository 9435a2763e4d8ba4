"""Radiogenomic maps (spec §8): correlation via synthesis, the conventional Spearman map, and their scores.

* :func:`synthesis_map`: for each gene (or gene module), shift its normalised (z-scored) value by
  ``+delta`` and ``-delta`` for every patient, with the latent ``z`` and the background patch fixed,
  synthesise both, measure the nodule features (:mod:`rggan.features`) and report
  ``effect = (feature(+delta) - feature(-delta)) / (2 delta)`` averaged over patients and latents
  (central finite differences; no gradients). Units: feature unit per 1 SD of the gene's
  (log2) expression. Pairs where either nodule has an empty mask are left out of the average.
* :func:`conventional_map`: Spearman correlation, across patients, of the REAL nodules' features (from
  the prepared images/masks) with the prepared expression vectors.
* :func:`score_against_truth`: on demo data, compare a map with the planted gene -> phenotype effects of
  ``demo_truth.json`` (phenotype <-> feature pairs in :data:`PHENOTYPE_FEATURES`).
* :func:`run_radiogenomic_map`: the whole workflow (``bundle/configs/radiogenomic_map.yaml``), writing
  CSV / JSON / PNG heatmaps atomically (staging folder, moved into place at the end).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rggan.errors import InputError
from rggan.features import FEATURE_NAMES, FEATURE_UNITS, nodule_features
from rggan.intensity import DEFAULT_HU_RANGE, hu_range_of

__all__ = [
    "PHENOTYPE_FEATURES",
    "synthesis_map",
    "bootstrap_ci",
    "real_features",
    "conventional_map",
    "find_truth",
    "resolve_truth",
    "load_truth",
    "planted_effects",
    "score_against_truth",
    "phenotype_scales",
    "expected_associations",
    "summarise_scores",
    "map_agreement",
    "main_driver_agreement",
    "top_genes",
    "heatmap_png",
    "run_radiogenomic_map",
]

logger = logging.getLogger(__name__)

#: demo phenotype -> features that measure it (the first one is the main pairing)
PHENOTYPE_FEATURES: dict[str, tuple[str, ...]] = {
    "radius_mm": ("equivalent_radius_mm", "area_mm2"),
    "mean_hu": ("mean_hu",),
    "texture_hu": ("std_hu",),
    "irregularity": ("irregularity",),
}


# ---------------------------------------------------------------------------------------------- synthesis map


def _units(
    gene_names: Sequence[str], genes: Sequence[str] | None, modules: Mapping[str, Sequence[str]] | None
) -> tuple[list[str], list[list[int]]]:
    """Names and gene-index lists of the perturbation units (genes, or modules of genes)."""
    index = {g: i for i, g in enumerate(gene_names)}
    if isinstance(genes, str):  # a single gene from the command line
        genes = [genes]
    if modules:
        names, idx = [], []
        for name, members in modules.items():
            cols = [index[g] for g in members if g in index]
            if cols:
                names.append(str(name))
                idx.append(cols)
            else:
                logger.warning("module %s has no gene of the model; skipped", name)
        if not names:
            raise InputError("no module has a gene of the model")
        return names, idx
    chosen = list(gene_names) if genes is None else [str(g) for g in genes]
    unknown = [g for g in chosen if g not in index]
    if unknown:
        raise InputError(f"{len(unknown)} genes are not model genes: {', '.join(unknown[:20])}")
    return chosen, [[index[g]] for g in chosen]


def _check_map_inputs(
    requests: Sequence[Mapping[str, Any]],
    gene_names: Sequence[str],
    delta: float,
    genes: Sequence[str] | None,
    modules: Mapping[str, Sequence[str]] | None,
) -> tuple[list[str], list[list[int]]]:
    """Validate a map's arguments (both map methods); returns the unit names and their gene columns."""
    if delta <= 0:
        raise InputError(f"delta must be > 0, got {delta}")
    if not requests:
        raise InputError("no patient to compute the synthesis map on")
    return _units(gene_names, genes, modules)


def _collate(
    requests: Sequence[Mapping[str, Any]], num_genes: int, device: str | torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rna, z, base, spacing)`` batches of the request dicts on ``device`` (spacing in float64)."""
    rna = torch.as_tensor(np.stack([np.asarray(r["rna"], np.float32) for r in requests])).to(device)
    if rna.shape[1] != num_genes:
        raise InputError(f"the expression vectors have {rna.shape[1]} genes, gene_names {num_genes}")
    z = torch.as_tensor(np.stack([np.asarray(r["z"], np.float32) for r in requests])).to(device)
    base = torch.as_tensor(np.stack([np.asarray(r["base"], np.float32) for r in requests])).to(device)
    spacing_np = np.stack([np.asarray(r["spacing"], np.float64) for r in requests])
    if not (spacing_np > 0).all():  # on the host, once: a clear error, not a device-side assert in a batch
        raise InputError("every request's spacing must be positive")
    spacing = torch.as_tensor(spacing_np).to(device)
    return rna, z, base, spacing


def _mean_sem(s1: torch.Tensor, s2: torch.Tensor, cnt: torch.Tensor, names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """``{"effect", "sem", "n"}`` DataFrames (units × features) from per-unit sums, sums of squares and counts."""
    mean = torch.where(cnt > 0, s1 / cnt.clamp(min=1), torch.full_like(s1, float("nan")))
    var = torch.where(
        cnt > 1, (s2 - cnt * mean.nan_to_num() ** 2) / (cnt - 1).clamp(min=1), torch.full_like(s1, float("nan"))
    )
    sem = (var.clamp(min=0) / cnt.clamp(min=1)).sqrt()
    frame = lambda t: pd.DataFrame(t.cpu().numpy(), index=pd.Index(names, name="gene"), columns=list(FEATURE_NAMES))  # noqa: E731
    return {"effect": frame(mean), "sem": frame(sem), "n": frame(cnt)}


@torch.no_grad()
def synthesis_map(
    network: torch.nn.Module,
    requests: Sequence[Mapping[str, Any]],
    gene_names: Sequence[str],
    *,
    delta: float = 0.5,
    genes: Sequence[str] | None = None,
    modules: Mapping[str, Sequence[str]] | None = None,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = False,
    main_component_only: bool = False,
    hu_range: Sequence[float] = DEFAULT_HU_RANGE,
) -> dict[str, pd.DataFrame]:
    """Correlation via synthesis: the genes (or modules) × features table of finite-difference effects.

    Args:
        network: the generator ``G(rna, z, base)`` (run in eval mode).
        requests: dicts with ``rna`` (G,), ``z`` (L,), ``base`` (1,S,S), ``spacing`` (2,) — e.g.
            :func:`rggan.inference.build_inputs` (one per patient and latent).
        gene_names: names of the G expression columns (the gene transform's genes).
        delta: the shift, in normalised (z-score) units; each unit is evaluated at ``rna ± delta``.
        genes: subset of genes to perturb (default: all); ignored when ``modules`` is given.
        modules: ``{name: [genes]}``: perturb each module's genes together (by ``delta`` each).
        batch_size: generations per forward pass (half ``+delta``, half ``-delta``).
        main_component_only: measure only the generated mask's main connected component
            (:func:`rggan.features.main_component`).
        hu_range: the HU window of the prepared dataset the generator was trained on
            (:func:`rggan.intensity.hu_range_of`): the generated images are turned back into HU with it.

    Returns:
        ``{"effect": DataFrame units × features, "sem": standard error of the mean, "n": valid pairs,
        "per_patient": (units, patients, features) float64 tensor of each patient's mean effect (NaN where
        none of its pairs was valid), "patients": the patient labels of its second axis}``.
    """
    names, unit_idx = _check_map_inputs(requests, gene_names, delta, genes, modules)
    device = device or next(network.parameters()).device
    was_training = network.training
    network.eval()
    rna, z, base, spacing = _collate(requests, len(gene_names), device)
    n_req, n_units, n_feat = rna.shape[0], len(names), len(FEATURE_NAMES)
    labels = [str(r.get("patient", i)) for i, r in enumerate(requests)]
    patients = list(dict.fromkeys(labels))
    pid = torch.tensor([patients.index(p) for p in labels], device=device)
    n_pat = len(patients)
    p1 = torch.zeros(n_units * n_pat, n_feat, dtype=torch.float64, device=device)  # per (unit, patient) sums
    pc = torch.zeros_like(p1)
    shift = torch.zeros(n_units, rna.shape[1], device=device)
    for u, cols in enumerate(unit_idx):
        shift[u, cols] = float(delta)

    total = n_units * n_req
    half = max(1, int(batch_size) // 2)
    s1 = torch.zeros(n_units, n_feat, dtype=torch.float64, device=device)
    s2 = torch.zeros_like(s1)
    cnt = torch.zeros_like(s1)
    starts = range(0, total, half)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"synthesis map ({n_units} units x {n_req} samples)", unit="batch", disable=None)
    try:
        for s in starts:
            flat = torch.arange(s, min(s + half, total), device=device)
            u, r = flat // n_req, flat % n_req
            d = shift[u]
            out = network(torch.cat([rna[r] + d, rna[r] - d]), torch.cat([z[r], z[r]]), torch.cat([base[r], base[r]]))
            sp = torch.cat([spacing[r], spacing[r]])
            f = nodule_features(out.image, out.mask, sp, main_component_only=main_component_only, hu_range=hu_range)
            vals = torch.stack([f[k] for k in FEATURE_NAMES], dim=1)  # (2b, F)
            b = flat.shape[0]
            eff = (vals[:b] - vals[b:]) / (2.0 * delta)
            ok = torch.isfinite(eff)
            eff0 = torch.where(ok, eff, torch.zeros_like(eff))
            s1.index_add_(0, u, eff0)
            s2.index_add_(0, u, eff0**2)
            cnt.index_add_(0, u, ok.to(torch.float64))
            p1.index_add_(0, u * n_pat + pid[r], eff0)
            pc.index_add_(0, u * n_pat + pid[r], ok.to(torch.float64))
    finally:
        network.train(was_training)
    per_patient = torch.where(pc > 0, p1 / pc.clamp(min=1), torch.full_like(p1, float("nan")))
    return {
        **_mean_sem(s1, s2, cnt, names),
        "per_patient": per_patient.view(n_units, n_pat, n_feat).cpu(),
        "patients": patients,
    }


def bootstrap_ci(
    per_patient: torch.Tensor,
    index: Sequence[str],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Percentile bootstrap confidence interval of each map cell, resampling patients.

    Each bootstrap replicate draws the patients with replacement and averages their per-patient effects
    (:func:`synthesis_map`'s ``per_patient``), all cells at once (one matrix product per chunk of
    replicates). Patients are the unit of resampling because they, not the latents, are the independent
    observations: the interval covers the uncertainty from which patients happened to be in the cohort,
    for this trained generator (training-seed variation is reported separately).

    Args:
        per_patient: (units, patients, features) per-patient mean effects (NaN: no valid pair).
        index: the unit names (rows of the result).
        n_boot: bootstrap replicates.
        level: coverage of the interval.

    Returns:
        ``{"lo": units × features, "hi": units × features}``.
    """
    u, p, f = per_patient.shape
    x = per_patient.permute(1, 0, 2).reshape(p, u * f).double()
    ok = torch.isfinite(x)
    x0 = torch.where(ok, x, torch.zeros_like(x))
    gen = torch.Generator().manual_seed(int(seed))
    draws = []
    for start in range(0, n_boot, 200):
        b = min(200, n_boot - start)
        w = torch.multinomial(torch.full((b, p), 1.0 / p, dtype=torch.float64), p, replacement=True, generator=gen)
        counts = torch.zeros(b, p, dtype=torch.float64).scatter_add_(1, w, torch.ones(b, p, dtype=torch.float64))
        draws.append((counts @ x0) / (counts @ ok.double()).clamp(min=1e-12))
    boot = torch.cat(draws).reshape(n_boot, u, f).numpy()
    q = (1.0 - float(level)) / 2.0
    lo, hi = np.nanquantile(boot, q, axis=0), np.nanquantile(boot, 1.0 - q, axis=0)
    idx = pd.Index(list(index), name="gene")
    return {
        "lo": pd.DataFrame(lo, index=idx, columns=list(FEATURE_NAMES)),
        "hi": pd.DataFrame(hi, index=idx, columns=list(FEATURE_NAMES)),
    }


# ---------------------------------------------------------------------------------------------- conventional map


def real_features(items: Sequence[Mapping[str, Any]], hu_range: Sequence[float] | None = None) -> pd.DataFrame:
    """Features of the real nodules of prepared datalist items (absolute ``image``/``mask`` paths, ``spacing``).

    ``hu_range``: the prepared dataset's HU window (``rggan.intensity.hu_range_of``); None: the default one.
    """
    if not items:
        raise InputError("no prepared sample to measure")

    def load(path: str) -> np.ndarray:
        arr = np.load(path).astype(np.float32)
        return arr.reshape(1, *arr.shape[-2:])

    images = np.stack([load(it["image"]) for it in items])
    masks = np.stack([load(it["mask"]) for it in items])
    spacing = torch.tensor([[float(v) for v in it.get("spacing", (1.0, 1.0))] for it in items], dtype=torch.float64)
    kwargs = {} if hu_range is None else {"hu_range": hu_range}
    f = nodule_features(torch.from_numpy(images), torch.from_numpy(masks), spacing, **kwargs)
    return pd.DataFrame(
        {k: f[k].numpy() for k in FEATURE_NAMES}, index=pd.Index([str(it["patient"]) for it in items], name="patient")
    )


def _spearman_matrix(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman rho and two-sided p (t approximation, as scipy.stats.spearmanr) of every column pair."""
    from scipy import stats

    rx = pd.DataFrame(x).rank().to_numpy()
    ry = pd.DataFrame(y).rank().to_numpy()
    rx = rx - rx.mean(0)
    ry = ry - ry.mean(0)
    nx = np.sqrt((rx**2).sum(0))
    ny = np.sqrt((ry**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx.T @ ry) / np.outer(nx, ny)
        n = x.shape[0]
        t = rho * np.sqrt((n - 2) / np.clip(1 - rho**2, 1e-300, None))
    p = 2 * stats.t.sf(np.abs(t), n - 2)
    p = np.where(np.isfinite(rho), p, np.nan)
    return rho, p


def conventional_map(
    features: pd.DataFrame, expression: pd.DataFrame, *, genes: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Spearman correlation of real-nodule features with gene expression across patients.

    Args:
        features: patients × features (:func:`real_features`).
        expression: patients × genes (same patients; rank-based, so the transform does not matter).
        genes: optional subset of genes (rows of the result).

    Returns:
        ``{"rho": genes × features, "p": genes × features, "q": genes × features}``; ``q`` are the
        Benjamini-Hochberg FDR-adjusted p-values (``scipy.stats.false_discovery_control``) over the genes
        of each feature column; constant columns give NaN.
    """
    common = [p for p in features.index if p in expression.index]
    if len(common) < 3:
        raise InputError(f"the conventional map needs >= 3 patients with features and expression, got {len(common)}")
    expr = expression.loc[common] if genes is None else expression.loc[common, list(genes)]
    feats = features.loc[common, list(FEATURE_NAMES)]
    ok = feats.notna().all(axis=1).to_numpy()
    rho, p = _spearman_matrix(expr.to_numpy(np.float64)[ok], feats.to_numpy(np.float64)[ok])
    from scipy.stats import false_discovery_control

    q = np.full_like(p, np.nan)
    for j in range(p.shape[1]):
        ok_p = np.isfinite(p[:, j])
        if ok_p.any():
            q[ok_p, j] = false_discovery_control(p[ok_p, j], method="bh")
    idx = pd.Index(list(expr.columns), name="gene")
    return {
        "rho": pd.DataFrame(rho, index=idx, columns=list(FEATURE_NAMES)),
        "p": pd.DataFrame(p, index=idx, columns=list(FEATURE_NAMES)),
        "q": pd.DataFrame(q, index=idx, columns=list(FEATURE_NAMES)),
    }


# ---------------------------------------------------------------------------------------------- truth


def find_truth(dataset_dir: str | os.PathLike | None) -> Path | None:
    """``demo_truth.json`` beside the raw demo download a prepared folder was made from (via its report.json)."""
    if dataset_dir is None:
        return None
    folder = Path(dataset_dir)
    candidates = [folder / "demo_truth.json", folder.parent / "demo_truth.json"]
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        if report.get("input"):
            candidates.insert(0, Path(report["input"]) / "demo_truth.json")
    except (OSError, ValueError, AttributeError):
        pass
    return next((c for c in candidates if c.is_file()), None)


def resolve_truth(truth_file: Any, dataset_dir: str | os.PathLike | None) -> Path | None:
    """``"auto"`` -> :func:`find_truth`; None / "none" / "null" / "false" / "" -> None; else the path (must exist)."""
    if truth_file is None or str(truth_file).strip().lower() in ("", "none", "null", "false"):
        return None
    if str(truth_file) == "auto":
        return find_truth(dataset_dir)
    path = Path(truth_file)
    if not path.is_file():
        raise InputError(f"demo truth file {path} not found (pass --truth_file auto, a path, or null)")
    return path


def load_truth(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``demo_truth.json`` (format ``rggan-demo-truth``)."""
    try:
        truth = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the demo truth {path}: {exc}") from exc
    if not isinstance(truth, dict) or truth.get("format") != "rggan-demo-truth" or "phenotypes" not in truth:
        raise InputError(f"{path} is not a demo truth file (rggan demo-data writes demo_truth.json)")
    return truth


def planted_effects(truth: Mapping[str, Any], genes: Sequence[str]) -> pd.DataFrame:
    """genes × phenotypes planted effects (phenotype unit per SD of log2 expression; 0 for non-drivers)."""
    phen = list(truth["phenotypes"])
    out = pd.DataFrame(0.0, index=pd.Index(list(genes), name="gene"), columns=phen)
    for name, spec in truth["phenotypes"].items():
        for d in spec.get("drivers", []):
            if d["gene"] in out.index:
                out.loc[d["gene"], name] = float(d["effect"])
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    from scipy import stats

    return float(stats.spearmanr(a[ok], b[ok]).statistic)


def expected_associations(truth: Mapping[str, Any], expression: pd.DataFrame) -> pd.DataFrame:
    """genes × phenotypes association implied by the planted drivers and the genes' co-expression.

    ``expected[g, p] = sum_d effect(d, p) * corr(g, d)`` over the drivers d of phenotype p, with the
    Pearson correlation of the (normalised) expression across the patients of ``expression``. It is the
    change of p expected per +1 SD of gene g when g carries its co-expressed drivers with it, so it is
    non-zero for the drivers' module partners too, and has no ties (unlike the sparse planted vector).
    """
    genes = list(expression.columns)
    x = expression.to_numpy(np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    corr = x.T @ x / max(1, x.shape[0])
    index = {g: i for i, g in enumerate(genes)}
    out = pd.DataFrame(0.0, index=pd.Index(genes, name="gene"), columns=list(truth["phenotypes"]))
    for name, spec in truth["phenotypes"].items():
        for d in spec.get("drivers", []):
            if d["gene"] in index:
                out[name] += float(d["effect"]) * corr[:, index[d["gene"]]]
    return out


def phenotype_scales(truth: Mapping[str, Any]) -> dict[str, float]:
    """SD of each planted phenotype over the truth's patients (fallback: a quarter of its range, or 1)."""
    out = {}
    for name, spec in truth["phenotypes"].items():
        vals = [
            float(p["phenotypes"][name])
            for p in (truth.get("patients") or {}).values()
            if isinstance(p, Mapping) and name in (p.get("phenotypes") or {})
        ]
        sd = float(np.std(vals)) if len(vals) > 2 else 0.0
        if not sd > 0:
            rng = spec.get("range")
            sd = (float(rng[1]) - float(rng[0])) / 4.0 if rng else 1.0
        out[name] = sd
    return out


def main_driver_agreement(
    measured: pd.DataFrame, truth: Mapping[str, Any], *, feature_scale: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Spearman over the planted (driver, phenotype) pairs of standardised planted vs measured effects.

    For every driver d of every phenotype p (main feature f = ``PHENOTYPE_FEATURES[p][0]``): planted
    = effect(d, p) / SD(p) over the truth's patients; measured = map[d, f] / ``feature_scale[f]``
    (e.g. the real feature's SD; default 1, right for correlation maps). One correlation over all pairs:
    it rewards the right sign and the right relative strength of the main drivers, and has no tie ceiling.
    """
    scales = phenotype_scales(truth)
    rows = []
    for phen, feats in PHENOTYPE_FEATURES.items():
        spec = truth["phenotypes"].get(phen)
        if spec is None:
            continue
        f = feats[0]
        fs = float((feature_scale or {}).get(f, 1.0)) or 1.0
        for d in spec.get("drivers", []):
            if d["gene"] in measured.index:
                rows.append(
                    {
                        "phenotype": phen,
                        "feature": f,
                        "gene": d["gene"],
                        "planted_std": float(d["effect"]) / scales[phen],
                        "measured_std": float(measured.loc[d["gene"], f]) / fs,
                    }
                )
    a = np.array([r["planted_std"] for r in rows])
    b = np.array([r["measured_std"] for r in rows])
    return {
        "spearman": _spearman(a, b) if len(rows) else float("nan"),
        "sign_accuracy": float(np.mean(np.sign(a) == np.sign(b))) if len(rows) else float("nan"),
        "n_pairs": len(rows),
        "pairs": rows,
    }


def score_against_truth(
    measured: pd.DataFrame,
    truth: Mapping[str, Any],
    *,
    expression: pd.DataFrame | None = None,
    top_k: int | None = None,
) -> pd.DataFrame:
    """Score a genes × features map against the planted effects, per phenotype <-> feature pairing.

    Columns of the result (one row per (phenotype, feature) of :data:`PHENOTYPE_FEATURES`):

    * ``topk_precision``: fraction of the k genes with the largest ``|measured|`` that are drivers of
      this phenotype (k = ``top_k`` or the number of its drivers);
    * ``sign_accuracy``: fraction of this phenotype's drivers whose measured sign is the planted sign;
    * ``spearman_expected`` (needs ``expression``, patients × genes): Spearman correlation over all
      genes of the map between the measured value and the association expected from the planted
      drivers and the co-expression (:func:`expected_associations`);
    * ``spearman_drivers``: Spearman correlation, over all planted driver genes (of every phenotype)
      present in the map, between the planted effect on this phenotype (0 for the other phenotypes'
      drivers) and the measured value. The tied zeros cap it: with 2 drivers of opposite sign among 8
      and non-zero measured values elsewhere its maximum is 0.764;
    * ``n_drivers``: drivers of this phenotype present in the map; ``drivers``: their values.
    """
    genes = list(measured.index)
    planted = planted_effects(truth, genes)
    all_drivers = [g for g in genes if (planted.loc[g] != 0).any()]
    expected = None
    if expression is not None:
        common = [g for g in genes if g in expression.columns]
        expected = expected_associations(truth, expression[common]).reindex(genes)
    rows = []
    for phen, feats in PHENOTYPE_FEATURES.items():
        if phen not in planted.columns:
            continue
        p = planted[phen]
        drivers = [g for g in genes if p[g] != 0]
        for feat in feats:
            m = measured[feat]
            k = int(top_k) if top_k else len(drivers)
            top = m.abs().sort_values(ascending=False, na_position="last").index[:k]
            row = {
                "phenotype": phen,
                "feature": feat,
                "n_drivers": len(drivers),
                "topk_precision": float(np.mean([g in drivers for g in top])) if k else float("nan"),
                "sign_accuracy": float(np.mean([np.sign(m[g]) == np.sign(p[g]) for g in drivers]))
                if drivers
                else float("nan"),
            }
            if expected is not None:
                row["spearman_expected"] = _spearman(expected[phen].to_numpy(), m.to_numpy())
            row["spearman_drivers"] = _spearman(p[all_drivers].to_numpy(), m[all_drivers].to_numpy())
            row["drivers"] = ", ".join(f"{g} planted {p[g]:+.3g} measured {m[g]:+.3g}" for g in drivers)
            rows.append(row)
    return pd.DataFrame(rows)


def map_agreement(tables: Sequence[pd.DataFrame]) -> dict[str, Any]:
    """Pairwise agreement of genes × features maps (e.g. of several training seeds on the same data).

    Each column is divided by its standard deviation over the genes (features have different units), the
    common genes × features cells are flattened, and every pair of maps is compared by the Spearman
    correlation of the flattened values; per-column Spearman correlations are reported as well.

    Returns:
        ``{"pairs": [{"a", "b", "spearman", "per_feature": {...}}], "min_spearman", "mean_spearman"}``.
    """
    if len(tables) < 2:
        raise InputError("map agreement needs at least two maps")
    genes = sorted(set.intersection(*(set(t.index) for t in tables)))
    cols = [c for c in tables[0].columns if all(c in t.columns for t in tables)]
    std = [t.loc[genes, cols].astype(float) / t.loc[genes, cols].astype(float).std().replace(0, np.nan) for t in tables]
    pairs = []
    for i in range(len(std)):
        for j in range(i + 1, len(std)):
            pairs.append(
                {
                    "a": i,
                    "b": j,
                    "spearman": _spearman(std[i].to_numpy().ravel(), std[j].to_numpy().ravel()),
                    "per_feature": {c: _spearman(std[i][c].to_numpy(), std[j][c].to_numpy()) for c in cols},
                }
            )
    rhos = [p["spearman"] for p in pairs]
    return {
        "genes": len(genes),
        "pairs": pairs,
        "min_spearman": float(np.nanmin(rhos)),
        "mean_spearman": float(np.nanmean(rhos)),
    }


def summarise_scores(scores: pd.DataFrame) -> dict[str, float]:
    """Means over the main pairing of each phenotype (its first feature in :data:`PHENOTYPE_FEATURES`)."""
    main = scores[[PHENOTYPE_FEATURES[p][0] == f for p, f in zip(scores.phenotype, scores.feature)]]
    cols = [c for c in ("spearman_expected", "topk_precision", "sign_accuracy", "spearman_drivers") if c in main]
    return {f"mean_{c}": float(main[c].mean()) for c in cols}


# ---------------------------------------------------------------------------------------------- reporting


def top_genes(table: pd.DataFrame, k: int = 10) -> dict[str, list[dict[str, Any]]]:
    """``{feature: [{"rank", "gene", "value"}, ...]}``: the k rows with the largest |value| per feature."""
    out: dict[str, list[dict[str, Any]]] = {}
    for feat in table.columns:
        col = table[feat].dropna()
        order = col.abs().sort_values(ascending=False).index[:k]
        out[str(feat)] = [{"rank": i + 1, "gene": str(g), "value": float(col[g])} for i, g in enumerate(order)]
    return out


def _top_frame(tops: Mapping[str, list[dict[str, Any]]], map_name: str) -> pd.DataFrame:
    return pd.DataFrame([{"map": map_name, "feature": f, **row} for f, rows in tops.items() for row in rows])


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _colour(v: float) -> tuple[int, int, int]:
    """Diverging blue-white-red for v in [-1, 1]; grey for NaN."""
    if not math.isfinite(v):
        return (200, 200, 200)
    v = max(-1.0, min(1.0, v))
    if v >= 0:
        return (255, int(255 * (1 - v)), int(255 * (1 - v)))
    return (int(255 * (1 + v)), int(255 * (1 + v)), 255)


def heatmap_png(
    table: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str,
    scale: str = "column",
    max_rows: int = 40,
    value_fmt: str = "{:+.3g}",
) -> Path:
    """Write a labelled heatmap of ``table`` (rows = genes, columns = features) with PIL.

    ``scale="column"``: colours are value / max |value| of each column (features have different units);
    ``"none"``: values are used as they are (e.g. correlations in [-1, 1]). The ``max_rows`` rows with
    the largest scaled |value| are shown, largest first; every cell is annotated with its value.
    """
    from PIL import Image, ImageDraw

    t = table.astype(float)
    scaled = t / t.abs().max().replace(0, np.nan) if scale == "column" else t.clip(-1, 1)
    order = scaled.abs().max(axis=1).fillna(-1).sort_values(ascending=False).index[:max_rows]
    t, scaled = t.loc[order], scaled.loc[order]
    font, small, big = _font(13), _font(11), _font(15)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width(text: str, f) -> int:
        box = probe.textbbox((0, 0), text, font=f)
        return box[2] - box[0]

    cell_w = max(72, max(width(value_fmt.format(v), small) for v in np.nan_to_num(t.to_numpy()).ravel()) + 10)
    cell_h = 20
    label_w = max(width(str(g), font) for g in t.index) + 16
    col_labels = [f"{c} [{FEATURE_UNITS.get(str(c), '')}]" if str(c) in FEATURE_UNITS else str(c) for c in t.columns]
    head_h = max(width(c, font) for c in col_labels) + 16
    top = 56
    w = label_w + cell_w * t.shape[1] + 20
    h = top + head_h + cell_h * t.shape[0] + 40
    img = Image.new("RGB", (max(w, 420, width(title, big) + 24), h), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 8), title, fill="black", font=big)
    note = "colour: value / max|value| per column" if scale == "column" else "colour: value in [-1, 1]"
    draw.text((10, 30), note + "; blue < 0 < red", fill=(80, 80, 80), font=small)
    for j, label in enumerate(col_labels):  # rotated column labels
        tw = width(label, font) + 4
        lab = Image.new("RGB", (tw, 18), "white")
        ImageDraw.Draw(lab).text((2, 1), label, fill="black", font=font)
        lab = lab.rotate(90, expand=True)
        img.paste(lab, (label_w + j * cell_w + (cell_w - lab.width) // 2, top + head_h - lab.height - 4))
    for i, gene in enumerate(t.index):
        y = top + head_h + i * cell_h
        draw.text((8, y + 3), str(gene), fill="black", font=font)
        for j in range(t.shape[1]):
            x = label_w + j * cell_w
            sv = float(scaled.iloc[i, j])
            draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=_colour(sv), outline=(235, 235, 235))
            v = float(t.iloc[i, j])
            text = value_fmt.format(v) if math.isfinite(v) else "nan"
            colour = "white" if math.isfinite(sv) and abs(sv) > 0.6 else "black"
            draw.text((x + 5, y + 4), text, fill=colour, font=small)
    path = Path(path)
    img.save(path)
    return path


# ---------------------------------------------------------------------------------------------- workflow


def _write_traversals(network: torch.nn.Module, requests, gene_names, effect, folder: Path, **kwargs: Any) -> None:
    from tensorboardX import SummaryWriter

    from rggan.traversal import traversal_figures

    writer = SummaryWriter(str(folder / "tensorboard"))
    try:
        traversal_figures(network, requests, gene_names, effect, folder, summary_writer=writer, **kwargs)
    finally:
        writer.close()


def _read_modules(modules: Any, truth: Mapping[str, Any] | None) -> dict[str, list[str]] | None:
    if modules is None or modules is False or str(modules) in ("", "None"):
        return None
    if isinstance(modules, Mapping):
        return {str(k): [str(g) for g in v] for k, v in modules.items()}
    if str(modules) == "truth":
        if truth is None:
            raise InputError("modules: truth needs a demo truth file (truth_file)")
        return {k: list(v) for k, v in truth["modules"].items()}
    try:
        data = json.loads(Path(modules).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the gene modules {modules} (JSON {{module: [genes]}}): {exc}") from exc
    return {str(k): [str(g) for g in v] for k, v in data.items()}


def run_radiogenomic_map(
    network: torch.nn.Module,
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    latent_size: int,
    image_size: int,
    split: str = "all",
    num_latents: int = 4,
    seed: int = 12345,
    delta: float = 0.5,
    genes: Sequence[str] | None = None,
    modules: Any = None,
    base_index: int | str = 0,
    batch_size: int = 128,
    truth_file: str | os.PathLike | None = "auto",
    top_k: int = 10,
    heatmap_rows: int = 40,
    device: str | torch.device | None = None,
    progress: bool = True,
    main_component_only: bool = False,
    n_boot: int = 1000,
    ci_level: float = 0.95,
    traversal_top_n: int = 2,
    traversal_patients: int = 4,
    method: str = "exact",
    directions: int | str = 8,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Both maps for a trained generator on a prepared dataset, written to ``output_dir``.

    Outputs (all written to a staging folder first and moved into ``output_dir`` at the end)::

        synthesis_map.csv            units x features, effect per +1 SD of the gene (feature units)
        synthesis_map_sem.csv        standard error of each effect over patients x latents
        synthesis_map_ci_lo.csv/_hi  percentile bootstrap confidence interval of each effect (patients resampled)
        synthesis_map.png            heatmap (colour scaled per feature column)
        conventional_map.csv         genes x features Spearman rho of the real nodules' features
        conventional_map_p.csv       the p-values
        conventional_map_q.csv       Benjamini-Hochberg FDR q-values (per feature column)
        traversal/*.png              traversal strips of each feature's top genes (-2..+2 SD), also in
                                     traversal/tensorboard (TensorBoard images)
        conventional_map.png         heatmap
        real_features.csv            the real nodules' features (patients x features)
        top_genes.csv / .json        top_k genes per feature for both maps
        truth_scores.csv / .json     (demo data) both maps scored against the planted effects
        summary.json                 settings, counts, timing and the scores

    Args:
        method: ``"exact"`` (:func:`synthesis_map`, 2 generations per gene × sample) or ``"fast"``
            (:func:`rggan.fast_map.fast_synthesis_map`, linearised in the gene embedding: ``2 × directions``
            generations per sample whatever the number of genes).
        directions: embedding directions of the fast map (``"all"``: ``embed_dim``).
        truth_file: ``"auto"`` (look beside the raw demo download the prepared folder came from),
            a path, or None (no scoring).
        n_boot, ci_level: bootstrap replicates and coverage of the per-cell confidence intervals
            (:func:`bootstrap_ci`; ``n_boot`` 0: none).
        traversal_top_n, traversal_patients: traversal strips (:mod:`rggan.traversal`) of the top genes of
            each phenotype feature, with this many patients (``traversal_top_n`` 0: none; genes only).
        other arguments: see :func:`synthesis_map` and :func:`rggan.inference.build_inputs`.

    Returns:
        the summary dict (also ``summary.json``).
    """
    import time

    from rggan.data.dataset import load_datalist
    from rggan.data.rna import GeneTransform
    from rggan.inference import as_flag, build_inputs, commit_staging, make_staging

    t0 = time.perf_counter()
    progress, main_component_only = as_flag(progress), as_flag(main_component_only)  # CLI strings too
    genes = [genes] if isinstance(genes, str) else genes
    folder = Path(dataset_dir)
    gene_names = GeneTransform.load(folder / "gene_transform.json").genes
    truth_path = resolve_truth(truth_file, folder)
    truth = load_truth(truth_path) if truth_path is not None else None
    module_map = _read_modules(modules, truth)
    requests = build_inputs(
        folder,
        num_genes=len(gene_names),
        image_size=image_size,
        latent_size=latent_size,
        num_samples=num_latents,
        seed=seed,
        split=split,
        base_index=base_index,
    )
    _units(gene_names, genes, module_map)  # validate before the long part
    items = (
        load_datalist(folder, "training", required=False) + load_datalist(folder, "validation", required=False)
        if split == "all"
        else load_datalist(folder, split)
    )
    hu_range = hu_range_of(folder)  # the window the prepared images (and so G's outputs) were scaled with
    real = real_features(items, hu_range)
    expression = pd.DataFrame(
        np.stack([np.load(it["rna"]).astype(np.float64).reshape(-1) for it in items]),
        index=pd.Index([str(it["patient"]) for it in items], name="patient"),
        columns=gene_names,
    )

    if method not in ("exact", "fast"):
        raise InputError(f"method must be 'exact' or 'fast', got {method!r}")
    map_fn = synthesis_map
    if method == "fast":
        from rggan.fast_map import fast_synthesis_map

        map_fn = functools.partial(fast_synthesis_map, directions=directions)
    synth = map_fn(
        network, requests, gene_names, delta=delta, genes=genes, modules=module_map, batch_size=batch_size,
        device=device, progress=progress, main_component_only=main_component_only, hu_range=hu_range,
    )  # fmt: skip
    ci = None
    if n_boot and "per_patient" in synth:  # the exact map (the fast map has no per-patient effects)
        ci = bootstrap_ci(synth["per_patient"], synth["effect"].index, n_boot=n_boot, level=ci_level, seed=seed)
    conv = conventional_map(real, expression, genes=genes if module_map is None else None)
    scores: dict[str, pd.DataFrame] = {}
    main: dict[str, Any] = {}
    if truth is not None:
        if module_map is None:
            scores["synthesis"] = score_against_truth(synth["effect"], truth, expression=expression)
            main["synthesis"] = main_driver_agreement(synth["effect"], truth, feature_scale=real.std().to_dict())
        scores["conventional"] = score_against_truth(conv["rho"], truth, expression=expression)
        main["conventional"] = main_driver_agreement(conv["rho"], truth)

    staging = make_staging(output_dir)
    try:
        synth["effect"].to_csv(staging / "synthesis_map.csv", float_format="%.6g")
        synth["sem"].to_csv(staging / "synthesis_map_sem.csv", float_format="%.6g")
        conv["rho"].to_csv(staging / "conventional_map.csv", float_format="%.6g")
        conv["p"].to_csv(staging / "conventional_map_p.csv", float_format="%.6g")
        conv["q"].to_csv(staging / "conventional_map_q.csv", float_format="%.6g")
        if ci is not None:
            ci["lo"].to_csv(staging / "synthesis_map_ci_lo.csv", float_format="%.6g")
            ci["hi"].to_csv(staging / "synthesis_map_ci_hi.csv", float_format="%.6g")
        if traversal_top_n and module_map is None:
            _write_traversals(
                network, requests, gene_names, synth["effect"], staging / "traversal",
                top_n=traversal_top_n, num_patients=traversal_patients, device=device,
            )  # fmt: skip
        real.to_csv(staging / "real_features.csv", float_format="%.6g")
        unit = "module" if module_map else "gene"
        heatmap_png(
            synth["effect"], staging / "synthesis_map.png", max_rows=heatmap_rows,
            title=f"Correlation via synthesis: d feature / d {unit} (per +1 SD), delta={delta}, "
            f"{len(items)} patients x {num_latents} latents",
        )  # fmt: skip
        heatmap_png(
            conv["rho"], staging / "conventional_map.png", scale="none", max_rows=heatmap_rows, value_fmt="{:+.2f}",
            title=f"Conventional map: Spearman rho (real nodule features vs expression), {len(items)} patients",
        )  # fmt: skip
        tops = {"synthesis": top_genes(synth["effect"], top_k), "conventional": top_genes(conv["rho"], top_k)}
        pd.concat([_top_frame(v, k) for k, v in tops.items()]).to_csv(staging / "top_genes.csv", index=False)
        (staging / "top_genes.json").write_text(json.dumps(tops, indent=1, allow_nan=True) + "\n")
        score_json = {
            k: {"summary": summarise_scores(v), "main_drivers": main.get(k), "pairings": v.to_dict(orient="records")}
            for k, v in scores.items()
        }
        if scores:
            pd.concat([v.assign(map=k) for k, v in scores.items()]).to_csv(
                staging / "truth_scores.csv", index=False, float_format="%.4g"
            )
            (staging / "truth_scores.json").write_text(json.dumps(score_json, indent=1) + "\n")
        summary = {
            "method": "central finite differences of generated-nodule features, (f(x+delta) - f(x-delta)) / (2 delta), "
            "averaged over patients x latents; z and background fixed"
            + (
                "; fast: the generator linearised in the gene embedding (finite differences along the top "
                "principal directions of the genes' embedding shifts, exact encoder differences)"
                if method == "fast"
                else ""
            ),
            "map_method": method,
            "fast_map": synth.get("info"),
            "delta": delta,
            "units": unit,
            "n_units": int(synth["effect"].shape[0]),
            "patients": len(items),
            "split": split,
            "num_latents": num_latents,
            "seed": seed,
            "base_index": base_index,
            "main_component_only": main_component_only,
            "confidence_interval": f"percentile bootstrap over patients, {n_boot} replicates, level {ci_level}"
            if n_boot
            else None,
            "conventional_q": "Benjamini-Hochberg FDR over the genes of each feature "
            "(scipy.stats.false_discovery_control)",
            "truth_file": str(truth_path) if truth_path else None,
            "truth_scores": score_json,
            "seconds": round(time.perf_counter() - t0, 2),
            **dict(settings or {}),
        }
        (staging / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    commit_staging(staging, output_dir)
    logger.info("radiogenomic maps written to %s (%.1f s)", output_dir, summary["seconds"])
    for k, v in scores.items():
        logger.info(
            "%s map vs planted effects (main pairings): %s; main-driver Spearman %.3f over %d pairs\n%s",
            k, ", ".join(f"{n} {x:.3f}" for n, x in summarise_scores(v).items()), main[k]["spearman"],
            main[k]["n_pairs"], v.drop(columns=["drivers"]).to_string(index=False),
        )  # fmt: skip
    return summary
