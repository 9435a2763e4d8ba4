"""Nodule features on synthetic shapes with known answers (rggan.features)."""

from __future__ import annotations

import math

import pytest
import torch

from rggan.features import FEATURE_NAMES, FEATURES, features_frame, nodule_features, to_hu


def _grid(s: int = 96):
    return torch.meshgrid(torch.arange(s, dtype=torch.float64), torch.arange(s, dtype=torch.float64), indexing="ij")


def _norm(hu: torch.Tensor) -> torch.Tensor:
    return ((hu + 1000.0) / 750.0 - 1.0).float()


def test_feature_list_has_units():
    assert [f[0] for f in FEATURES] == list(FEATURE_NAMES)
    assert all(unit for _, unit, _ in FEATURES)
    assert torch.allclose(to_hu(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([-1000.0, -250.0, 500.0]))


@pytest.mark.parametrize("radius", [6.0, 12.0, 25.0])
def test_disk_area_radius_compactness(radius):
    yy, xx = _grid()
    sp = (0.7, 0.7)
    inside = (yy - 47.6) ** 2 + (xx - 48.3) ** 2 < radius**2
    mask = torch.where(inside, 1.0, -1.0)[None, None].float()
    image = torch.zeros_like(mask)
    f = nodule_features(image, mask, sp)
    true_area = math.pi * (radius * 0.7) ** 2
    assert f["area_mm2"].item() == pytest.approx(inside.sum().item() * 0.49)
    assert f["area_mm2"].item() == pytest.approx(true_area, rel=0.05)
    assert f["equivalent_radius_mm"].item() == pytest.approx(radius * 0.7, rel=0.03)
    assert f["perimeter_mm"].item() == pytest.approx(2 * math.pi * radius * 0.7, rel=0.05)
    assert f["compactness"].item() == pytest.approx(1.0, abs=0.05)
    assert f["irregularity"].item() == pytest.approx(1.0 - f["compactness"].item())


def test_anisotropic_spacing_disk_in_mm():
    """A disk in mm on an anisotropic grid (0.5 mm rows, 1.0 mm columns) is still compact."""
    yy, xx = _grid(128)
    inside = ((yy - 64) * 0.5) ** 2 + ((xx - 64) * 1.0) ** 2 < 20.0**2
    mask = torch.where(inside, 1.0, -1.0)[None, None].float()
    f = nodule_features(torch.zeros_like(mask), mask, (0.5, 1.0))
    assert f["area_mm2"].item() == pytest.approx(math.pi * 400, rel=0.03)
    assert f["equivalent_radius_mm"].item() == pytest.approx(20.0, rel=0.02)
    assert f["compactness"].item() == pytest.approx(1.0, abs=0.05)


def test_star_is_less_compact_than_disk():
    yy, xx = _grid()
    th = torch.atan2(yy - 48, xx - 48)
    rr = ((yy - 48) ** 2 + (xx - 48) ** 2).sqrt()
    star = torch.where(rr < 18 * (1 + 0.5 * torch.cos(6 * th)), 1.0, -1.0)
    disk = torch.where(rr < 18, 1.0, -1.0)
    mask = torch.stack([disk, star])[:, None].float()
    f = nodule_features(torch.zeros_like(mask), mask, (1.0, 1.0))
    assert f["compactness"][0] > 0.95
    assert f["compactness"][1] < 0.6
    assert f["irregularity"][1] > f["irregularity"][0] + 0.3


def test_mean_and_std_hu_inside_mask_only():
    yy, xx = _grid(64)
    inside = (yy - 32) ** 2 + (xx - 32) ** 2 < 10**2
    checker = ((yy + xx) % 2 == 0).double()
    hu = torch.where(inside, -100.0 + 200.0 * checker, 400.0)  # inside: -100 / +100 alternating; outside 400
    f = nodule_features(_norm(hu)[None, None], torch.where(inside, 1.0, -1.0)[None, None].float(), (1.0, 1.0))
    assert f["mean_hu"].item() == pytest.approx(0.0, abs=3.0)  # float32 normalisation round trip
    assert f["std_hu"].item() == pytest.approx(100.0, abs=1.0)


def test_batched_per_sample_spacing_and_empty_mask():
    yy, xx = _grid(48)
    disk = torch.where((yy - 24) ** 2 + (xx - 24) ** 2 < 8**2, 1.0, -1.0).float()
    mask = torch.stack([disk, disk, -torch.ones_like(disk)])[:, None]
    image = torch.full_like(mask, 0.2)
    f = nodule_features(image, mask, torch.tensor([[1.0, 1.0], [2.0, 2.0], [1.0, 1.0]]))
    assert f["area_mm2"][1].item() == pytest.approx(4 * f["area_mm2"][0].item())
    assert f["compactness"][1].item() == pytest.approx(f["compactness"][0].item(), rel=1e-6)
    assert f["mean_hu"][0].item() == pytest.approx(to_hu(torch.tensor(0.2)).item(), abs=1e-3)
    assert f["area_mm2"][2].item() == 0.0
    assert math.isnan(f["mean_hu"][2].item()) and math.isnan(f["compactness"][2].item())
    frame = features_frame(f, ["a", "b", "c"])
    assert list(frame.columns) == list(FEATURE_NAMES) and list(frame.index) == ["a", "b", "c"]


def test_nodule_touching_the_border_has_closed_contour():
    mask = -torch.ones(1, 1, 32, 32)
    mask[..., :10, :10] = 1.0  # a 10x10 square in the corner
    f = nodule_features(torch.zeros_like(mask), mask, (1.0, 1.0), smooth_sigma=0)
    assert f["perimeter_mm"].item() == pytest.approx(4 * 10 - 4 * (1 - math.sqrt(0.5)), abs=0.5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="one channel"):
        nodule_features(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="shapes differ"):
        nodule_features(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match="spacing"):
        nodule_features(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), torch.ones(3, 2))


def test_main_component_ignores_speckle():
    from rggan.features import main_component

    yy, xx = _grid(48)
    disk = (yy - 24) ** 2 + (xx - 24) ** 2 < 8**2
    mask = torch.where(disk, 1.0, -1.0).float()
    mask[2:4, 2:4] = 0.5  # a speckle away from the nodule
    mask[24, 24] = 1.0
    comp = main_component(mask[None, None])
    assert torch.equal(comp[0], disk)
    f_all = nodule_features(torch.zeros(1, 1, 48, 48), mask[None, None], (1.0, 1.0))
    f_main = nodule_features(torch.zeros(1, 1, 48, 48), mask[None, None], (1.0, 1.0), main_component_only=True)
    assert f_all["area_mm2"].item() == f_main["area_mm2"].item() + 4
    assert f_main["compactness"].item() > f_all["compactness"].item()
    assert not main_component(-torch.ones(1, 1, 8, 8)).any()
