"""Radiogenomic maps (rggan.radiogenomic_map): known effects, the Spearman baseline, truth scores, the workflow."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import stats

from rggan.errors import InputError
from rggan.features import FEATURE_NAMES
from rggan.radiogenomic_map import (
    PHENOTYPE_FEATURES,
    conventional_map,
    expected_associations,
    find_truth,
    heatmap_png,
    main_driver_agreement,
    score_against_truth,
    synthesis_map,
    top_genes,
)
from tests.test_inference import GENES, chain_matches, leftovers, make_setup, workflow


class DiskGenerator(torch.nn.Module):
    """Hand-built "generator": a disk of radius 8 + 2*rna[0] px, brightness base + 0.1*rna[1] inside.

    Genes 2.. have no effect.  So d radius / d gene0 = 2 px, d mean HU / d gene1 = 0.1 * 750 = 75 HU.
    """

    def __init__(self, size: int = 48) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
        self.register_buffer("rr", ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt())

    def forward(self, rna, z, base):
        radius = (8.0 + 2.0 * rna[:, 0]).view(-1, 1, 1, 1)
        # soft edge so the area changes smoothly with the radius (sub-pixel): mask = clamp(radius - r)
        mask = (radius - self.rr).clamp(-1, 1)
        image = torch.where(mask > 0, base + 0.1 * rna[:, 1].view(-1, 1, 1, 1), base)
        return SimpleNamespace(image=image, mask=mask)


def _requests(n: int = 6, g: int = 4, size: int = 48):
    rng = np.random.default_rng(0)
    return [
        {"rna": rng.normal(0, 0.5, g).astype(np.float32), "z": np.zeros(2, np.float32),
         "base": np.full((1, size, size), -0.5, np.float32), "spacing": [1.0, 1.0]}
        for _ in range(n)
    ]  # fmt: skip


def test_synthesis_map_recovers_known_effects():
    genes = ["RAD", "HU", "NONE1", "NONE2"]
    res = synthesis_map(DiskGenerator(), _requests(), genes, delta=0.5, batch_size=6)
    eff = res["effect"]
    assert list(eff.index) == genes and list(eff.columns) == list(FEATURE_NAMES)
    # radius: mask > 0 where r < radius: area ~ pi radius^2 -> d eq.radius / d gene ~ 2 (up to pixelation)
    assert eff.loc["RAD", "equivalent_radius_mm"] == pytest.approx(2.0, abs=0.4)
    assert eff.loc["HU", "mean_hu"] == pytest.approx(75.0, rel=1e-3)
    assert eff.loc["HU", "equivalent_radius_mm"] == 0.0
    for g in ("NONE1", "NONE2"):  # perturbation-free genes: exactly no effect
        assert np.allclose(eff.loc[g].to_numpy(), 0.0)
    assert (res["n"].to_numpy() == 6).all()
    # modules: perturbing RAD and HU together adds both effects
    mod = synthesis_map(DiskGenerator(), _requests(), genes, modules={"both": ["RAD", "HU"], "none": ["NONE1"]})
    assert mod["effect"].loc["both", "mean_hu"] == pytest.approx(75.0, rel=1e-3)
    assert mod["effect"].loc["none"].abs().max() == 0.0
    with pytest.raises(InputError, match="not model genes: XYZ"):
        synthesis_map(DiskGenerator(), _requests(), genes, genes=["XYZ"])


def test_conventional_map_matches_scipy():
    rng = np.random.default_rng(3)
    patients = [f"P{i}" for i in range(15)]
    expr = pd.DataFrame(rng.normal(size=(15, 3)), index=patients, columns=["A", "B", "C"])
    feats = pd.DataFrame(rng.normal(size=(15, len(FEATURE_NAMES))), index=patients, columns=list(FEATURE_NAMES))
    feats["mean_hu"] = expr["A"] * 3 + 0.01 * rng.normal(size=15)
    res = conventional_map(feats, expr)
    assert res["rho"].loc["A", "mean_hu"] == pytest.approx(1.0, abs=0.02)
    for g in ("A", "B"):
        r = stats.spearmanr(expr[g], feats["std_hu"])
        assert res["rho"].loc[g, "std_hu"] == pytest.approx(r.statistic)
        assert res["p"].loc[g, "std_hu"] == pytest.approx(r.pvalue, rel=1e-6)


def _truth(genes: list[str]) -> dict:
    def ph(*drivers):
        return {"drivers": [{"gene": g, "effect": e} for g, e in drivers]}

    return {
        "format": "rggan-demo-truth",
        "genes": genes,
        "modules": {"m1": genes[:3], "m2": genes[3:6]},
        "phenotypes": {
            "radius_mm": ph((genes[0], 1.0), (genes[1], -1.0)),
            "mean_hu": ph((genes[2], 50.0), (genes[3], -50.0)),
            "irregularity": ph((genes[4], 0.04), (genes[5], 0.04)),
            "texture_hu": ph((genes[6], 15.0), (genes[7], 15.0)),
        },
    }


def test_scores_against_planted_truth():
    genes = GENES
    truth = _truth(genes)
    perfect = pd.DataFrame(0.0, index=genes, columns=list(FEATURE_NAMES))
    for phen, feats in PHENOTYPE_FEATURES.items():
        for d in truth["phenotypes"][phen]["drivers"]:
            for f in feats:
                perfect.loc[d["gene"], f] = d["effect"]
    rng = np.random.default_rng(0)
    noisy = perfect + rng.normal(0, 1e-3, perfect.shape)
    s = score_against_truth(noisy, truth)
    assert set(zip(s.phenotype, s.feature)) == {(p, f) for p, fs in PHENOTYPE_FEATURES.items() for f in fs}
    assert (s.topk_precision == 1.0).all() and (s.sign_accuracy == 1.0).all()
    assert (s.spearman_drivers > 0.75).all()  # tie-capped at 0.764 (see the docstring)
    main = main_driver_agreement(noisy, truth)
    assert main["n_pairs"] == 8 and main["spearman"] > 0.95 and main["sign_accuracy"] == 1.0
    flipped = score_against_truth(-noisy, truth)
    assert (flipped.sign_accuracy == 0.0).all() and (flipped.spearman_drivers < -0.75).all()
    assert main_driver_agreement(-noisy, truth)["spearman"] < -0.95
    # expected associations: G8 is co-expressed with the radius driver G0, so it inherits its effect
    rng = np.random.default_rng(1)
    expr = pd.DataFrame(rng.normal(size=(40, len(genes))), columns=genes)
    expr["G8"] = expr["G0"] + 0.01 * rng.normal(size=40)
    exp = expected_associations(truth, expr)
    assert exp.loc["G8", "radius_mm"] == pytest.approx(exp.loc["G0", "radius_mm"], abs=0.02)
    assert exp.loc["G0", "radius_mm"] == pytest.approx(1.0, abs=0.3)
    s2 = score_against_truth(
        exp.rename(columns={"radius_mm": "equivalent_radius_mm"}).reindex(columns=list(FEATURE_NAMES)).fillna(0.0),
        truth,
        expression=expr,
    )
    assert s2.loc[s2.feature == "equivalent_radius_mm", "spearman_expected"].item() == pytest.approx(1.0)
    top = top_genes(noisy, 2)
    assert {r["gene"] for r in top["mean_hu"]} == {genes[2], genes[3]}


def test_heatmap_png_is_labelled(tmp_path):
    table = pd.DataFrame(np.linspace(-1, 1, 12 * 7).reshape(12, 7), index=GENES, columns=list(FEATURE_NAMES))
    table.iloc[0, 0] = np.nan
    path = heatmap_png(table, tmp_path / "h.png", title="test", max_rows=10)
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.height > 10 * 20 and img.width > 7 * 70


def test_radiogenomic_map_workflow(tmp_path):
    setup = make_setup(tmp_path)
    (setup["prepared"] / "demo_truth.json").write_text(json.dumps(_truth(GENES)))
    assert find_truth(setup["prepared"]) == setup["prepared"] / "demo_truth.json"
    out = tmp_path / "map"
    wf = workflow(
        "radiogenomic_map.yaml", dataset_dir=str(setup["prepared"]), ckpt_file=str(setup["ckpt"]), output_dir=str(out),
        num_latents=2, progress=False, device="$torch.device('cpu')",
    )  # fmt: skip
    wf.run()
    eff = pd.read_csv(out / "synthesis_map.csv", index_col=0)
    assert eff.shape == (12, len(FEATURE_NAMES)) and list(eff.index) == GENES
    rho = pd.read_csv(out / "conventional_map.csv", index_col=0)
    assert rho.shape == (12, len(FEATURE_NAMES))
    assert np.nanmax(np.abs(rho.to_numpy())) <= 1.0
    for name in ("synthesis_map.png", "conventional_map.png"):
        with Image.open(out / name) as img:
            assert img.width > 300
    tops = json.loads((out / "top_genes.json").read_text())
    assert set(tops) == {"synthesis", "conventional"} and len(tops["synthesis"]["mean_hu"]) == 10
    scores = json.loads((out / "truth_scores.json").read_text())
    assert set(scores) == {"synthesis", "conventional"} and len(scores["synthesis"]["pairings"]) == 5
    assert scores["conventional"]["main_drivers"]["n_pairs"] == 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patients"] == 8 and summary["num_latents"] == 2 and summary["n_units"] == 12
    assert not leftovers(tmp_path)

    # a gene the model does not know: clear error, nothing written
    out2 = tmp_path / "map2"
    wf = workflow(
        "radiogenomic_map.yaml", dataset_dir=str(setup["prepared"]), ckpt_file=str(setup["ckpt"]),
        output_dir=str(out2), genes=["G1", "NOPE"], progress=False, device="$torch.device('cpu')",
    )  # fmt: skip
    with pytest.raises(Exception) as err:
        wf.run()
    assert chain_matches(err.value, "not model genes: NOPE")
    assert not out2.exists() and not leftovers(tmp_path)


def test_effect_of_a_gene_the_generator_ignores_is_zero(tmp_path):
    """On a real RGGenerator whose encoder ignores gene 5 (zero input weights) that gene's effect is 0."""
    from rggan.inference import build_inputs, load_generator

    setup = make_setup(tmp_path)
    g = load_generator(setup["ckpt"], setup["prepared"])
    with torch.no_grad():
        g.gene_encoder[0].weight[:, 5] = 0.0
    reqs = build_inputs(setup["prepared"], num_genes=12, image_size=32, latent_size=4, num_samples=1, split="all")
    res = synthesis_map(g, reqs, GENES, genes=["G4", "G5"], delta=1.0)
    assert np.allclose(res["effect"].loc["G5"].fillna(0).to_numpy(), 0.0)
    assert not math.isnan(res["effect"].loc["G4", "area_mm2"])


def test_find_truth_beside_the_raw_download(tmp_path):
    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    raw.mkdir()
    prepared.mkdir()
    assert find_truth(prepared) is None
    (raw / "demo_truth.json").write_text(json.dumps(_truth(GENES)))
    (prepared / "report.json").write_text(json.dumps({"input": str(raw)}))
    assert find_truth(prepared) == raw / "demo_truth.json"
    with pytest.raises(InputError, match="not a demo truth file"):
        (tmp_path / "x.json").write_text("{}")
        from rggan.radiogenomic_map import load_truth

        load_truth(tmp_path / "x.json")


def test_resolve_truth_arguments(tmp_path):
    from rggan.radiogenomic_map import resolve_truth

    for off in (None, "None", "null", "false", ""):
        assert resolve_truth(off, tmp_path) is None
    assert resolve_truth("auto", tmp_path) is None
    with pytest.raises(InputError, match="not found"):
        resolve_truth(tmp_path / "nope.json", tmp_path)


def test_bootstrap_ci_matches_a_reference_resampling():
    """Per-cell percentile intervals from patients resampled: checked against a plain numpy bootstrap."""
    from rggan.radiogenomic_map import bootstrap_ci

    rng = np.random.default_rng(0)
    per_patient = rng.normal(1.0, 2.0, (3, 40, len(FEATURE_NAMES)))
    per_patient[2] = 0.0  # a gene without effect: a zero-width interval at 0
    ci = bootstrap_ci(torch.from_numpy(per_patient), ["a", "b", "c"], n_boot=2000, seed=1)
    ref = np.stack([per_patient[:, rng.integers(0, 40, 40)].mean(1) for _ in range(2000)])
    lo, hi = np.quantile(ref, 0.025, axis=0), np.quantile(ref, 0.975, axis=0)
    assert np.allclose(ci["lo"].to_numpy(), lo, atol=0.12) and np.allclose(ci["hi"].to_numpy(), hi, atol=0.12)
    mean = per_patient.mean(1)
    assert (ci["lo"].to_numpy()[:2] < mean[:2]).all() and (mean[:2] < ci["hi"].to_numpy()[:2]).all()
    assert np.allclose(ci["lo"].loc["c"], 0.0) and np.allclose(ci["hi"].loc["c"], 0.0)
    width = (ci["hi"] - ci["lo"]).to_numpy()[:2].mean()
    assert width == pytest.approx(2 * 1.96 * 2.0 / math.sqrt(40), rel=0.15)  # ~ the normal interval


def test_synthesis_map_per_patient_effects_average_to_the_map():
    reqs = _requests()
    for i, r in enumerate(reqs):
        r["patient"] = f"P{i // 2}"  # 3 patients x 2 latents
    out = synthesis_map(DiskGenerator(), reqs, ["g0", "g1", "g2", "g3"], delta=0.25)
    assert out["patients"] == ["P0", "P1", "P2"] and out["per_patient"].shape == (4, 3, len(FEATURE_NAMES))
    assert np.allclose(out["per_patient"].nanmean(1).numpy(), out["effect"].to_numpy(), equal_nan=True)


def test_conventional_map_q_values_are_scipy_fdr():
    rng = np.random.default_rng(0)
    feats = pd.DataFrame(rng.normal(size=(30, len(FEATURE_NAMES))), columns=list(FEATURE_NAMES))
    expr = pd.DataFrame(rng.normal(size=(30, 20)), columns=[f"g{i}" for i in range(20)])
    expr["g0"] = feats["mean_hu"] + 0.1 * rng.normal(size=30)
    out = conventional_map(feats, expr)
    for f in FEATURE_NAMES:
        assert np.allclose(out["q"][f], stats.false_discovery_control(out["p"][f].to_numpy()))
    assert out["q"].loc["g0", "mean_hu"] < 1e-6 and (out["q"] >= out["p"] - 1e-12).all().all()


def test_map_agreement():
    from rggan.radiogenomic_map import map_agreement

    rng = np.random.default_rng(0)
    base = pd.DataFrame(rng.normal(size=(50, 3)), index=[f"g{i}" for i in range(50)], columns=["a", "b", "c"])
    scaled = base * [1.0, 100.0, 0.01]  # units differ per column: standardised away
    noisy = base + rng.normal(scale=0.1, size=base.shape)
    other = pd.DataFrame(rng.normal(size=(50, 3)), index=base.index, columns=base.columns)
    out = map_agreement([base, scaled, noisy, other])
    by_pair = {(p["a"], p["b"]): p["spearman"] for p in out["pairs"]}
    assert by_pair[(0, 1)] > 0.99 and by_pair[(0, 2)] > 0.95 and abs(by_pair[(0, 3)]) < 0.2
    assert out["min_spearman"] == pytest.approx(min(by_pair.values()))
    with pytest.raises(InputError):
        map_agreement([base])


def test_traversal_sets_the_gene_and_keeps_the_rest():
    from rggan.traversal import traversal_images, traversal_strip

    reqs = _requests(n=3)
    imgs = traversal_images(DiskGenerator(), reqs, gene_index=0, values=(-1.0, 0.0, 1.0))
    assert imgs["image"].shape == (3, 3, 48, 48)
    area = (imgs["mask"] > 0).flatten(2).sum(2).float()
    # radius 8 + 2 * value px, whatever the patient's own gene 0
    assert torch.allclose(area, torch.tensor([math.pi * 6**2, math.pi * 8**2, math.pi * 10**2]).expand(3, 3), rtol=0.08)
    strip = traversal_strip(imgs, title="t", row_labels=["a", "b", "c"], values=(-1.0, 0.0, 1.0))
    assert strip.ndim == 3 and strip.shape[2] == 3 and strip.shape[0] > 3 * 96
# ---------------------------------------------------------------------------------------------- fast map


class EmbeddingDiskGenerator(torch.nn.Module):
    """A disk generator behind a real (nonlinear) gene encoder, with the fast map's interface.

    ``e = W2 LeakyReLU(W1 rna)`` (E = 3); radius ``8 + 2 e0`` px, brightness ``base + 0.1 e1`` inside; e2 unused.
    Counts the generations it is asked for (``generated``).
    """

    def __init__(self, num_genes: int = 6, size: int = 48) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.gene_encoder = torch.nn.Sequential(
            torch.nn.Linear(num_genes, 8, bias=False), torch.nn.LeakyReLU(0.2), torch.nn.Linear(8, 3, bias=False)
        )
        with torch.no_grad():
            for layer in (self.gene_encoder[0], self.gene_encoder[2]):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
        yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
        self.register_buffer("rr", ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt())
        self.generated = 0

    def encode_background(self, base):
        return [base]

    def synthesise(self, e, z, base, background=None):
        self.generated += e.shape[0]
        radius = (8.0 + 2.0 * e[:, 0]).view(-1, 1, 1, 1)
        mask = (radius - self.rr).clamp(-1, 1)
        image = torch.where(mask > 0, base + 0.1 * e[:, 1].view(-1, 1, 1, 1), base)
        return SimpleNamespace(image=image, mask=mask)

    def embed(self, rna):
        return self.gene_encoder(rna)

    def forward(self, rna, z, base):
        return self.synthesise(self.embed(rna), z, base)


def test_fast_map_matches_the_exact_map_through_a_nonlinear_encoder():
    """mean HU is linear in e1, so the fast map (any step) must equal the exact map; radius up to pixel steps."""
    from rggan.fast_map import fast_synthesis_map

    net = EmbeddingDiskGenerator(num_genes=6)
    requests = _requests(n=24, g=6)
    genes = [f"G{i}" for i in range(6)]
    exact = synthesis_map(net, requests, genes, delta=0.5)["effect"]
    fast = fast_synthesis_map(net, requests, genes, delta=0.5, directions="all")
    assert fast["info"]["directions"] == 3 and fast["info"]["generations"] == 24 * 6
    np.testing.assert_allclose(fast["effect"]["mean_hu"], exact["mean_hu"], rtol=1e-4, atol=1e-3)
    # the radius moves in whole pixels: the two maps agree in sign and roughly in size
    r_exact, r_fast = exact["equivalent_radius_mm"], fast["effect"]["equivalent_radius_mm"]
    assert stats.spearmanr(r_exact, r_fast).statistic > 0.9
    np.testing.assert_allclose(r_fast, r_exact, rtol=0.35, atol=0.05)
    # at a tiny delta (no LeakyReLU kink crossed) the encoder secant is its Jacobian: 75 HU x mean d e1 / d rna
    small = fast_synthesis_map(net, requests, genes, delta=1e-4, directions="all")["effect"]["mean_hu"]
    jac = torch.func.vmap(torch.func.jacrev(net.gene_encoder))(torch.tensor(np.stack([r["rna"] for r in requests])))
    np.testing.assert_allclose(small, 75.0 * jac[:, 1].mean(0).detach().numpy(), rtol=1e-3, atol=1e-2)


def test_fast_map_auto_step_is_the_typical_genes_half_shift():
    """``step="auto"``: the median over pilot samples x genes of |Δe| / 2, not a mean the largest shifts pull up."""
    from rggan.fast_map import embedding_shifts, fast_synthesis_map

    net = EmbeddingDiskGenerator(num_genes=6)
    with torch.no_grad():
        net.gene_encoder[0].weight[:, 0] *= 50.0  # one gene moves the embedding far more than the others
    requests = _requests(n=8, g=6)
    rna = torch.tensor(np.stack([r["rna"] for r in requests]))
    with torch.no_grad():
        norms = torch.linalg.vector_norm(embedding_shifts(net, rna, torch.eye(6), 0.5), dim=-1)
        e_rms = float(net.gene_encoder(rna).square().sum(1).mean().sqrt())
    fast = fast_synthesis_map(net, requests, [f"G{i}" for i in range(6)], delta=0.5, directions="all")
    assert float(norms.median()) / 2 > 1e-3 * e_rms  # the floor does not apply here
    assert fast["info"]["step"] == pytest.approx(float(norms.median()) / 2, rel=1e-5)
    assert fast["info"]["step"] < float(norms.square().mean().sqrt()) / 4  # the RMS is the big gene's


def test_fast_map_cost_does_not_grow_with_genes():
    from rggan.fast_map import fast_synthesis_map

    counts = {}
    for g in (6, 60):
        net = EmbeddingDiskGenerator(num_genes=g)
        fast_synthesis_map(net, _requests(n=5, g=g), [f"G{i}" for i in range(g)], directions=2, batch_size=8)
        counts[g] = net.generated
    assert counts[6] == counts[60] == 5 * 2 * 2
    net = EmbeddingDiskGenerator(num_genes=6)  # the exact map: 2 per gene x sample
    synthesis_map(net, _requests(n=5, g=6), [f"G{i}" for i in range(6)])
    assert net.generated == 5 * 6 * 2


def test_fast_map_on_an_rggenerator(tmp_path):
    """Fewer directions than embed_dim on a real generator: finite effects, modules, explained energy in (0, 1]."""
    from rggan.fast_map import fast_synthesis_map
    from rggan.inference import build_inputs, load_generator

    setup = make_setup(tmp_path)
    g = load_generator(setup["ckpt"], setup["prepared"])
    e0 = g.gene_encoder(torch.zeros(2, g.num_genes))
    z, base = torch.zeros(2, g.latent_size), torch.full((2, 1, g.image_size, g.image_size), -0.7)
    bg = g.encode_background(base)
    torch.testing.assert_close(g.synthesise(e0, z, base, bg).image, g(torch.zeros(2, g.num_genes), z, base).image)
    req = build_inputs(
        setup["prepared"], num_genes=12, image_size=g.image_size, latent_size=g.latent_size, num_samples=1, split="all"
    )
    out = fast_synthesis_map(g, req, GENES, directions=2, modules={"m": ["G0", "G1"], "n": ["G2"]})
    assert list(out["effect"].index) == ["m", "n"] and out["info"]["directions"] == 2
    assert 0 < out["info"]["explained_shift_energy"] <= 1 + 1e-6 and out["info"]["generations"] == len(req) * 4
    assert np.isfinite(out["effect"]["area_mm2"]).all()
    with pytest.raises(InputError, match="directions"):
        fast_synthesis_map(g, req, GENES, directions=0)


def test_exact_map_encodes_each_background_once_with_the_same_result(tmp_path):
    """On an RGGenerator the exact map reuses each chunk's background encoding across the genes."""
    from rggan.inference import build_inputs, load_generator

    setup = make_setup(tmp_path)
    g = load_generator(setup["ckpt"], setup["prepared"])
    req = build_inputs(
        setup["prepared"], num_genes=12, image_size=g.image_size, latent_size=g.latent_size, num_samples=2, split="all"
    )
    calls = []
    g.background_encoder[0].register_forward_hook(lambda *_: calls.append(1))

    class Whole(torch.nn.Module):  # the same generator, seen only through its forward
        def __init__(self) -> None:
            super().__init__()
            self.g = g

        def forward(self, rna, z, base):
            return self.g(rna, z, base)

    reused = synthesis_map(g, req, GENES, batch_size=8)
    n_reused, calls[:] = len(calls), []
    whole = synthesis_map(Whole(), req, GENES, batch_size=8)
    assert n_reused == -(-len(req) // 4) and len(calls) == len(GENES) * n_reused  # one per chunk vs one per batch
    pd.testing.assert_frame_equal(reused["effect"], whole["effect"], rtol=1e-6, atol=1e-9)


def test_radiogenomic_map_workflow_fast_method(tmp_path):
    setup = make_setup(tmp_path)
    out = tmp_path / "map"
    wf = workflow(
        "radiogenomic_map.yaml", dataset_dir=str(setup["prepared"]), ckpt_file=str(setup["ckpt"]), output_dir=str(out),
        num_latents=1, progress=False, device="$torch.device('cpu')", method="fast", directions=2, truth_file=None,
    )  # fmt: skip
    wf.run()
    eff = pd.read_csv(out / "synthesis_map.csv", index_col=0)
    assert eff.shape == (12, len(FEATURE_NAMES)) and list(eff.index) == GENES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["map_method"] == "fast" and summary["fast_map"]["directions"] == 2
    assert summary["fast_map"]["generations"] == summary["patients"] * 4


def _conversions(monkeypatch, fn) -> int:
    """Tensor -> Python conversions (each a host sync on a GPU) made while ``fn()`` runs."""
    seen = [0]
    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, **kwargs):
            seen[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    try:
        fn()
    finally:
        monkeypatch.undo()
    return seen[0]


def test_maps_make_no_host_round_trip_per_batch(monkeypatch):
    """Both maps run batch-wise on the device: 3x the batches, the same tensor -> Python conversions.

    (Not with ``main_component_only``: its flood fill tests convergence, a host sync, every 8 growth steps.)
    """
    from rggan.fast_map import fast_synthesis_map

    genes = [f"G{i}" for i in range(6)]
    requests = _requests(n=12, g=6)
    kw = {"delta": 0.5}
    net = EmbeddingDiskGenerator(num_genes=6)
    exact = {
        b: _conversions(monkeypatch, lambda b=b: synthesis_map(net, requests, genes, batch_size=b, **kw))
        for b in (48, 16)  # 72 generations: 2 and 6 batches
    }
    fast = {
        b: _conversions(
            monkeypatch, lambda b=b: fast_synthesis_map(net, requests, genes, directions=2, batch_size=b, **kw)
        )
        for b in (24, 8)  # 4 generations per sample: 2 and 6 batches
    }
    assert exact[48] == exact[16] and fast[24] == fast[8], (exact, fast)


def test_map_rejects_non_positive_spacing():
    requests = _requests(n=2)
    requests[1]["spacing"] = [1.0, 0.0]
    with pytest.raises(InputError, match="spacing"):
        synthesis_map(DiskGenerator(), requests, ["g0", "g1", "g2", "g3"])


def test_synthesis_map_reads_hu_with_the_given_window():
    """A window twice as wide doubles the HU effects: G's [-1, 1] outputs are turned back into HU with it."""
    genes = ["RAD", "HU", "NONE1", "NONE2"]
    eff = synthesis_map(DiskGenerator(), _requests(), genes, batch_size=6, hu_range=(-1000.0, 2000.0))["effect"]
    assert eff.loc["HU", "mean_hu"] == pytest.approx(150.0, rel=1e-3)  # 0.1 unit * 1500 HU per unit
    assert eff.loc["RAD", "equivalent_radius_mm"] == pytest.approx(2.0, abs=0.4)  # geometry does not depend on it


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_radiogenomic_map_workflow_uses_the_datalist_hu_range(tmp_path, method):
    """`run radiogenomic_map` reads the prepared dataset's hu_range (rggan.intensity), not a default window."""
    from rggan.features import nodule_features

    setup = make_setup(tmp_path)
    datalist_path = setup["prepared"] / "datalist.json"
    datalist = json.loads(datalist_path.read_text())
    maps, reals = {}, {}
    for window in ([-1000.0, 500.0], [-1000.0, 2000.0]):  # the default window, then one twice as wide
        datalist["hu_range"] = window
        datalist_path.write_text(json.dumps(datalist))
        out = tmp_path / f"map{window[1]:g}"
        workflow(
            "radiogenomic_map.yaml", dataset_dir=str(setup["prepared"]), ckpt_file=str(setup["ckpt"]),
            output_dir=str(out), num_latents=1, progress=False, device="$torch.device('cpu')", method=method,
            directions=2, truth_file=None, n_boot=0, traversal_top_n=0,
        ).run()  # fmt: skip
        maps[window[1]] = pd.read_csv(out / "synthesis_map.csv", index_col=0)
        reals[window[1]] = pd.read_csv(out / "real_features.csv", index_col=0)
    items = datalist["training"] + datalist["validation"]
    image = torch.from_numpy(np.stack([np.load(setup["prepared"] / it["image"]) for it in items]))
    mask = torch.from_numpy(np.stack([np.load(setup["prepared"] / it["mask"]) for it in items]))
    expected = nodule_features(image, mask, torch.tensor([it["spacing"] for it in items]), hu_range=(-1000.0, 2000.0))
    np.testing.assert_allclose(reals[2000.0]["mean_hu"].to_numpy(), expected["mean_hu"].numpy(), rtol=1e-5)
    for feature in ("mean_hu", "std_hu"):  # HU per unit doubles (750 -> 1500): so do the HU effects
        np.testing.assert_allclose(maps[2000.0][feature], 2.0 * maps[500.0][feature], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps[2000.0]["area_mm2"], maps[500.0]["area_mm2"], rtol=1e-6, atol=1e-9)


def test_old_module_paths_keep_every_name():
    """rggan.radiogenomic_map and rggan.fast_map re-export every name they had before the split into
    rggan.radiogenomic (the bundle configs and users import from them), private helpers included."""
    import importlib

    old = {
        "rggan.radiogenomic_map": [
            "PHENOTYPE_FEATURES", "synthesis_map", "bootstrap_ci", "real_features", "conventional_map",
            "find_truth", "resolve_truth", "load_truth", "planted_effects", "score_against_truth",
            "phenotype_scales", "expected_associations", "summarise_scores", "map_agreement",
            "main_driver_agreement", "top_genes", "heatmap_png", "run_radiogenomic_map", "_units",
            "_check_map_inputs", "_collate", "_mean_sem", "_spearman_matrix", "_spearman", "_top_frame", "_font",
            "_colour", "_write_traversals", "_read_modules",
        ],
        "rggan.fast_map": ["embedding_shifts", "shift_directions", "fast_synthesis_map", "_encoder_parts"],
        "rggan.traversal": ["traversal_images", "traversal_strip", "traversal_figures", "DEFAULT_VALUES", "_tile"],
    }  # fmt: skip
    for module, names in old.items():
        mod = importlib.import_module(module)
        assert [n for n in names if not hasattr(mod, n)] == [], module
        assert all(hasattr(mod, n) for n in mod.__all__), module
