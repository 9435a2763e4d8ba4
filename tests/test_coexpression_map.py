"""The co-expression perturbation of the synthesis maps: a gene carries its co-expressed genes with it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from rggan.errors import InputError
from rggan.radiogenomic.perturbation import coexpression_slopes, unit_shifts
from rggan.radiogenomic_map import synthesis_map
from tests.test_inference import GENES, chain_matches, make_setup, workflow
from tests.test_radiogenomic_map import DiskGenerator, EmbeddingDiskGenerator, _requests


def _cohort(n: int = 60, seed: int = 0) -> np.ndarray:
    """patients x 4 genes: gene 3 follows gene 1 (slope 0.8), gene 2 is constant, gene 0 independent."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[:, 3] = 0.8 * x[:, 1] + 0.3 * rng.normal(size=n)
    x[:, 2] = 1.5
    return x


def test_coexpression_slopes_are_least_squares_slopes():
    x = _cohort()
    b = coexpression_slopes(pd.DataFrame(x, columns=list("abcd")))
    assert b.shape == (4, 4) and b.dtype == np.float32
    for g in (0, 1, 3):
        for j in range(4):
            want = 1.0 if g == j else np.polyfit(x[:, g], x[:, j], 1)[0]
            assert b[g, j] == pytest.approx(want, abs=1e-5)
    np.testing.assert_array_equal(b[2], [0, 0, 1, 0])  # no variance: the gene moves alone
    assert b[1, 3] == pytest.approx(0.8, abs=0.1)
    with pytest.raises(InputError, match=">= 3 patients"):
        coexpression_slopes(x[:2])


def test_coexpression_map_is_the_gene_map_chained_through_the_slopes():
    """mean HU is linear in gene 1 (75 HU per unit): the co-expression effect of g is 75 x slope(1 on g)."""
    genes = ["RAD", "HU", "NONE1", "NONE2"]
    b = coexpression_slopes(_cohort())
    alone = synthesis_map(DiskGenerator(), _requests(), genes, delta=0.5)["effect"]
    carried = synthesis_map(DiskGenerator(), _requests(), genes, delta=0.5, coexpression=b)["effect"]
    assert alone.loc["NONE2", "mean_hu"] == 0.0  # alone, the partner of HU does nothing
    np.testing.assert_allclose(carried["mean_hu"], 75.0 * b[:, 1], rtol=1e-3, atol=1e-3)
    assert carried.loc["NONE2", "mean_hu"] > 50.0  # it now carries HU with it
    np.testing.assert_allclose(unit_shifts([[0], [1], [2], [3]], 4, None, "cpu"), torch.eye(4))
    with pytest.raises(InputError, match="single genes"):
        synthesis_map(DiskGenerator(), _requests(), genes, modules={"m": ["RAD", "HU"]}, coexpression=b)
    with pytest.raises(InputError, match="shape"):
        synthesis_map(DiskGenerator(), _requests(), genes, coexpression=b[:3, :3])


def test_fast_map_matches_the_exact_map_under_coexpression():
    from rggan.fast_map import fast_synthesis_map

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6))
    x[:, 4] = 0.7 * x[:, 1] - 0.5 * x[:, 0] + 0.2 * rng.normal(size=40)
    b = coexpression_slopes(x)
    net, requests, genes = EmbeddingDiskGenerator(num_genes=6), _requests(n=24, g=6), [f"G{i}" for i in range(6)]
    exact = synthesis_map(net, requests, genes, delta=0.5, coexpression=b)["effect"]
    fast = fast_synthesis_map(net, requests, genes, delta=0.5, directions="all", coexpression=b)["effect"]
    np.testing.assert_allclose(fast["mean_hu"], exact["mean_hu"], rtol=1e-4, atol=1e-3)
    alone = synthesis_map(net, requests, genes, delta=0.5)["effect"]
    assert not np.allclose(alone["mean_hu"], exact["mean_hu"], rtol=0.05)  # the perturbation matters here


def test_traversal_with_slopes_moves_the_partner_genes():
    from rggan.traversal import traversal_images

    b = coexpression_slopes(_cohort())
    reqs = _requests(n=2)
    # NONE2 (gene 3) alone does nothing; with its slopes it carries HU (gene 1): the nodule brightens
    alone = traversal_images(DiskGenerator(), reqs, gene_index=3, values=(-2.0, 2.0))
    carried = traversal_images(DiskGenerator(), reqs, gene_index=3, values=(-2.0, 2.0), slopes=b[3])

    def inside(imgs):
        return (imgs["image"] * (imgs["mask"] > 0)).flatten(2).sum(2) / (imgs["mask"] > 0).flatten(2).sum(2)

    assert torch.allclose(inside(alone)[:, 0], inside(alone)[:, 1])
    lift = inside(carried)[:, 1] - inside(carried)[:, 0]
    torch.testing.assert_close(lift, torch.full((2,), 0.1 * 4.0 * float(b[3, 1])), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("perturbation", ["coexpression", "gene"])
def test_workflow_records_its_perturbation(tmp_path, perturbation):
    setup = make_setup(tmp_path)
    out = tmp_path / "map"
    wf = workflow(
        "radiogenomic_map.yaml", dataset_dir=str(setup["prepared"]), ckpt_file=str(setup["ckpt"]), output_dir=str(out),
        num_latents=1, progress=False, device="$torch.device('cpu')", method="fast", directions=2, truth_file=None,
        perturbation=perturbation, traversal_top_n=0, n_boot=0,
    )  # fmt: skip
    wf.run()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["perturbation"] == perturbation
    eff = pd.read_csv(out / "synthesis_map.csv", index_col=0)
    assert list(eff.index) == GENES and np.isfinite(eff["area_mm2"]).all()


def test_workflow_rejects_an_unknown_perturbation(tmp_path):
    setup = make_setup(tmp_path)
    wf = workflow(
        "radiogenomic_map.yaml", dataset_dir=str(setup["prepared"]), ckpt_file=str(setup["ckpt"]),
        output_dir=str(tmp_path / "map"), progress=False, device="$torch.device('cpu')", perturbation="pathway",
    )  # fmt: skip
    with pytest.raises(Exception) as err:
        wf.run()
    assert chain_matches(err.value, "perturbation must be one of coexpression, gene, got 'pathway'")
    assert not (tmp_path / "map").exists()
