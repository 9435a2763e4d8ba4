"""Evaluation workflow (bundle/configs/evaluate.yaml + rggan.evaluation)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from rggan.diversity import mask_dice
from rggan.evaluation import format_metrics, ms_ssim_metric, pairwise_diversity
from rggan.features import FEATURE_NAMES
from tests.test_inference import GENES, leftovers, make_setup, workflow
from tests.test_radiogenomic_map import _truth


@pytest.mark.parametrize("size, scales", [(32, 2), (64, 3), (128, 4), (256, 5)])
def test_ms_ssim_scales_fit_the_image(size, scales):
    metric, n = ms_ssim_metric(size)
    assert n == scales
    x = torch.rand(2, 1, size, size) * 2 - 1
    assert torch.allclose(metric(x, x).flatten(), torch.ones(2), atol=1e-5)


def test_pairwise_diversity():
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    same = pairwise_diversity(torch.cat([x[:1]] * 3), torch.ones(3, 1, 32, 32), ["a", "a", "a"])
    assert same["ms_ssim"] == pytest.approx(1.0, abs=1e-5) and same["mask_dice"] == 1.0 and same["pairs"] == 3
    m = -torch.ones(4, 1, 32, 32)
    m[0, :, :16] = 1
    m[1, :, 16:] = 1
    diff = pairwise_diversity(x, m, ["a", "a", "b", "c"])  # one pair only (a, a)
    assert diff["pairs"] == 1 and diff["mask_dice"] == 0.0 and diff["ms_ssim"] < 0.5


def test_evaluate_workflow(tmp_path):
    setup = make_setup(tmp_path)
    truth = tmp_path / "demo_truth.json"
    truth.write_text(json.dumps(_truth(GENES)))
    out = tmp_path / "eval"
    wf = workflow(
        "evaluate.yaml", dataset_dir=str(setup["prepared"]), ckpt_file=str(setup["ckpt"]), output_dir=str(out),
        num_samples=3, truth_file=str(truth), device="$torch.device('cpu')",
    )  # fmt: skip
    wf.run()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["patients"] == 2 and metrics["generated"] == 6
    assert set(metrics["feature_realism"]) == set(FEATURE_NAMES)
    assert set(metrics["patient_fidelity_spearman"]) == set(FEATURE_NAMES)
    assert set(metrics["patient_fidelity_linear"]) == set(FEATURE_NAMES)  # NaN (null) with 2 held-out patients
    assert metrics["patient_fidelity_prior"] is None and metrics["prior_followed"] is None  # no phenotype prior
    w1 = metrics["feature_realism"]["mean_hu"]["w1"]
    assert w1 is not None and w1 >= 0
    bp = metrics["background_preservation"]["l1_outside_mask_hu"]
    assert bp is not None and 0 <= bp <= 1500
    assert 0 <= metrics["mask_image_consistency"]["empty_mask_fraction"] <= 1
    assert metrics["diversity"]["pairs"] == 2 * 3 and metrics["diversity"]["ms_ssim_scales"] == 2
    planted_features = {"equivalent_radius_mm", "area_mm2", "mean_hu", "std_hu", "irregularity"}
    assert set(metrics["patient_fidelity_ceiling"]) == planted_features
    pr = metrics["planted_recovery"]
    assert len(pr["synthesis"]) == 5 and pr["main_drivers"]["conventional"]["n_pairs"] == 8
    text = (out / "metrics.txt").read_text()
    assert "Wasserstein-1" in text and "main-driver Spearman" in text
    gen = pd.read_csv(out / "generated_features.csv", index_col=0)
    assert len(gen) == 6 and "patient" in gen.columns
    assert not leftovers(tmp_path)


def test_fidelity_ceiling_correlates_the_real_feature_with_the_planted_phenotype():
    from rggan.evaluation_metrics import fidelity_ceiling

    patients = [f"R01-{i:03d}" for i in range(6)]
    planted = [0.05, 0.20, 0.10, 0.30, 0.00, 0.15]
    truth = {"patients": {p: {"phenotypes": {"irregularity": v, "mean_hu": -v}} for p, v in zip(patients, planted)}}
    truth["patients"]["R01-099"] = {"phenotypes": {"irregularity": 1.0}}  # not held out: ignored
    real = pd.DataFrame(
        {"irregularity": [0.01, 0.04, 0.03, 0.05, 0.02, 0.035], "mean_hu": [1, 2, 3, 4, 5, 6], "std_hu": 0.0},
        index=patients,
    )
    ceiling = fidelity_ceiling(real, truth)
    assert ceiling["irregularity"] == pytest.approx(0.9429, abs=1e-3)  # one pair of neighbours swapped
    assert ceiling["mean_hu"] == pytest.approx(-0.0286, abs=1e-3)
    assert math.isnan(ceiling["std_hu"])  # no planted texture in this truth
    assert "equivalent_radius_mm" not in ceiling  # not a column of ``real``


def test_format_metrics_handles_nan():
    m = {
        "patients": 1, "split": "validation", "samples_per_patient": 1, "generated": 1,
        "feature_realism": {f: {"unit": "1", "w1": math.nan, "w1_over_sd": math.nan, "generated_mean": 0.0,
                                "real_mean": 0.0} for f in FEATURE_NAMES},
        "background_preservation": {"l1_outside_mask_hu": 1.0},
        "mask_image_consistency": {"empty_mask_fraction": 1.0},
        "diversity": {"ms_ssim": math.nan, "pairs": 0},
    }  # fmt: skip
    assert "nan" in format_metrics(m)


def test_evaluation_handler_logs_every_interval(tmp_path):
    from ignite.engine import Engine
    from rggan.handlers import EvaluationHandler

    from rggan.inference import load_generator

    setup = make_setup(tmp_path)
    g = load_generator(setup["ckpt"], setup["prepared"])
    g.train()

    class Writer:
        def __init__(self):
            self.calls = []

        def add_scalar(self, tag, value, step):
            self.calls.append((tag, step))

    writer = Writer()
    handler = EvaluationHandler(g, setup["prepared"], interval=2, num_samples=2, summary_writer=writer)
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    engine.run([0], max_epochs=4)
    assert [epoch for epoch, _ in handler.history] == [2, 4]
    assert ("eval/background_l1_hu", 2) in writer.calls
    assert g.training  # the network's mode is restored


def _hand_written_dice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The Dice rggan.evaluation computed by hand before it used monai.metrics.compute_dice."""
    a, b = (a > 0).flatten(1).float(), (b > 0).flatten(1).float()
    den = a.sum(1) + b.sum(1)
    return torch.where(den > 0, 2 * (a * b).sum(1) / den.clamp(min=1), torch.ones_like(den))


def test_mask_dice_is_the_former_hand_written_dice():
    """monai.metrics.compute_dice (ignore_empty=False) gives bit-identical Dice on random masks of any density.

    Empty masks keep today's behaviour: two empty masks are identical (Dice 1, not MONAI's default NaN),
    an empty and a non-empty mask have Dice 0, in either order.
    """
    gen = torch.Generator().manual_seed(0)
    n = 200
    density = torch.rand(n, 1, 1, 1, generator=gen)  # from almost empty to almost full
    a = torch.where(torch.rand(n, 1, 24, 24, generator=gen) < density, 1.0, -1.0)
    b = torch.where(torch.rand(n, 1, 24, 24, generator=gen) < density.flip(0), 1.0, -1.0)
    a[0], b[0] = -1, -1  # both empty
    a[1], b[2] = -1, -1  # one empty
    b[3] = a[3]  # identical
    dice = mask_dice(a, b)
    assert dice.dtype == torch.float32 and dice.shape == (n,)
    assert torch.equal(dice, _hand_written_dice(a, b))
    assert torch.equal(mask_dice(b, a), dice)  # symmetric
    assert dice[:4].tolist() == [1.0, 0.0, 0.0, 1.0]
    # soft masks in [-1, 1] (the generator's mask channel): only the sign matters
    soft = torch.rand(n, 1, 24, 24, generator=gen) * 2 - 1
    assert torch.equal(mask_dice(soft, a), _hand_written_dice(soft, a))


def test_old_evaluation_names_still_importable():
    import rggan.handlers

    import rggan.evaluation as ev

    for name in ev.__all__ + ["_dice", "_w1", "_jsonable", "_MS_SSIM_WEIGHTS", "logger"]:
        assert getattr(ev, name) is not None, name
    assert ev.EvaluationHandler is rggan.handlers.EvaluationHandler  # the old path, resolved lazily
    with pytest.raises(AttributeError):
        ev.no_such_name  # noqa: B018
