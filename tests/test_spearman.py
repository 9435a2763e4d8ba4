"""The hand-written Spearman correlations of the maps (rggan.radiogenomic.correlation) against scipy.

``spearman_matrix`` correlates every column of one table with every column of another in a single matrix
product (the conventional map: genes × features); it must give ``scipy.stats.spearmanr``'s rho and
two-sided p-value for every pair, with ties (average ranks), constant columns and NaNs as scipy has them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rggan.features import FEATURE_NAMES
from rggan.radiogenomic.conventional import conventional_map
from rggan.radiogenomic.correlation import spearman, spearman_matrix


def _scipy_pairs(x: np.ndarray, y: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """scipy's rho and p of every (column of x, column of y) pair, one call each."""
    rho = np.empty((x.shape[1], y.shape[1]))
    p = np.empty_like(rho)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input (and returns NaN)
        for i in range(x.shape[1]):
            for j in range(y.shape[1]):
                res = stats.spearmanr(x[:, i], y[:, j], **kwargs)
                rho[i, j], p[i, j] = res.statistic, res.pvalue
    return rho, p


def _assert_same(ours: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-10, atol=1e-12, equal_nan=True)
    # p from the same t statistic (n - 2 degrees of freedom). At |rho| = 1 up to rounding (a monotone pair)
    # the last bit of rho decides between p = 0 and p ~ 1e-16 or 1e-64, for scipy and for us alike: an
    # absolute 1e-15 there, relative 1e-7 elsewhere.
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-7, atol=1e-15, equal_nan=True)


@pytest.mark.parametrize("n", [4, 10, 57])
def test_spearman_matrix_matches_scipy_on_continuous_data(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 6))
    y = np.column_stack([rng.normal(size=n), x[:, 0] * 2 + 0.3 * rng.normal(size=n), np.exp(x[:, 1])])
    _assert_same(spearman_matrix(x, y), _scipy_pairs(x, y))
    rho, p = spearman_matrix(x, y)
    assert rho[1, 2] == pytest.approx(1.0) and p[1, 2] == pytest.approx(0.0, abs=1e-12)  # exp is monotone


def test_spearman_matrix_three_samples():
    """n = 3 (the conventional map's minimum): rho as scipy; p as scipy except at |rho| = 1.

    With one degree of freedom the t tail is heavy, so at a perfect (anti)correlation the rounding of
    rho (1 - 2e-16 here, exactly 1 in scipy) gives p ~ 1e-8 where scipy gives 0: both far below any
    significance threshold.
    """
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(3, 8)), rng.normal(size=(3, 5))
    (rho, p), (ref_rho, ref_p) = spearman_matrix(x, y), _scipy_pairs(x, y)
    np.testing.assert_allclose(rho, ref_rho, rtol=1e-10, atol=1e-12)
    perfect = np.isclose(np.abs(ref_rho), 1.0)
    assert perfect.any() and (~perfect).any()
    np.testing.assert_allclose(p[~perfect], ref_p[~perfect], rtol=1e-7)
    assert (p[perfect] < 1e-7).all() and (ref_p[perfect] < 1e-7).all()


def test_spearman_matrix_matches_scipy_with_ties():
    """Rounded values (many ties, average ranks) and a binary column."""
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=(40, 5)), 0)
    y = np.column_stack([np.round(rng.normal(size=40) + x[:, 0], 1), rng.integers(0, 2, 40), rng.integers(0, 4, 40)])
    assert len(np.unique(x[:, 0])) < 10  # the ties are real
    _assert_same(spearman_matrix(x, y), _scipy_pairs(x, y))


def test_spearman_matrix_constant_column_and_nan_are_nan_as_in_scipy():
    """A constant column and a column with a NaN give NaN (scipy's default nan_policy 'propagate')."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 4))
    x[:, 1] = 3.0
    x[5, 2] = np.nan
    y = rng.normal(size=(20, 3))
    ours, ref = spearman_matrix(x, y), _scipy_pairs(x, y)
    _assert_same(ours, ref)
    assert np.isnan(ours[0][1:3]).all() and np.isnan(ours[1][1:3]).all()
    assert np.isfinite(ours[0][[0, 3]]).all() and np.isfinite(ours[1][[0, 3]]).all()


def test_conventional_map_leaves_out_patients_with_a_nan_feature_as_scipy_omit():
    """The conventional map drops patients whose features have a NaN; per feature that is scipy's 'omit'."""
    rng = np.random.default_rng(3)
    patients = [f"P{i}" for i in range(30)]
    expr = pd.DataFrame(np.round(rng.normal(size=(30, 4)), 1), index=patients, columns=list("ABCD"))
    feats = pd.DataFrame(rng.normal(size=(30, len(FEATURE_NAMES))), index=patients, columns=list(FEATURE_NAMES))
    feats.iloc[[2, 7], 0] = np.nan  # these patients are left out of every feature's correlation
    res = conventional_map(feats, expr)
    keep = feats.notna().all(axis=1)
    for gene in expr.columns:
        for feat in FEATURE_NAMES:
            ref = stats.spearmanr(expr.loc[keep, gene], feats.loc[keep, feat])
            assert res["rho"].loc[gene, feat] == pytest.approx(ref.statistic, rel=1e-10, abs=1e-12)
            assert res["p"].loc[gene, feat] == pytest.approx(ref.pvalue, rel=1e-7)
        # the feature with the NaNs: exactly scipy's nan_policy="omit"
        omit = stats.spearmanr(expr[gene], feats[FEATURE_NAMES[0]], nan_policy="omit")
        assert res["rho"].loc[gene, FEATURE_NAMES[0]] == pytest.approx(omit.statistic, rel=1e-10, abs=1e-12)
        assert res["p"].loc[gene, FEATURE_NAMES[0]] == pytest.approx(omit.pvalue, rel=1e-7)


def test_scalar_spearman_matches_scipy_omit():
    rng = np.random.default_rng(4)
    a = np.round(rng.normal(size=50), 1)
    b = a + rng.normal(size=50)
    a[[3, 9]] = np.nan
    b[[9, 20]] = np.inf  # not finite: left out as well
    ok = np.isfinite(a) & np.isfinite(b)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a[ok], b[ok]).statistic, rel=1e-12)
    b_nan = np.where(np.isfinite(b), b, np.nan)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b_nan, nan_policy="omit").statistic, rel=1e-12)
    assert np.isnan(spearman(a[:2], b[:2]))  # fewer than 3 pairs
    assert np.isnan(spearman(np.ones(10), np.arange(10.0)))  # constant side
