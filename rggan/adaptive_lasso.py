"""Per-gene weights of the adaptive group lasso on the gene encoder (Zou 2006; Huang, Ma & Zhang 2008).

With more genes than patients, the encoder's first layer can fit the training nodules with any mix of
co-expressed genes, and gradient training (Adam, a uniform group lasso) spreads the weight over a driver's
whole co-expression module. The adaptive lasso penalises each gene in inverse proportion to an initial
estimate of its importance ``a_g``; with more genes than patients the estimate may be the marginal
association (Huang, Ma & Zhang 2008, Statistica Sinica 18) or a joint fit. Three are offered, all measured
over the TRAINING patients only against the real nodules' features (those of the conventional map):

* ``lasso`` (the default): the gene's largest |coefficient| in a lasso fit of each feature on the
  expression, the initial estimator of the two-stage adaptive lasso (Buhlmann & van de Geer 2011, 2.8).
  Most genes get exactly 0: they get the largest shrinkage and leave the encoder within a few
  iterations, so G keeps only the genes a sparse linear fit of the training nodules uses;
* ``ridge``: the gene's largest |coefficient| in a ridge fit of the features on the expression; of two
  co-expressed genes, the one that explains a feature gets the larger coefficient, but every gene stays;
* ``marginal``: the gene's largest |Spearman| with the features; it cannot tell a driver from its partners.

The weight is::

    scale_g = clip((median_h a_h / a_g) ** gamma, 1 / max_scale, max_scale)

with the median over the genes whose association is non-zero (all of them for ``ridge`` and
``marginal``): the median gene keeps the uniform shrinkage, genes with a stronger association are shrunk
less and the rest more. The held-out patients never enter the weights.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from rggan.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ASSOCIATIONS",
    "adaptive_lasso_scales",
    "gene_association",
    "lasso_prediction",
    "linear_readout",
    "phenotype_prior",
    "lasso_scores",
    "marginal_association",
    "ridge_association",
    "ridge_scores",
    "shrinkage_for_gene_count",
]

#: The initial estimates :func:`gene_association` offers.
ASSOCIATIONS = ("lasso", "ridge", "marginal")


def _split_arrays(
    dataset_dir: str | os.PathLike, split: str, slice_margin: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(patients, genes) expression and (patients, features) real-nodule features of one split, finite rows.

    With ``slice_margin``, the ``irregularity`` column holds each patient's slice-averaged margin from prepare
    (``margin_mm`` or ``margin_slices`` set; the nodule slice's value where none was measured).
    """
    from rggan.data.dataset import load_datalist
    from rggan.features import FEATURE_NAMES
    from rggan.intensity import hu_range_of
    from rggan.radiogenomic.conventional import real_features

    items = load_datalist(dataset_dir, split)
    if len(items) < 3:
        raise InputError(f"{dataset_dir}: the adaptive gene lasso needs >= 3 {split} patients, got {len(items)}")
    features = real_features(items, hu_range_of(dataset_dir)).to_numpy(np.float64, copy=True)
    if slice_margin:
        if not any("margin" in it for it in items):
            raise InputError(
                f"{dataset_dir} holds no slice-averaged margins: prepare the raw download with "
                "`rggan prepare --margin-mm 8` (train.yaml: margin_mm)"
            )
        m = np.array([np.nan if it.get("margin") is None else float(it["margin"]) for it in items])
        col = list(FEATURE_NAMES).index("irregularity")
        features[:, col] = np.where(np.isfinite(m), m, features[:, col])
    expression = np.stack([np.load(it["rna"]).astype(np.float64).reshape(-1) for it in items])
    ok = np.isfinite(features).all(axis=1)
    return expression[ok], features[ok]


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _largest_scaled(coef: np.ndarray) -> np.ndarray:
    """Each gene's largest |coefficient| of a (genes, features) fit, each feature's column scaled to max 1."""
    coef = np.abs(coef)
    top = coef.max(axis=0, keepdims=True)
    return (coef / np.where(top > 0, top, 1.0)).max(axis=1)


def marginal_association(
    dataset_dir: str | os.PathLike, split: str = "training", slice_margin: bool = False
) -> np.ndarray:
    """Each gene's largest |Spearman| with the real nodules' features over the patients of one split.

    Args:
        dataset_dir: a prepared folder (``datalist.json``, ``gene_transform.json``).
        split: the datalist split whose patients are measured (never the held-out one for training).
        slice_margin: the margin feature is prepare's slice-averaged one (:func:`_split_arrays`).

    Returns:
        (genes,) float64 in [0, 1], in the prepared gene order; a constant gene gives 0.
    """
    from rggan.radiogenomic.correlation import spearman_matrix

    expression, features = _split_arrays(dataset_dir, split, slice_margin)
    rho, _ = spearman_matrix(expression, features)
    return np.nan_to_num(np.abs(rho), nan=0.0).max(axis=1)


def ridge_association(
    dataset_dir: str | os.PathLike, split: str = "training", lam: float = 100.0, slice_margin: bool = False
) -> np.ndarray:
    """Each gene's largest |ridge coefficient| over the real nodules' features, each feature's scaled to max 1.

    A joint fit, unlike the marginal association: of two co-expressed genes the one that explains a feature
    gets the larger coefficient. Genes and features are standardised over the split's patients; the fit is
    the dual form ``X^T (X X^T + lam I)^-1 Y``, so its cost grows with the patients, not the genes.

    Args:
        dataset_dir: a prepared folder; split: the datalist split (never the held-out one for training).
        lam: the ridge penalty on the standardised data.
        slice_margin: the margin feature is prepare's slice-averaged one (:func:`_split_arrays`).

    Returns:
        (genes,) float64 in [0, 1], in the prepared gene order.
    """
    return ridge_scores(*_split_arrays(dataset_dir, split, slice_margin), lam=lam)


def ridge_scores(expression: np.ndarray, features: np.ndarray, lam: float = 100.0) -> np.ndarray:
    """:func:`ridge_association` on arrays.

    Args:
        expression: (patients, genes); features: (patients, features); lam: the ridge penalty (> 0).

    Returns:
        (genes,) float64 in [0, 1]: each gene's largest |coefficient|, each feature's coefficients scaled to max 1.
    """
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    x, y = _standardise(np.asarray(expression, np.float64)), _standardise(np.asarray(features, np.float64))
    return _largest_scaled(x.T @ np.linalg.solve(x @ x.T + lam * np.eye(len(x)), y))


def _lasso_coefficients(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """(genes, features) lasso coefficients of standardised ``y`` on standardised ``x``, one fit per feature."""
    from sklearn.linear_model import Lasso

    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    alpha_max = np.abs(x.T @ y).max(axis=0) / len(x)  # (features,)
    fits = [
        Lasso(alpha=min(alpha, 0.5 * a_max) if a_max > 0 else alpha, fit_intercept=False, max_iter=10_000).fit(x, col)
        for col, a_max in zip(y.T, alpha_max)
    ]
    return np.stack([f.coef_ for f in fits], axis=1)


def _adaptive_refit(x: np.ndarray, y: np.ndarray, beta: np.ndarray, alpha: float) -> np.ndarray:
    """The adaptive lasso's second stage: each feature refitted with penalty ``alpha |w_g| / |beta_g|``.

    Zou (2006): weighting each gene's penalty by the inverse of its first-stage coefficient keeps the
    strong genes nearly unshrunk and drops the weak ones, which selects the true drivers over correlated
    partners more often than one lasso. Genes the first stage dropped stay at 0. Solved as a lasso on the
    columns ``x_g |beta_g|``, whose coefficients are rescaled back.
    """
    from sklearn.linear_model import Lasso

    if alpha <= 0:
        raise ValueError(f"refit_alpha must be > 0, got {alpha}")
    out = np.zeros_like(beta)
    for j in range(beta.shape[1]):
        w = np.abs(beta[:, j])
        if not w.any():
            continue
        fit = Lasso(alpha=alpha, fit_intercept=False, max_iter=20_000).fit(x * w, y[:, j])
        out[:, j] = fit.coef_ * w
    return out


def lasso_scores(expression: np.ndarray, features: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """Each gene's largest |lasso coefficient| over the features: one ``sklearn.linear_model.Lasso`` per feature.

    Genes and features are standardised over the patients, so ``alpha`` is scale-free: the fit minimises
    ``|y - X w|^2 / (2 n) + alpha |w|_1``; 0.1 keeps about 2-25 of the demo's ~150 genes per feature. A
    feature's penalty is capped at half of its ``alpha_max = max_g |x_g . y| / n`` (the smallest penalty that
    selects no gene), so every fit keeps at least one gene even on a few patients.

    Args:
        expression: (patients, genes); features: (patients, features); alpha: the lasso penalty (> 0).

    Returns:
        (genes,) float64 in [0, 1]: each gene's largest |coefficient|, each feature's coefficients scaled to max 1.
    """
    x, y = _standardise(np.asarray(expression, np.float64)), _standardise(np.asarray(features, np.float64))
    return _largest_scaled(_lasso_coefficients(x, y, alpha))


def _standardised_prediction(
    expression: np.ndarray, features: np.ndarray, alpha: float, refit_alpha: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(W, c)``, (features, genes) and (features,), with ``expression @ W.T + c`` each feature's lasso prediction
    in SDs of its values over these patients (the fits of :func:`lasso_scores`, in the expression's units;
    with ``refit_alpha > 0``, refitted by the adaptive lasso's second stage, :func:`_adaptive_refit`)."""
    x_mean, x_sd = expression.mean(axis=0), expression.std(axis=0)
    x, y = _standardise(expression), _standardise(features)
    beta = _lasso_coefficients(x, y, alpha)  # (genes, features)
    if refit_alpha > 0:
        beta = _adaptive_refit(x, y, beta, refit_alpha)
    weights = (beta / np.where(x_sd > 0, x_sd, 1.0)[:, None]).T
    return weights, -(weights @ x_mean)


def lasso_prediction(
    dataset_dir: str | os.PathLike,
    feature: str = "irregularity",
    alpha: float = 0.1,
    split: str = "training",
    slice_margin: bool = False,
) -> tuple[np.ndarray, float]:
    """A sparse linear prediction of one real-nodule feature from the expression, fitted on one split.

    The same lasso as :func:`lasso_scores` (standardised data, the same ``alpha`` and cap), refitted on the
    split's patients and returned in the units of the prepared expression vectors and of the feature, so that
    ``rna @ weights + intercept`` predicts the feature of a patient with expression ``rna``. It is what the
    genes can say about the feature; a single real slice adds noise that no gene predicts (the paired terms'
    ``target_shrinkage``, :class:`rggan.losses.GeneratorLoss`).

    Args:
        dataset_dir: a prepared folder; feature: one of :data:`rggan.features.FEATURE_NAMES`.
        alpha: the lasso penalty (> 0); split: the datalist split (never the held-out one for training).
        slice_margin: the margin feature is prepare's slice-averaged one (:func:`_split_arrays`).

    Returns:
        ``(weights, intercept)``: (genes,) float64 weights and the float intercept.
    """
    from rggan.features import FEATURE_NAMES

    if feature not in FEATURE_NAMES:
        raise ValueError(f"feature {feature!r} is unknown: use one of {', '.join(FEATURE_NAMES)}")
    expression, features = _split_arrays(dataset_dir, split, slice_margin)
    y = features[:, list(FEATURE_NAMES).index(feature)]
    (w,), (c,) = _standardised_prediction(expression, y[:, None], alpha)  # a constant feature: w = 0
    return y.std() * w, float(y.mean() + y.std() * c)


def phenotype_prior(
    dataset_dir: str | os.PathLike,
    alpha: float = 0.1,
    split: str = "training",
    refit_alpha: float = 0.0,
    slice_margin: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The generator's phenotype prior: a lasso prediction of every real-nodule feature from the expression.

    One :func:`lasso_scores` fit per feature (standardised genes and features, the same ``alpha`` and cap) on
    the split's patients, returned in the units of the prepared expression vectors: ``W @ rna + c`` is each
    feature's predicted value in SDs of its training values (0: the training mean).

    Args:
        dataset_dir: a prepared folder; alpha: the lasso penalty (> 0); split: the datalist split (never the
            held-out one for training).
        refit_alpha: > 0: each fit refitted as an adaptive lasso with this penalty (:func:`_adaptive_refit`);
            0: the lasso alone.
        slice_margin: the margin is fitted on prepare's slice-averaged values (:func:`_split_arrays`), as the
            ``"slices"`` margin target of the G loss reads it.

    Returns:
        ``(W, c)``: (features, genes) and (features,) float32, features in :data:`rggan.features.FEATURE_NAMES`
        order.
    """
    weights, offset = _standardised_prediction(*_split_arrays(dataset_dir, split, slice_margin), alpha, refit_alpha)
    return weights.astype(np.float32), offset.astype(np.float32)


def linear_readout(
    dataset_dir: str | os.PathLike,
    split: str = "validation",
    alpha: float = 0.1,
    fit_split: str = "training",
    refit_alpha: float = 0.0,
) -> pd.DataFrame:
    """What a linear model of the genes predicts for each patient of ``split``: the prior's fits, in feature units.

    The seven lasso fits of :func:`phenotype_prior` (on ``fit_split``'s patients) applied to the expression of
    ``split``'s patients. On held-out patients it is the reference a generator's patient fidelity is read
    against: what the genes can say about each feature through a sparse linear fit of the training nodules.

    Args:
        dataset_dir: a prepared folder; split: the patients predicted; alpha: the lasso penalty (> 0);
        fit_split: the patients the fits use (never the held-out ones); refit_alpha: as in
        :func:`phenotype_prior`.

    Returns:
        a ``pandas.DataFrame``, patients x :data:`rggan.features.FEATURE_NAMES`, indexed by patient.
    """
    import pandas as pd

    from rggan.data.dataset import load_datalist
    from rggan.features import FEATURE_NAMES

    expression, features = _split_arrays(dataset_dir, fit_split)
    weights, offset = _standardised_prediction(expression, features, alpha, refit_alpha)
    items = load_datalist(dataset_dir, split)
    if not items:
        raise InputError(f"{dataset_dir}: no {split} patient to predict")
    x = np.stack([np.load(it["rna"]).astype(np.float64).reshape(-1) for it in items])
    predicted = (x @ weights.T + offset) * features.std(axis=0) + features.mean(axis=0)
    index = pd.Index([str(it["patient"]) for it in items], name="patient")
    return pd.DataFrame(predicted, index=index, columns=list(FEATURE_NAMES))


def gene_association(
    dataset_dir: str | os.PathLike, method: str = "lasso", split: str = "training", slice_margin: bool = False
) -> np.ndarray:
    """The initial estimate of each gene's importance: ``"lasso"`` (the default), ``"ridge"`` or ``"marginal"``.

    Args:
        dataset_dir: a prepared folder; method: one of :data:`ASSOCIATIONS`; split: the datalist split.
        slice_margin: the margin feature is prepare's slice-averaged one (:func:`_split_arrays`).

    Returns:
        (genes,) float64 in [0, 1].
    """
    if method == "ridge":
        return ridge_association(dataset_dir, split, slice_margin=slice_margin)
    if method == "marginal":
        return marginal_association(dataset_dir, split, slice_margin)
    if method == "lasso":
        return lasso_scores(*_split_arrays(dataset_dir, split, slice_margin))
    raise ValueError(f"gene_association {method!r} is unknown: use one of {', '.join(ASSOCIATIONS)}")


def adaptive_lasso_scales(association: np.ndarray, gamma: float, max_scale: float = 100.0) -> np.ndarray:
    """Per-gene multipliers of the group-lasso shrinkage from the genes' association.

    Args:
        association: (genes,) non-negative initial importance (:func:`gene_association`).
        gamma: the adaptive exponent; 0 gives uniform weights (the plain group lasso).
        max_scale: the weights are clipped to ``[1 / max_scale, max_scale]``.

    Returns:
        (genes,) float64 weights; the gene at the median non-zero association gets 1, a gene with none
        ``max_scale``.
    """
    a = np.asarray(association, dtype=np.float64)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if gamma == 0 or a.size == 0:
        return np.ones_like(a)
    if not (a > 0).any():
        raise InputError("the adaptive gene lasso needs genes associated with the features: every association is 0")
    median = float(np.median(a[a > 0]))
    scale = (median / np.maximum(a, 1e-12)) ** gamma
    return np.clip(scale, 1.0 / max_scale, max_scale)


def shrinkage_for_gene_count(tau: float, num_genes: int, reference_genes: int = 0) -> float:
    """The group lasso's base shrinkage for a panel of ``num_genes`` genes.

    ``tau`` is the shrinkage measured at ``reference_genes`` genes; above that count it grows as
    ``tau * sqrt(num_genes / reference_genes)``, at or below it ``tau`` is kept. Among thousands of genes
    the median gene's column must shrink faster for the lasso to select: on the 5,000-gene demo (3,511
    genes after the NA rule) the 149-gene shrinkage left the drivers at column ranks 6-42, while 5x it
    put them at ranks 1-14; ``sqrt(3511 / 160)`` = 4.7 is close to that (a rule fitted to these two points).

    Args:
        tau: base shrinkage per iteration (``gene_lasso``).
        num_genes: genes in the prepared data.
        reference_genes: the gene count ``tau`` was chosen at; 0 turns the scaling off.

    Returns:
        the shrinkage per iteration for ``num_genes`` genes.
    """
    if reference_genes < 0 or num_genes < 1:
        raise ValueError(f"need num_genes >= 1 and reference_genes >= 0, got {num_genes} and {reference_genes}")
    if reference_genes == 0 or num_genes <= reference_genes:
        return float(tau)
    return float(tau) * float(np.sqrt(num_genes / reference_genes))
