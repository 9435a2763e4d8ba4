"""The planted answer of the demo: nodule phenotypes that are linear functions of a few driver genes.

Each phenotype is ``clip(intercept + sum(effect * z) + noise, lo, hi)`` where ``z`` is a driver gene's
standardised log2 expression over the patients of the RNA table. The definitions go into ``demo_truth.json``,
so a radiogenomic map can be scored against them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rggan.demo.expression import Expression

__all__ = ["PHENOTYPES", "DRIVER_GENES", "planted_phenotypes"]

#: phenotype -> (description, unit, range (lo, hi), [(driver gene, weight)])
PHENOTYPES: dict[str, tuple[str, str, tuple[float, float], tuple[tuple[str, float], ...]]] = {
    "radius_mm": ("mean nodule radius before margin modulation", "mm", (16.8, 22.0),
                  (("MKI67", 0.75), ("LRIG1", -0.75))),
    "mean_hu": ("mean HU inside the nodule", "HU", (-350.0, 50.0), (("POSTN", 0.7), ("HPGD", -0.7))),
    "irregularity": ("margin irregularity: relative amplitude of lobulation + spiculation of the radius", "1",
                     (0.0, 0.3), (("VIM", 0.7), ("CDH2", 0.7))),
    "texture_hu": ("HU standard deviation inside the nodule", "HU", (15.0, 110.0), (("SPI1", 0.7), ("GDF15", 0.7))),
}  # fmt: skip
#: The driver genes in the order of :data:`PHENOTYPES`.
DRIVER_GENES: tuple[str, ...] = tuple(g for _, _, _, d in PHENOTYPES.values() for g, _ in d)
_PHENOTYPE_NOISE = 0.25  # in units of the driver-score SD


def _definition(
    name: str, expr: Expression, scale: float, intercept: float, noise_sd: float, stats: list[tuple[float, float]]
) -> dict[str, Any]:
    """The truth-file entry of phenotype ``name``."""
    desc, unit, (lo, hi), drivers = PHENOTYPES[name]
    return {
        "description": desc,
        "unit": unit,
        "model": "value = clip(intercept + sum(effect * z) + noise, lo, hi); "
        "z = (log2(FPKM + 1) - mean_log2) / sd_log2 over the patients of the RNA table",
        "intercept": round(intercept, 6),
        "range": [lo, hi],
        "noise_sd": round(noise_sd, 6),
        "drivers": [
            {
                "gene": g,
                "sign": 1 if wt > 0 else -1,
                "weight": wt,
                "effect": round(scale * wt, 6),
                "mean_log2": round(m, 6),
                "sd_log2": round(s, 6),
                "module": next((mn for mn, mod in expr.modules.items() if g in mod), None),
            }
            for (g, wt), (m, s) in zip(drivers, stats)
        ],
    }


def planted_phenotypes(
    expr: Expression, rna_cols: list[int], n_patients: int, rng: np.random.Generator
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Phenotype definitions (for the truth file) and realised values for every simulated patient.

    The scale is chosen so that the noise-free range spans about ±2.2 SD of the score inside ``(lo, hi)``.

    Args:
        expr: the simulated expression.
        rna_cols: the simulated-patient columns of the RNA table (the standardisation uses these).
        n_patients: number of simulated patients.
        rng: draws the phenotype noise.

    Returns:
        ``(definitions, values)``: phenotype -> truth-file entry, and phenotype -> ``(n_patients,)`` values.
    """
    definitions: dict[str, Any] = {}
    values: dict[str, np.ndarray] = {}
    row = {g: i for i, g in reversed(list(enumerate(expr.genes)))}  # first occurrence
    for name, (_, _, (lo, hi), drivers) in PHENOTYPES.items():
        zs, stats = [], []
        for g, _ in drivers:
            x = expr.log2[row[g]]
            mean, sd = float(x[rna_cols].mean()), float(x[rna_cols].std())
            sd = sd if sd > 1e-6 else 1.0  # a single RNA patient
            zs.append((x - mean) / sd)
            stats.append((mean, sd))
        w = np.array([wt for _, wt in drivers])
        score = w @ np.array(zs)
        sd_score = float(score[rna_cols].std())
        sd_score = sd_score if sd_score > 1e-6 else 1.0
        half = (hi - lo) / 2.0
        scale = half / (2.2 * math.hypot(sd_score, _PHENOTYPE_NOISE * sd_score))
        intercept = (lo + hi) / 2.0
        noise_sd = scale * _PHENOTYPE_NOISE * sd_score
        raw = intercept + scale * score + noise_sd * rng.standard_normal(n_patients)
        values[name] = np.clip(raw, lo, hi)
        definitions[name] = _definition(name, expr, scale, intercept, noise_sd, stats)
    return definitions, values
