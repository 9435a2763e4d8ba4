"""Spearman rank correlations used by the maps and their scores.

:func:`spearman_matrix` is the batched one (every column of ``x`` against every column of ``y`` in one
matrix product), with the same rho and two-sided p-value as ``scipy.stats.spearmanr``; :func:`spearman`
is the scalar one on the pairs where both values are finite.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["spearman_matrix", "spearman"]


def spearman_matrix(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman rho and two-sided p-value of every (column of ``x``, column of ``y``) pair.

    Ties get their average rank; the p-value is the t approximation with ``n - 2`` degrees of freedom,
    as in ``scipy.stats.spearmanr``. Rows must be finite (a NaN gives NaN in its columns' results).

    Args:
        x: (n, a) observations.
        y: (n, b) observations of the same n samples.

    Returns:
        ``(rho, p)``, both (a, b); NaN for a constant column.
    """
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


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho of ``a`` and ``b`` over the pairs where both are finite.

    Returns:
        rho, or NaN with fewer than 3 such pairs or a constant side.
    """
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    from scipy import stats

    return float(stats.spearmanr(a[ok], b[ok]).statistic)
