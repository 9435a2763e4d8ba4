"""Confidence intervals of the exact synthesis map: a percentile bootstrap over patients."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from rggan.features import FEATURE_NAMES

__all__ = ["bootstrap_ci"]


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
    (the ``per_patient`` output of :func:`rggan.radiogenomic.synthesis.synthesis_map`), all cells at once
    (one matrix product per chunk of replicates). Patients are the unit of resampling because they, not
    the latents, are the independent observations: the interval covers the uncertainty from which
    patients happened to be in the cohort, for this trained generator (training-seed variation is
    reported separately).

    Args:
        per_patient: (units, patients, features) per-patient mean effects (NaN: no valid pair).
        index: the unit names (rows of the result).
        n_boot: bootstrap replicates.
        level: coverage of the interval.
        seed: seed of the resampling.

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
