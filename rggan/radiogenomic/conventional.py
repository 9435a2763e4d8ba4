"""The conventional radiogenomic map: Spearman correlation, across patients, of the REAL nodules'
features (measured on the prepared images and masks) with the prepared expression vectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from rggan.errors import InputError
from rggan.features import FEATURE_NAMES, nodule_features
from rggan.radiogenomic.correlation import spearman_matrix

__all__ = ["real_features", "conventional_map"]


def real_features(items: Sequence[Mapping[str, Any]], hu_range: Sequence[float] | None = None) -> pd.DataFrame:
    """Features of the real nodules of prepared datalist items.

    Args:
        items: datalist items with absolute ``image``/``mask`` paths, ``spacing`` and ``patient``.
        hu_range: the prepared dataset's HU window (``rggan.intensity.hu_range_of``); None: the default one.

    Returns:
        patients × features (:data:`rggan.features.FEATURE_NAMES`).
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


def conventional_map(
    features: pd.DataFrame, expression: pd.DataFrame, *, genes: Sequence[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Spearman correlation of real-nodule features with gene expression across patients.

    Args:
        features: patients × features (:func:`real_features`); patients with a NaN feature are left out.
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
    rho, p = spearman_matrix(expr.to_numpy(np.float64)[ok], feats.to_numpy(np.float64)[ok])
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
