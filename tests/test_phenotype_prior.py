"""The generator's phenotype prior: fixed lasso scores of the genes entering the gene embedding."""

import numpy as np
import pandas as pd
import pytest
import torch

from rggan.networks import RGGenerator, init_weights

GENES = 6


def _prior() -> tuple[np.ndarray, np.ndarray]:
    w = np.zeros((3, GENES), np.float32)
    w[0, 1], w[1, 4], w[2, 1] = 1.5, -2.0, 0.5
    return w, np.array([0.1, 0.0, -0.3], np.float32)


def _generator(prior=None) -> RGGenerator:
    torch.manual_seed(0)
    net = RGGenerator(GENES, embed_dim=8, latent_size=4, g_n_feat=4, image_size=32, phenotype_prior=prior)
    return net.apply(init_weights).eval()


def test_the_prior_scores_enter_the_embedding_through_a_learned_projection_only():
    net, plain = _generator(_prior()), _generator()
    assert {n for n, _ in net.named_buffers()} >= {"prior_weight", "prior_bias"}
    assert "prior_weight" not in dict(net.named_parameters())  # fixed: never trained
    assert sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in plain.parameters()) == 3 * 8
    rna = torch.randn(5, GENES)
    w, c = map(torch.from_numpy, _prior())
    expected = net.gene_encoder(rna) + (rna @ w.T + c) @ net.prior_projection.weight.T
    assert torch.allclose(net.embed(rna), expected, atol=1e-6)
    # a gene the prior uses moves the embedding even where the encoder ignores it; one it does not use, not
    with torch.no_grad():
        net.gene_encoder[0].weight.zero_()
    moved = net.embed(rna + torch.eye(GENES)[1]) - net.embed(rna)
    assert moved.abs().max() > 1e-3
    assert torch.allclose(net.embed(rna + torch.eye(GENES)[2]), net.embed(rna))
    out = net(rna, torch.randn(5, 4), torch.rand(5, 1, 32, 32) * 2 - 1)
    assert torch.allclose(out.embedding, net.embed(rna))
    with pytest.raises(ValueError, match="phenotype_prior must be"):
        RGGenerator(GENES + 1, g_n_feat=4, image_size=32, phenotype_prior=_prior())


def test_prior_noise_jitters_the_scores_in_training_steps_only():
    torch.manual_seed(0)
    net = RGGenerator(GENES, embed_dim=8, latent_size=4, g_n_feat=4, image_size=32, phenotype_prior=_prior(),
                      prior_noise=0.5).apply(init_weights)  # fmt: skip
    rna = torch.randn(64, GENES)
    clean = net.eval().embed(rna)
    assert torch.equal(net.embed(rna), clean)  # eval mode: no noise, the map and inference are deterministic
    net.train()
    a, b = net.embed(rna), net.embed(rna)
    assert not torch.allclose(a, b)
    # the noise enters through the prior's projection only: it is P eps, eps ~ N(0, 0.5^2) per score
    eps = torch.linalg.lstsq(net.prior_projection.weight, (a - clean).T).solution.T  # (64, 3)
    assert torch.allclose(net.prior_projection(eps), a - clean, atol=1e-5)
    assert 0.4 < eps.std().item() < 0.6
    with pytest.raises(ValueError, match="prior_noise"):
        RGGenerator(GENES, g_n_feat=4, image_size=32, phenotype_prior=_prior(), prior_noise=-1.0)


def test_a_checkpoint_keeps_the_prior_and_the_fast_map_shifts_include_it(tmp_path):
    from rggan.checkpoint import load_generator
    from rggan.fast_map import embedding_shifts

    net = _generator(_prior())
    path = tmp_path / "g.pt"
    torch.save(net.state_dict(), path)  # a bare state dict, as model.pt holds
    loaded = load_generator(path)
    assert loaded.prior_projection is not None
    assert torch.equal(loaded.prior_weight, net.prior_weight) and torch.equal(loaded.prior_bias, net.prior_bias)
    rna, z, base = torch.randn(3, GENES), torch.randn(3, 4), torch.rand(3, 1, 32, 32) * 2 - 1
    assert torch.allclose(loaded(rna, z, base).image, net(rna, z, base).image, atol=1e-6)
    # the exact embedding differences the fast map uses: E(rna + d) - E(rna - d), the prior's path included
    with torch.no_grad():
        shifts = embedding_shifts(net, rna, torch.eye(GENES), 0.5)
        for j in range(GENES):
            d = 0.5 * torch.eye(GENES)[j]
            assert torch.allclose(shifts[:, j], net.embed(rna + d) - net.embed(rna - d), atol=1e-5)


def test_phenotype_prior_scores_predict_the_training_features_in_sds(prepared_demo):
    from scipy.stats import spearmanr

    from rggan.adaptive_lasso import phenotype_prior
    from rggan.data.dataset import load_datalist
    from rggan.features import FEATURE_NAMES
    from rggan.intensity import hu_range_of
    from rggan.radiogenomic.conventional import real_features

    folder = prepared_demo.output_dir
    w, c = phenotype_prior(folder)
    items = load_datalist(folder, "training")
    rna = np.stack([np.load(it["rna"]).reshape(-1) for it in items])
    assert w.shape == (len(FEATURE_NAMES), rna.shape[1]) and c.shape == (len(FEATURE_NAMES),)
    scores = rna @ w.T + c
    real = real_features(items, hu_range_of(folder))
    assert np.allclose(scores.mean(axis=0), 0.0, atol=1e-4)  # SDs from the training mean
    assert np.all(scores.std(axis=0) < 1.0)  # a shrunk fit
    for k, name in enumerate(FEATURE_NAMES):
        assert spearmanr(scores[:, k], real[name]).statistic > 0.5, name
    assert (w == 0).mean() > 0.5


def test_linear_readout_predicts_held_out_patients_from_the_training_fits_alone(prepared_demo):
    from scipy.stats import spearmanr

    from rggan.adaptive_lasso import linear_readout, phenotype_prior
    from rggan.data.dataset import load_datalist
    from rggan.evaluation_metrics import linear_fidelity
    from rggan.features import FEATURE_NAMES
    from rggan.intensity import hu_range_of
    from rggan.radiogenomic.conventional import real_features

    folder = prepared_demo.output_dir
    held_out = load_datalist(folder, "validation")
    predicted = linear_readout(folder, "validation")
    assert list(predicted.index) == [str(it["patient"]) for it in held_out]
    assert list(predicted.columns) == list(FEATURE_NAMES)
    # the training patients' read-out is the prior's scores put back into feature units
    training = load_datalist(folder, "training")
    real_training = real_features(training, hu_range_of(folder))
    w, c = phenotype_prior(folder)
    rna = np.stack([np.load(it["rna"]).reshape(-1) for it in training])
    expected = (rna @ w.T + c) * real_training.std(ddof=0).to_numpy() + real_training.mean().to_numpy()
    assert np.allclose(linear_readout(folder, "training").to_numpy(), expected, rtol=1e-3, atol=1e-3)
    # on held-out patients it still tracks the strongly planted intensity phenotype
    real = real_features(held_out, hu_range_of(folder))
    assert spearmanr(predicted["mean_hu"], real["mean_hu"]).statistic > 0.5
    fidelity = linear_fidelity(folder, real, "validation")
    assert set(fidelity) == set(FEATURE_NAMES)
    assert fidelity["mean_hu"] == spearmanr(predicted["mean_hu"], real["mean_hu"]).statistic
    assert linear_fidelity(folder, real_training, "training") is None  # no held-out reference on training


def test_prior_fidelity_reads_the_generators_own_prior_and_how_closely_g_follows_it(prepared_demo):
    from scipy.stats import spearmanr

    from rggan.adaptive_lasso import phenotype_prior
    from rggan.data.dataset import load_datalist
    from rggan.evaluation_metrics import prior_fidelity
    from rggan.features import FEATURE_NAMES
    from rggan.intensity import hu_range_of
    from rggan.radiogenomic.conventional import real_features

    folder = prepared_demo.output_dir
    items = load_datalist(folder, "validation")
    real = real_features(items, hu_range_of(folder))
    w, c = phenotype_prior(folder)
    net = RGGenerator(w.shape[1], embed_dim=8, latent_size=4, g_n_feat=4, image_size=32, phenotype_prior=(w, c))
    scores = np.stack([np.load(it["rna"]).reshape(-1) for it in items]) @ w.T + c
    patients = [str(it["patient"]) for it in items]
    # two latents per patient: one on the score's side, one mirrored, so the patient mean ranks as
    # 2 x score - score for the first three features and as -score for the others
    flip = np.where(np.arange(len(FEATURE_NAMES)) < 3, 1.0, -1.0)
    gen = pd.DataFrame(np.concatenate([scores * flip + 0.5, scores * flip - 0.5]), columns=list(FEATURE_NAMES))
    gen.insert(0, "patient", patients * 2)
    expression = {p: np.load(it["rna"]).reshape(-1) for p, it in zip(patients, items)}
    out = prior_fidelity(net, expression, real, gen)
    for k, name in enumerate(FEATURE_NAMES):
        if np.ptp(scores[:, k]) == 0:
            continue  # a fit that kept no gene: no ranking
        expected = spearmanr(scores[:, k], real.loc[patients, name]).statistic
        assert out["read_out"][name] == pytest.approx(expected), name
        assert out["followed"][name] == pytest.approx(flip[k]), name
    assert out["read_out"]["mean_hu"] > 0.5  # the demo's strongly planted intensity, through the prior alone
    assert prior_fidelity(RGGenerator(w.shape[1], g_n_feat=4, image_size=32), expression, real, gen) is None
