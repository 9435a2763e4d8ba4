"""The checkpoint workflows' configs only wire: one generator overlay, workflows as `_target_` components."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
import yaml
from monai.bundle import ConfigParser

from rggan.workflows import ConfigOverlay

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
CONFIGS = BUNDLE / "configs"
USERS = ["inference.yaml", "evaluate.yaml", "radiogenomic_map.yaml"]  # the configs that use generator.yaml
HANDED_OVER = {"ckpt_file", "ckpt_key", "dataset_dir", "device", "num_genes", "embed_dim", "g_ls", "g_n_feat",
               "code_kernel", "image_size", "double_tanh"}  # fmt: skip


def _raw(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


@pytest.mark.parametrize("name", USERS)
def test_generator_block_is_written_once(name):
    """The RGGenerator wiring lives in generator.yaml; each workflow hands over its own ids and nothing else."""
    config = _raw(name)
    assert "rggan.networks" not in (CONFIGS / name).read_text() and "resolve_sizes" not in (CONFIGS / name).read_text()
    generator = config["generator"]
    assert generator["_target_"] == "rggan.workflows.ConfigOverlay"
    assert "'generator.yaml'" in generator["config_file"] and "@bundle_root" in generator["config_file"]
    handed = {k: v for k, v in generator.items() if k not in ("_target_", "config_file")}
    assert handed == {k: f"@{k}" for k in HANDED_OVER}  # every one an id of the workflow's own config
    assert HANDED_OVER <= set(config) and HANDED_OVER <= set(_raw("generator.yaml"))


@pytest.mark.parametrize("name", USERS)
def test_overlay_follows_bundle_root_and_gets_the_overrides(tmp_path, monkeypatch, name):
    """A relocated bundle's generator.yaml is the one read; command-line values of the handed-over ids reach it."""
    copy = tmp_path / "zoo" / "bundle"
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("ModelOut"))
    overlay = copy / "configs" / "generator.yaml"
    text = overlay.read_text()
    start = text.index("\nsizes:")
    overlay.write_text(text[:start] + "\nsizes: \"$('copy', @embed_dim, @ckpt_key, @ckpt_file, @double_tanh)\"\n")
    monkeypatch.chdir(tmp_path)
    parser = ConfigParser()
    parser.read_config(str(copy / "configs" / name))
    parser.update({"bundle_root": str(copy), "embed_dim": 7, "ckpt_key": "generator", "ckpt_file": "x.pt"})
    assert parser.get_parsed_content("sizes") == ("copy", 7, "generator", "x.pt", False)


def test_config_overlay_reads_its_own_defaults(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("a: 1\nb: 2\nsum: '$@a + @b'\n")
    assert ConfigOverlay(overlay, b=10).get("sum") == 11
    assert ConfigOverlay(overlay).get("sum") == 3


def _workflow(name: str, **override):
    """The `workflow` component of ``name`` (a partial of the workflow function), with the generator stubbed."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / name))
    parser.update({"network": "$None", "sizes": {"latent_size": 4, "image_size": 32}, "ckpt_file": "c.pt",
                   "dataset_dir": "d", "output_dir": "o", "device": "$torch.device('cpu')", **override})  # fmt: skip
    return parser.get_parsed_content("workflow")


def test_radiogenomic_map_workflow_is_a_component_of_overridable_ids():
    from rggan.radiogenomic_map import run_radiogenomic_map

    wf = _workflow("radiogenomic_map.yaml", num_latents=8, delta=0.25, genes=["A"])
    assert wf.func is run_radiogenomic_map
    params = inspect.signature(run_radiogenomic_map).parameters
    assert set(wf.keywords) == set(params)  # every argument wired (none left to a default the config hides)
    assert (wf.keywords["num_latents"], wf.keywords["delta"], wf.keywords["genes"]) == (8, 0.25, ["A"])
    assert (wf.keywords["latent_size"], wf.keywords["image_size"]) == (4, 32)
    assert wf.keywords["settings"] == {"ckpt_file": "c.pt", "dataset_dir": "d"}


def test_evaluate_workflow_is_a_component_of_overridable_ids():
    from rggan.evaluation import evaluate_generator, run_evaluation

    wf = _workflow("evaluate.yaml", num_samples=8, split="all")
    assert wf.func is run_evaluation
    accepted = set(inspect.signature(evaluate_generator).parameters) | {"output_dir", "settings"}
    assert set(wf.keywords) == accepted  # every argument wired
    assert (wf.keywords["num_samples"], wf.keywords["split"]) == (8, "all")
    assert wf.keywords["settings"] == {"ckpt_file": "c.pt", "dataset_dir": "d"}


def test_generator_overlay_loads_a_phenotype_prior_from_the_weights(tmp_path):
    """A model trained with ``phenotype_prior: true`` loads in inference/evaluate/map with its saved prior."""
    import numpy as np
    import torch

    from rggan.networks import RGGenerator

    w, c = np.arange(18, dtype=np.float32).reshape(3, 6) / 10, np.array([0.5, -0.5, 0.0], np.float32)
    net = RGGenerator(6, embed_dim=8, latent_size=4, g_n_feat=4, image_size=32, phenotype_prior=(w, c)).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    loaded = ConfigOverlay(CONFIGS / "generator.yaml", ckpt_file=str(tmp_path / "model.pt")).get("network")
    assert torch.equal(loaded.prior_weight, torch.from_numpy(w)) and torch.equal(loaded.prior_bias, torch.from_numpy(c))
    rna = torch.randn(2, 6)
    assert torch.allclose(loaded.embed(rna), net.embed(rna))


@pytest.mark.parametrize(("target", "margin_mm", "uses"), [("feature", 0.0, False), ("slices", 8.0, True)])
def test_slices_margin_target_prepares_and_reads_slice_averaged_margins(tmp_path, target, margin_mm, uses):
    """``shape_target: slices`` alone turns on prepare's ``margin_mm`` and the G loss's ``real_margin``."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update({"dataset_dir": str(tmp_path / "raw"), "output_dir": str(tmp_path / "out"), "shape_target": target})
    kwargs = parser.get_parsed_content("prepare").prepare_kwargs
    assert kwargs["margin_mm"] == margin_mm and "margin_slices" not in kwargs
    assert parser.get_parsed_content("gloss").uses_margin is uses
    assert parser.get_parsed_content("slice_margin") is uses


def test_shrink_terms_shrinks_only_the_margin_target_toward_the_genes_read_out(prepared_demo, tmp_path):
    """``shrink_terms: [shape]``: ``c_shape``'s target is the margin's lasso read-out, ``c_tex``'s the real one."""
    import numpy as np

    from rggan.adaptive_lasso import lasso_prediction

    folder = str(prepared_demo.output_dir)
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.yaml"), str(CONFIGS / "demo_map.yaml")])
    parser.update({"dataset_dir": folder, "output_dir": str(tmp_path / "out"), "shape_target": "feature"})
    assert parser.get_parsed_content("gloss").target_shrinkage == 0.0  # demo_map.yaml: off
    parser.update({"target_shrinkage": 1.0, "shrink_terms": ["shape"]})
    gloss = parser.get_parsed_content("gloss")
    assert gloss.target_shrinkage == 1.0 and set(gloss.target_priors) == {"shape"}
    weights, intercept = lasso_prediction(folder, "irregularity")
    np.testing.assert_allclose(gloss.target_priors["shape"][0].numpy(), weights, rtol=1e-5, atol=1e-7)
    assert gloss.target_priors["shape"][1] == pytest.approx(intercept)

    parser = ConfigParser()  # train.yaml's default terms: both
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update({"dataset_dir": folder, "output_dir": str(tmp_path / "out2"), "target_shrinkage": 0.5})
    assert set(parser.get_parsed_content("gloss").target_priors) == {"shape", "tex"}
