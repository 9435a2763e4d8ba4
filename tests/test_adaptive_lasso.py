"""The adaptive group lasso's per-gene weights, on a real prepared demo download."""

import numpy as np
import pytest

from rggan.adaptive_lasso import (
    adaptive_lasso_scales,
    gene_association,
    lasso_prediction,
    marginal_association,
    shrinkage_for_gene_count,
)
from rggan.data.rna import GeneTransform
from rggan.errors import InputError
from rggan.features import FEATURE_NAMES


def test_marginal_association_ranks_the_planted_drivers_above_the_median_gene(prepared_demo):
    folder = prepared_demo.output_dir
    genes = GeneTransform.load(folder / "gene_transform.json").genes
    a = marginal_association(folder)
    assert a.shape == (len(genes),) and np.all((a >= 0) & (a <= 1))
    drivers = [g for g in ("MKI67", "LRIG1", "POSTN", "HPGD", "SPI1", "GDF15", "VIM", "CDH2") if g in genes]
    assert len(drivers) >= 6
    median = np.median(a)
    above = [g for g in drivers if a[genes.index(g)] > median]
    print({g: round(float(a[genes.index(g)]), 3) for g in drivers}, "median", round(float(median), 3))
    assert len(above) >= len(drivers) - 1
    scales = adaptive_lasso_scales(a, gamma=2.0)
    assert np.all(scales[[genes.index(g) for g in above]] < 1.0)
    # the default, joint estimate: also in [0, 1], its strongest gene at 1
    ridge = gene_association(folder, "ridge")
    assert ridge.shape == a.shape and ridge.max() == pytest.approx(1.0) and ridge.min() >= 0
    assert np.median(ridge[[genes.index(g) for g in drivers]]) > np.median(ridge)
    # the sparse joint estimate: most genes exactly 0, the drivers the fits use at the top
    lasso = gene_association(folder)  # the default
    assert lasso.shape == a.shape and lasso.max() == pytest.approx(1.0) and lasso.min() >= 0
    print("lasso non-zero", int((lasso > 0).sum()), "of", len(genes))
    assert (lasso == 0).mean() > 0.5
    assert np.median(lasso[[genes.index(g) for g in drivers]]) > np.quantile(lasso, 0.9)
    with pytest.raises(ValueError, match="gene_association 'pca' is unknown"):
        gene_association(folder, "pca")


def test_adaptive_lasso_scales_are_one_at_the_median_decrease_with_association_and_are_clipped():
    a = np.array([0.0, 0.1, 0.2, 0.4])  # the median is over the non-zero associations: 0.2
    s = adaptive_lasso_scales(a, gamma=1.0, max_scale=10.0)
    assert s[2] == pytest.approx(1.0) and s[3] == pytest.approx(0.5) and s[1] == pytest.approx(2.0)
    assert s[0] == pytest.approx(10.0) and np.all(np.diff(s) < 0)  # no association: the largest shrinkage
    assert adaptive_lasso_scales(a, gamma=2.0)[3] == pytest.approx(0.25)
    assert np.all(adaptive_lasso_scales(a, gamma=0.0) == 1.0)
    with pytest.raises(ValueError, match="gamma"):
        adaptive_lasso_scales(a, gamma=-1.0)
    with pytest.raises(InputError, match="every association is 0"):
        adaptive_lasso_scales(np.zeros(4), gamma=1.0)


def test_ridge_and_lasso_scores_prefer_the_driver_to_its_co_expressed_partner():
    """Two genes correlated 0.9, only the first drives the feature: the marginal view barely tells them apart,
    the joint ridge fit gives the driver clearly more, the lasso drops the partner and the unrelated genes."""
    from rggan.adaptive_lasso import lasso_scores, ridge_scores

    rng = np.random.default_rng(0)
    n, genes = 80, 40
    x = rng.standard_normal((n, genes))
    x[:, 1] = 0.9 * x[:, 0] + np.sqrt(1 - 0.81) * rng.standard_normal(n)
    y = (x[:, 0] + 0.5 * rng.standard_normal(n))[:, None]
    marginal = np.abs(np.corrcoef(x.T, y.T)[-1, :-1])
    ridge = ridge_scores(x, y, lam=10.0)
    assert ridge[0] == pytest.approx(1.0) and np.all(ridge <= 1.0) and np.all(ridge >= 0.0)
    assert marginal[1] / marginal[0] > 0.8 and ridge[1] / ridge[0] < 0.6
    assert np.argsort(-ridge)[0] == 0 and np.median(ridge) < 0.3
    with pytest.raises(ValueError, match="lam"):
        ridge_scores(x, y, lam=0.0)
    lasso = lasso_scores(x, y, alpha=0.1)
    assert lasso[0] == pytest.approx(1.0) and lasso[1] < 0.1 and (lasso > 0).sum() <= 5
    # a penalty above alpha_max is capped at half of it: the fit still keeps the driver
    assert lasso_scores(x, y, alpha=5.0)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="alpha"):
        lasso_scores(x, y, alpha=0.0)


def test_the_adaptive_refit_keeps_the_two_drivers_and_drops_the_partner_the_lasso_keeps():
    """Gene 0 and gene 5 drive the feature, gene 1 is gene 0's co-expressed partner (correlation 0.8). One lasso
    keeps the partner and a few unrelated genes; the adaptive lasso's second stage keeps exactly the drivers,
    less shrunk, and its prediction of new patients is at least as good."""
    from rggan.adaptive_lasso import _adaptive_refit, _lasso_coefficients, _standardise, _standardised_prediction

    rng = np.random.default_rng(3)
    n, genes = 80, 40

    def draw(m: int) -> np.ndarray:
        x = rng.standard_normal((m, genes))
        x[:, 1] = 0.8 * x[:, 0] + 0.6 * rng.standard_normal(m)
        return x

    x = draw(n)
    y = (x[:, 0] - 0.7 * x[:, 5] + 0.8 * rng.standard_normal(n))[:, None]
    xs, ys = _standardise(x), _standardise(y)
    lasso = _lasso_coefficients(xs, ys, 0.1)[:, 0]
    refit = _adaptive_refit(xs, ys, lasso[:, None], 0.02)[:, 0]
    assert lasso[1] != 0 and (lasso != 0).sum() > 3
    assert set(np.flatnonzero(refit)) == {0, 5}
    assert abs(refit[0]) > abs(lasso[0]) and abs(refit[5]) > abs(lasso[5])  # the drivers less shrunk
    xv = draw(2000)
    yv = xv[:, 0] - 0.7 * xv[:, 5]
    corr = {}
    for r in (0.0, 0.02):
        w, c = _standardised_prediction(x, y, 0.1, r)
        corr[r] = np.corrcoef(xv @ w[0] + c[0], yv)[0, 1]
    assert corr[0.02] >= corr[0.0] > 0.95
    with pytest.raises(ValueError, match="refit_alpha"):
        _adaptive_refit(xs, ys, lasso[:, None], 0.0)


def test_shrinkage_grows_with_the_square_root_of_the_gene_count_above_the_reference():
    assert shrinkage_for_gene_count(2e-4, 149, 150) == 2e-4  # at or below the reference: the measured value
    assert shrinkage_for_gene_count(2e-4, 150, 150) == 2e-4
    assert shrinkage_for_gene_count(2e-4, 600, 150) == pytest.approx(4e-4)
    assert shrinkage_for_gene_count(2e-4, 3511, 150) == pytest.approx(2e-4 * (3511 / 150) ** 0.5)  # ~9.7e-4
    assert shrinkage_for_gene_count(2e-4, 3511, 0) == 2e-4  # 0: no scaling
    with pytest.raises(ValueError, match="num_genes"):
        shrinkage_for_gene_count(2e-4, 0, 150)


def test_lasso_prediction_predicts_the_training_margin_in_the_expression_units(prepared_demo):
    from scipy.stats import spearmanr

    from rggan.data.dataset import load_datalist
    from rggan.intensity import hu_range_of
    from rggan.radiogenomic.conventional import real_features

    folder = prepared_demo.output_dir
    genes = GeneTransform.load(folder / "gene_transform.json").genes
    weights, intercept = lasso_prediction(folder)  # irregularity, the training patients
    assert weights.shape == (len(genes),)
    items = load_datalist(folder, "training")
    real = real_features(items, hu_range_of(folder))["irregularity"].to_numpy()
    prediction = np.stack([np.load(it["rna"]).reshape(-1) for it in items]) @ weights + intercept
    rho = spearmanr(prediction, real).statistic
    print("non-zero", int((weights != 0).sum()), "of", len(genes), "rho", round(float(rho), 3))
    assert prediction.mean() == pytest.approx(real.mean(), abs=1e-9)  # the intercept: raw units, not z-scores
    assert rho > 0.5 and prediction.std() < real.std()  # a shrunk fit
    assert (weights == 0).mean() > 0.5
    assert any(weights[genes.index(g)] > 0 for g in ("VIM", "CDH2") if g in genes)  # the planted drivers (+)
    with pytest.raises(ValueError, match="feature 'roundness' is unknown"):
        lasso_prediction(folder, "roundness")


def test_paired_target_priors_predict_in_the_units_the_loss_compares(prepared_demo):
    """The texture prior predicts the normalised image's SD inside the real mask, as ``c_tex`` measures it."""
    import torch

    from rggan.data.dataset import load_datalist
    from rggan.losses import _masked_mean_std, paired_target_priors

    folder = prepared_demo.output_dir
    priors = paired_target_priors(folder)
    assert set(priors) == {"shape", "tex"}
    items = load_datalist(folder, "training")
    rna = np.stack([np.load(it["rna"]).reshape(-1) for it in items])
    image = torch.stack([torch.from_numpy(np.load(it["image"]).astype(np.float32)).reshape(1, 64, 64) for it in items])
    mask = torch.stack([torch.from_numpy(np.load(it["mask"]) > 0).float().reshape(1, 64, 64) for it in items])
    sd = _masked_mean_std(image, mask)[1].double().numpy()
    weights, intercept = priors["tex"]
    prediction = rna @ weights + intercept
    assert prediction.mean() == pytest.approx(sd.mean(), rel=1e-4)
    assert np.corrcoef(prediction, sd)[0, 1] > 0.5
    with pytest.raises(ValueError, match="cannot be shrunk"):
        paired_target_priors(folder, ["size"])


def test_slice_margin_fits_read_the_datalist_margins(tmp_path):
    """``slice_margin``: the fits' margin column is prepare's slice-averaged value (the nodule slice's where it
    is missing); a folder without margins says how to prepare them."""
    import json

    from rggan.adaptive_lasso import _split_arrays, phenotype_prior
    from tests._prepared import make_prepared

    folder = make_prepared(tmp_path / "p", n_train=8, n_val=2)
    _, plain = _split_arrays(folder, "training")
    with pytest.raises(InputError, match="margin-mm"):
        _split_arrays(folder, "training", slice_margin=True)
    datalist = json.loads((folder / "datalist.json").read_text())
    for i, item in enumerate(datalist["training"]):
        item["margin"] = None if i == 0 else 0.1 + 0.01 * i
    (folder / "datalist.json").write_text(json.dumps(datalist))
    expression, averaged = _split_arrays(folder, "training", slice_margin=True)
    col = list(FEATURE_NAMES).index("irregularity")
    assert averaged[0, col] == plain[0, col]
    assert np.allclose(averaged[1:, col], [0.1 + 0.01 * i for i in range(1, 8)])
    keep = [c for c in range(plain.shape[1]) if c != col]
    assert np.array_equal(averaged[:, keep], plain[:, keep])
    # the prior's margin row is fitted on them: a margin planted on one gene is found there
    rng = np.random.default_rng(0)
    for i, item in enumerate(datalist["training"]):
        item["margin"] = float(0.05 + 0.02 * expression[i, 3] + 0.001 * rng.normal())
    (folder / "datalist.json").write_text(json.dumps(datalist))
    w, _ = phenotype_prior(folder, slice_margin=True)
    assert int(np.argmax(np.abs(w[col]))) == 3
