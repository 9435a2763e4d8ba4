"""Inference workflow (bundle/configs/inference.yaml + rggan.inference): outputs, HU/spacing, bad inputs."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from rggan.handlers import GeneratedNoduleWriter

from rggan.data.rna import GeneTransform, GeneTransformConfig
from rggan.errors import InputError
from rggan.inference import (
    build_inputs,
    latent_for,
    load_background,
    load_generator,
    resolve_sizes,
    sizes_from_state_dict,
    write_nifti,
)
from rggan.networks import RGGenerator, init_weights
from tests._prepared import make_prepared

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"
SIZES = {"num_genes": 12, "embed_dim": 8, "latent_size": 4, "g_n_feat": 4, "image_size": 32}
GENES = [f"G{i}" for i in range(SIZES["num_genes"])]


def make_checkpoint(path: Path, seed: int = 0, **overrides: int) -> Path:
    """A training-style checkpoint holding a tiny RGGenerator as ``generator`` and ``ema_generator``."""
    torch.manual_seed(seed)
    s = {**SIZES, **overrides}
    g = RGGenerator(s["num_genes"], embed_dim=s["embed_dim"], latent_size=s["latent_size"], g_n_feat=s["g_n_feat"],
                    image_size=s["image_size"]).apply(init_weights)  # fmt: skip
    sd = g.state_dict()
    torch.save({"generator": sd, "ema_generator": sd, "trainer": {"epoch": 1}}, path)
    return path


def make_setup(tmp_path: Path, n_train: int = 6, n_val: int = 2) -> dict[str, Path]:
    """Prepared folder (32 px, 12 genes G0..G11) + gene_transform.json + RNA table + checkpoint."""
    prepared = make_prepared(tmp_path / "prepared", n_train=n_train, n_val=n_val, image_size=32, num_genes=12)
    rng = np.random.default_rng(1)
    for bases in sorted(prepared.glob("samples/*/bases.npy")):  # make_prepared's constants are outside [-1, 1]
        b = np.load(bases)
        np.save(bases, np.clip(rng.normal(-0.8, 0.05, b.shape), -1, 1).astype(np.float32))
    patients = [f"R01-{i:03d}" for i in range(n_train + n_val)]
    expr = pd.DataFrame(rng.uniform(1, 50, (len(patients), len(GENES))), index=patients, columns=GENES)
    GeneTransform.fit(expr, patients[:n_train], GeneTransformConfig()).save(prepared / "gene_transform.json")
    geo = tmp_path / "rna.txt"
    expr.T.rename_axis("gene").to_csv(geo, sep="\t")
    ckpt = make_checkpoint(tmp_path / "checkpoint_epoch=1_iteration=1.pt")
    return {"prepared": prepared, "rna": geo, "ckpt": ckpt, "root": tmp_path, "expr": expr}


def workflow(config: str, **override):
    from monai.bundle import ConfigWorkflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(
            config_file=str(CONFIGS / config), workflow_type="infer", logging_file=str(CONFIGS / "logging.conf"),
            meta_file=None, **override,
        )  # fmt: skip
        wf.initialize()
    return wf


def chain_matches(exc: BaseException, pattern: str) -> bool:
    """True if ``pattern`` is found in the message of ``exc`` or of any exception it was raised from."""
    import re

    while exc is not None:
        if re.search(pattern, str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".staging-" in p.name]


@pytest.fixture
def setup(tmp_path):
    return make_setup(tmp_path)


def test_sizes_from_checkpoint_and_mismatch_message(setup, tmp_path):
    sizes = resolve_sizes(setup["ckpt"], setup["prepared"])
    flags = {"texture_noise": False, "film": False, "margin_harmonics": 0, "phenotype_features": 0}
    assert sizes == {**SIZES, "code_kernel": 2, **flags}  # flags read off the weights too
    with pytest.raises(InputError) as err:
        resolve_sizes(setup["ckpt"], setup["prepared"], embed_dim=16, g_n_feat=4, latent_size=5)
    msg = str(err.value)
    assert "embed_dim: checkpoint 8, configuration 16" in msg and "latent_size: checkpoint 4, configuration 5" in msg
    assert "g_n_feat" not in msg
    other = make_checkpoint(tmp_path / "other.pt", num_genes=10, image_size=64)
    with pytest.raises(
        InputError, match=r"num_genes: checkpoint 10, prepared dataset .* 12.*image_size: checkpoint 64"
    ):
        resolve_sizes(other, setup["prepared"])
    with pytest.raises(InputError, match="no 'ema_generator' entry"):
        torch.save({"trainer": {}}, tmp_path / "bad.pt")
        resolve_sizes(tmp_path / "bad.pt")
    with pytest.raises(InputError, match="not found"):
        resolve_sizes(tmp_path / "missing.pt")
    sd = torch.load(setup["ckpt"], weights_only=True)["ema_generator"]
    assert sizes_from_state_dict(sd)["image_size"] == 32


def test_inference_workflow_properties_and_outputs(setup):
    out = setup["root"] / "out"
    wf = workflow(
        "inference.yaml", dataset_dir=str(setup["prepared"]), ckpt_file=str(setup["ckpt"]), output_dir=str(out),
        num_samples=2, device="$torch.device('cpu')",
    )  # fmt: skip
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert len(rows) == 2 * 2  # 2 validation patients x 2 samples
    assert {r["patient"] for r in rows} == {"R01-006", "R01-007"}
    for r in rows:
        img = nib.load(out / r["image"])
        assert img.shape == (32, 32, 1)
        assert np.allclose(np.diag(img.affine)[:3], [0.7, 0.7, 1.0])
        data = img.get_fdata()
        assert -1000.0 - 1e-3 <= data.min() and data.max() <= 500.0 + 1e-3
        m = np.asarray(nib.load(out / r["mask"]).dataobj)
        assert set(np.unique(m)) <= {0, 1} and m.dtype == np.uint8
        with Image.open(out / r["preview"]) as png:
            assert png.size[0] >= 3 * 128 and png.mode == "RGB"
        assert float(r["area_mm2"]) >= 0
    assert not leftovers(out.parent)


def test_written_nifti_restores_hu_orientation_and_spacing(setup):
    """A prepared sample's known patch written by the writer comes back as HU with the sample's spacing."""
    item = json.loads((setup["prepared"] / "datalist.json").read_text())["validation"][0]
    image = np.load(setup["prepared"] / item["image"])  # (1, 32, 32) in [-1, 1]
    image[0, 3, 20] = 1.0  # an asymmetric marker: row 3, col 20 -> 500 HU
    mask = np.load(setup["prepared"] / item["mask"])
    spacing = [0.6, 0.9]
    out = setup["root"] / "known"
    writer = GeneratedNoduleWriter(out)
    writer.start()
    batch = {"id": ["P_s00"], "patient": ["P"], "sample": [0], "background": ["x"], "spacing": torch.tensor([spacing]),
             "base": torch.from_numpy(image[None])}  # fmt: skip
    writer.write(batch, torch.from_numpy(image[None]), torch.from_numpy(mask[None]))
    writer.commit()
    img = nib.load(out / "P" / "P_s00_image.nii.gz")
    hu = img.get_fdata()[:, :, 0].T  # voxels are (col, row, 1)
    assert np.allclose(hu, (image[0].astype(np.float64) + 1) * 750 - 1000, atol=1e-3)
    assert hu[3, 20] == pytest.approx(500.0)
    assert np.allclose(img.header.get_zooms()[:2], [0.9, 0.6])  # (col mm, row mm)
    assert np.allclose(np.diag(img.affine)[:2], [0.9, 0.6])
    m = np.asarray(nib.load(out / "P" / "P_s00_mask.nii.gz").dataobj)[:, :, 0].T
    assert np.array_equal(m, (mask[0] > 0).astype(np.uint8))
    # round trip through the background loader: same normalised patch, same spacing
    patch, sp = load_background(out / "P" / "P_s00_image.nii.gz", 32)
    assert np.allclose(patch[0], np.clip(image[0], -1, 1), atol=1e-5)
    assert np.allclose(sp, spacing)


def test_rna_file_inputs_and_gene_errors(setup, tmp_path):
    net_sizes = {"num_genes": 12, "image_size": 32, "latent_size": 4}
    reqs = build_inputs(setup["prepared"], rna_file=setup["rna"], num_samples=2, **net_sizes)
    assert len(reqs) == 8 * 2
    expected = GeneTransform.load(setup["prepared"] / "gene_transform.json").transform(setup["expr"])
    assert np.allclose(reqs[0]["rna"], expected[0], atol=1e-6)
    assert reqs[0]["background"] == "R01-000#0"
    # CSV patients x genes with two genes missing
    csv_path = tmp_path / "rna.csv"
    setup["expr"].drop(columns=["G3", "G7"]).rename_axis("patient").to_csv(csv_path)
    with pytest.raises(InputError, match=r"2 of the 12 fitted genes are missing.*G3, G7"):
        build_inputs(setup["prepared"], rna_file=csv_path, **net_sizes)
    filled = build_inputs(setup["prepared"], rna_file=csv_path, fill_missing="median", **net_sizes)
    assert len(filled) == 8 * 4
    # unknown patients
    with pytest.raises(InputError, match="R01-999"):
        build_inputs(setup["prepared"], patients=["R01-999"], **net_sizes)


def test_missing_background_is_a_clear_error(setup, tmp_path):
    sizes = {"num_genes": 12, "image_size": 32, "latent_size": 4}
    with pytest.raises(InputError, match="not found"):
        build_inputs(tmp_path / "nowhere", rna_file=setup["rna"], **sizes)
    with pytest.raises(InputError, match="background file .*missing.nii.gz not found"):
        build_inputs(setup["prepared"], rna_file=setup["rna"], backgrounds=[tmp_path / "missing.nii.gz"], **sizes)
    # user NIfTI backgrounds (64 px, resized to 32 px with the spacing scaled) and no prepared folder
    bg = tmp_path / "bg.nii.gz"
    write_nifti(bg, np.full((64, 64), -800.0), [0.5, 0.5], np.float32)
    reqs = build_inputs(
        tmp_path / "nowhere", rna_file=setup["rna"], backgrounds=[bg],
        gene_transform=setup["prepared"] / "gene_transform.json", **sizes,
    )  # fmt: skip
    assert reqs[0]["spacing"] == [1.0, 1.0]
    assert np.allclose(reqs[0]["base"], (-800 + 1000) / 750 - 1)
    three_d = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.float32), np.eye(4)), three_d)
    with pytest.raises(InputError, match="2-D patch"):
        load_background(three_d, 32)


@pytest.mark.parametrize(
    "override, match",
    [
        ({"embed_dim": 16}, "embed_dim: checkpoint 8, configuration 16"),
        ({"rna_file": "RNA_OTHER"}, "fitted genes are missing"),
        ({"split": "all", "base_index": 7}, "base_index 7"),
    ],
)
def test_bad_inputs_leave_no_outputs(setup, tmp_path, override, match):
    if override.get("rna_file") == "RNA_OTHER":
        other = tmp_path / "other.txt"
        setup["expr"].rename(columns=lambda g: "X" + g).T.to_csv(other, sep="\t")
        override = {**override, "rna_file": str(other)}
    out = tmp_path / "bad_out"
    wf = workflow(
        "inference.yaml", dataset_dir=str(setup["prepared"]), ckpt_file=str(setup["ckpt"]), output_dir=str(out),
        device="$torch.device('cpu')", **override,
    )  # fmt: skip
    with pytest.raises(Exception) as err:
        wf.run()
    assert chain_matches(err.value, match), err.value
    assert not out.exists() and not leftovers(tmp_path)


def test_failure_during_generation_leaves_no_partial_outputs(setup, tmp_path):
    out = tmp_path / "fail_out"
    wf = workflow(
        "inference.yaml", dataset_dir=str(setup["prepared"]), ckpt_file=str(setup["ckpt"]), output_dir=str(out),
        device="$torch.device('cpu')", split="all", batch_size=2,
    )  # fmt: skip
    net = wf.parser.get_parsed_content("network")
    calls = {"n": 0}

    def boom(module, args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated failure in batch 3")

    net.register_forward_pre_hook(boom)
    with pytest.raises(Exception) as err:
        wf.run()
    assert chain_matches(err.value, "simulated failure in batch 3")
    assert calls["n"] == 3 and not out.exists() and not leftovers(tmp_path)


def test_latents_are_fixed_per_patient_and_sample(setup):
    a = latent_for("R01-001", 2, 4, 12345)
    assert np.array_equal(a, latent_for("R01-001", 2, 4, 12345))
    assert not np.array_equal(a, latent_for("R01-001", 3, 4, 12345))
    assert not np.array_equal(a, latent_for("R01-001", 2, 4, 1))
    g = load_generator(setup["ckpt"], setup["prepared"])
    assert not g.training
    r1 = build_inputs(setup["prepared"], num_genes=12, image_size=32, latent_size=4, num_samples=2)
    r2 = build_inputs(setup["prepared"], num_genes=12, image_size=32, latent_size=4, num_samples=2, split="all")
    same = [r for r in r2 if r["id"] == r1[1]["id"]][0]
    assert np.array_equal(same["z"], r1[1]["z"])


def test_base_index_cycle_and_splits(setup):
    sizes = {"num_genes": 12, "image_size": 32, "latent_size": 4}
    reqs = build_inputs(setup["prepared"], num_samples=4, base_index="cycle", **sizes)
    assert [r["background"] for r in reqs[:4]] == ["R01-006#0", "R01-006#1", "R01-006#2", "R01-006#0"]
    assert len(build_inputs(setup["prepared"], num_samples=1, split="all", **sizes)) == 8
    assert len(build_inputs(setup["prepared"], num_samples=1, split="training", **sizes)) == 6
    with pytest.raises(InputError, match="split must be"):
        build_inputs(setup["prepared"], split="test", **sizes)
    with pytest.raises(InputError, match="--backgrounds needs --rna_file"):
        build_inputs(setup["prepared"], backgrounds=["x.nii.gz"], **sizes)


def test_old_inference_names_still_importable():
    """Every name rggan.inference had before its split, and the writer's old path (resolved lazily)."""
    import rggan.handlers

    import rggan.inference as inf

    old = inf.__all__ + ["_dataset_sizes", "_prepared_items", "_check_prepared", "_load_npy", "_to_uint8",
                         "_safe_name", "INDEX_NAME", "logger"]  # fmt: skip
    for name in old:
        assert getattr(inf, name) is not None, name
    assert inf.GeneratedNoduleWriter is rggan.handlers.GeneratedNoduleWriter
    from rggan.inference import GeneratedNoduleWriter as old_path

    assert old_path is GeneratedNoduleWriter
    import rggan.handlers.checkpoint as hc

    from rggan import checkpoint

    assert rggan.handlers.find_latest_checkpoint is checkpoint.find_latest_checkpoint
    assert hc.find_latest_checkpoint is checkpoint.find_latest_checkpoint
    assert hc.CHECKPOINT_PATTERN is checkpoint.CHECKPOINT_PATTERN


def test_core_never_imports_the_handlers():
    """Importing any core module loads no rggan.handlers module (the handlers import the core, not back)."""
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, rggan\n"
        "for m in pkgutil.walk_packages(rggan.__path__, 'rggan.'):\n"
        "    if not m.name.startswith(('rggan.handlers', 'rggan.bundle')):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('rggan.handlers'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)


def test_staged_output_commits_or_leaves_nothing(tmp_path):
    from rggan.staging import staged_output

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with staged_output(out) as staging:
            (staging / "a.txt").write_text("a")
            raise RuntimeError("boom")
    assert not out.exists() and not leftovers(tmp_path)
    with staged_output(out) as staging:
        (staging / "a.txt").write_text("a")
    assert (out / "a.txt").read_text() == "a" and not leftovers(tmp_path)
    with staged_output(out) as staging:  # into an existing folder: files added or replaced, others kept
        (staging / "b.txt").write_text("b")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"] and not leftovers(tmp_path)
