"""Nodule features on synthetic shapes with known answers (rggan.features)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


# ----------------------------------------------------------------------------- cross-checks against scikit-image
# The batched torch features are checked against scikit-image's own implementations on discs, ellipses
# and lobulated shapes (r = r0 (1 + a cos k theta)), with isotropic and anisotropic spacing.
_S = 96


def _shape(kind: str) -> np.ndarray:
    """A boolean (S, S) nodule: a disc, an ellipse or a lobulated shape, centred off the pixel grid."""
    yy, xx = np.mgrid[:_S, :_S].astype(np.float64)
    y, x = yy - 47.6, xx - 48.3
    if kind.startswith("disc"):
        return np.hypot(y, x) < float(kind[4:])
    if kind.startswith("ellipse"):
        a, b, th = {"ellipse1": (20.0, 9.0, 0.4), "ellipse2": (14.0, 6.0, 1.1)}[kind]
        u, v = math.cos(th) * x + math.sin(th) * y, -math.sin(th) * x + math.cos(th) * y
        return (u / a) ** 2 + (v / b) ** 2 < 1
    r0, amp, k = {"lobulated5": (18.0, 0.25, 5), "lobulated7": (20.0, 0.15, 7)}[kind]
    return np.hypot(y, x) < r0 * (1 + amp * np.cos(k * np.arctan2(y, x)))


SHAPES = ["disc6", "disc12", "disc25", "ellipse1", "ellipse2", "lobulated5", "lobulated7"]
SPACINGS = [(1.0, 1.0), (0.6, 0.9)]


def _skimage_contour_length(field: np.ndarray, spacing: tuple[float, float]) -> float:
    from skimage import measure

    return float(
        sum(
            np.hypot(np.diff(c[:, 0]) * spacing[0], np.diff(c[:, 1]) * spacing[1]).sum()
            for c in measure.find_contours(field, 0.5)
        )
    )


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("sigma", [0.75, 0.0])
def test_contour_length_matches_skimage_find_contours(kind, spacing, sigma):
    """Same field, same iso-level: the batched marching squares and ``skimage.measure.find_contours``.

    Both interpolate the crossing points linearly on the cell edges, so the lengths agree to rounding
    (rel 1e-9). The field is the one ``nodule_features`` traces: the zero-padded mask, smoothed (sigma 0.75)
    or not (sigma 0: a binary field, whose saddle cells have the same length under either diagonal rule).
    """
    from rggan.features import _gaussian_smooth, _smooth_radius, contour_length

    inside = torch.from_numpy(_shape(kind).astype(np.float64))[None]
    pad = _smooth_radius(sigma) if sigma else 1
    field = F.pad(inside, (pad, pad, pad, pad))
    if sigma:
        field = _gaussian_smooth(field, sigma)
    sp = torch.tensor([spacing], dtype=torch.float64)
    ours = contour_length(field, sp).item()
    assert ours == pytest.approx(_skimage_contour_length(field[0].numpy(), spacing), rel=1e-9)
    # the crossed cells only (the CPU default) and every cell (the accelerator default) agree
    dense = contour_length(field, sp, sparse=False).item()
    assert contour_length(field, sp, sparse=True).item() == pytest.approx(dense, rel=1e-12)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("kind", SHAPES)
def test_area_and_hu_statistics_match_skimage_regionprops(kind, spacing):
    """Area, mean and (population) standard deviation of HU inside the mask: ``regionprops``, to rounding."""
    from skimage import measure

    inside = _shape(kind)
    hu = np.random.default_rng(0).uniform(-900.0, 400.0, inside.shape)
    image = torch.from_numpy((hu + 1000.0) / 750.0 - 1.0)[None, None]
    mask = torch.from_numpy(np.where(inside, 1.0, -1.0))[None, None]
    f = nodule_features(image, mask, spacing)
    (props,) = measure.regionprops(inside.astype(np.int32), intensity_image=hu, spacing=spacing)
    assert f["area_mm2"].item() == pytest.approx(props.area, rel=1e-12)
    assert f["mean_hu"].item() == pytest.approx(props.intensity_mean, rel=1e-9)
    assert f["std_hu"].item() == pytest.approx(props.intensity_std, rel=1e-9)


def _true_perimeter(kind: str) -> float:
    """The perimeter of the continuous shape (pixels): exact for discs, Ramanujan's for ellipses, quadrature."""
    if kind.startswith("disc"):
        return 2 * math.pi * float(kind[4:])
    if kind.startswith("ellipse"):
        a, b = {"ellipse1": (20.0, 9.0), "ellipse2": (14.0, 6.0)}[kind]
        h = ((a - b) / (a + b)) ** 2
        return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    r0, amp, k = {"lobulated5": (18.0, 0.25, 5), "lobulated7": (20.0, 0.15, 7)}[kind]
    t = np.linspace(0.0, 2 * np.pi, 100_000, endpoint=False)  # a periodic integrand: the mean is exact
    return float(2 * np.pi * np.hypot(r0 * (1 + amp * np.cos(k * t)), r0 * amp * k * np.sin(k * t)).mean())


#: relative agreement of perimeter estimators on shapes of 6-25 px radius (measured: at most 1.5 %)
PERIMETER_TOL = 0.02
#: the same for ``skimage.measure.perimeter`` (4-neighbourhood weights; measured: up to 3.9 % over the truth)
PIXEL_PERIMETER_TOL = 0.05


@pytest.mark.parametrize("kind", SHAPES)
def test_perimeter_and_irregularity_against_skimage_estimators(kind):
    """``perimeter_mm`` against scikit-image's perimeters of the binary mask and the true perimeter.

    These are different estimators of the same length: ours traces the lightly smoothed mask, Crofton
    counts line intersections on the pixel grid, ``perimeter`` weights boundary pixels by their
    neighbourhood. They agree within the digitisation error of the shape, not to rounding:
    :data:`PERIMETER_TOL` relative for Crofton and the truth, :data:`PIXEL_PERIMETER_TOL` for the cruder
    pixel estimate; irregularity, 1 - 4 pi area / perimeter², moves by about twice the perimeter's error.
    """
    from skimage import measure

    inside = _shape(kind)
    mask = torch.from_numpy(np.where(inside, 1.0, -1.0))[None, None]
    f = nodule_features(torch.zeros_like(mask), mask, (1.0, 1.0))
    (props,) = measure.regionprops(inside.astype(np.int32))
    crofton = props.perimeter_crofton
    assert f["perimeter_mm"].item() == pytest.approx(crofton, rel=PERIMETER_TOL)
    assert f["perimeter_mm"].item() == pytest.approx(_true_perimeter(kind), rel=PERIMETER_TOL)
    assert f["perimeter_mm"].item() == pytest.approx(measure.perimeter(inside, 4), rel=PIXEL_PERIMETER_TOL)
    sk_irregularity = 1 - 4 * math.pi * props.area / crofton**2
    assert f["irregularity"].item() == pytest.approx(sk_irregularity, abs=2 * PERIMETER_TOL)


def test_irregularity_ranks_shapes_as_skimage_does():
    """Disc < ellipse < lobulated, by both irregularities (ours and the one from skimage's Crofton perimeter)."""
    from skimage import measure

    kinds = ["disc25", "ellipse1", "lobulated5"]
    masks = torch.stack([torch.from_numpy(np.where(_shape(k), 1.0, -1.0)) for k in kinds])[:, None]
    ours = nodule_features(torch.zeros_like(masks), masks, (1.0, 1.0))["irregularity"].tolist()
    theirs = []
    for k in kinds:
        (props,) = measure.regionprops(_shape(k).astype(np.int32))
        theirs.append(1 - 4 * math.pi * props.area / props.perimeter_crofton**2)
    assert ours == sorted(ours) and theirs == sorted(theirs)


def test_main_component_matches_skimage_label():
    """The 8-connected component holding the argmax pixel, as ``skimage.measure.label(connectivity=2)`` finds it."""
    from skimage import measure

    from rggan.features import main_component

    rng = np.random.default_rng(3)
    field = rng.uniform(-1.0, 1.0, (4, 40, 40))
    field = np.where(rng.random((4, 40, 40)) < 0.55, field, -0.5)  # speckle: many components
    ours = main_component(torch.from_numpy(field)).numpy()
    for i in range(4):
        labels = measure.label(field[i] > 0, connectivity=2)
        peak = np.unravel_index(np.argmax(np.where(field[i] > 0, field[i], -np.inf)), field[i].shape)
        np.testing.assert_array_equal(ours[i], labels == labels[peak])


# ----------------------------------------------------------------------------- MONAI's Gaussian kernel
def _hand_written_smooth(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """The separable blur this module wrote by hand before it used MONAI's kernel and filtering (the reference)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=m.dtype, device=m.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(m[:, None], k.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(x, k.view(1, 1, -1, 1), padding=(radius, 0))[:, 0]


@pytest.mark.parametrize("sigma", [0.5, 0.7, 0.75, 1.3, 2.0])
def test_gaussian_smoothing_equals_the_hand_written_one(sigma):
    """Same truncation (ceil(3 sigma) px), same normalised sampled kernel, zero padding: equal to 1e-6.

    Not bit-identical: MONAI builds the kernel in float32 (relative error ~1e-7 on a field in [0, 1]).
    ``GaussianFilter`` itself is not used: its sampled kernel is divided by sqrt(2 pi) sigma, not by its
    sum, which for sigma 0.75 scales the output by ~1.00003 per axis and moves the 0.5 iso-contour.
    """
    from rggan.features import _gaussian_smooth

    m = (torch.rand(3, 33, 41, generator=torch.Generator().manual_seed(1)) > 0.6).to(torch.float64)
    torch.testing.assert_close(_gaussian_smooth(m, sigma), _hand_written_smooth(m, sigma), rtol=0, atol=1e-6)
    assert _gaussian_smooth(m.float(), sigma).dtype == torch.float32


@pytest.mark.parametrize("sigma", [0.5, 0.75, 1.3, 2.0])
def test_gaussian_kernel_equals_monais(sigma):
    """The device-built kernel is MONAI's normalised sampled Gaussian with the same truncation."""
    from monai.networks.layers.convutils import gaussian_1d

    from rggan.features import _smooth_radius, gaussian_kernel

    radius = _smooth_radius(sigma)
    ours = gaussian_kernel(sigma, radius, torch.float32, torch.device("cpu"))
    monai_k = gaussian_1d(torch.tensor(sigma), truncated=radius / sigma, approx="sampled", normalize=True)
    assert ours.shape == monai_k.shape == (2 * radius + 1,)
    torch.testing.assert_close(ours, monai_k.to(torch.float32), rtol=1e-6, atol=1e-7)


def test_gaussian_smoothing_keeps_features_to_1e6(monkeypatch):
    """The features of the test shapes move by less than 1e-6 (relative, or absolute for the ratios near 0).

    Irregularity is ``1 - compactness``, ~0.01 for a disc: its relative change is not a useful measure.
    """
    import rggan.features as features

    masks = torch.stack([torch.from_numpy(np.where(_shape(k), 1.0, -1.0)) for k in SHAPES])[:, None]
    new = nodule_features(torch.zeros_like(masks), masks, (0.7, 0.8))
    monkeypatch.setattr(features, "_gaussian_smooth", _hand_written_smooth)
    old = nodule_features(torch.zeros_like(masks), masks, (0.7, 0.8))
    for name in FEATURE_NAMES:
        torch.testing.assert_close(new[name], old[name], rtol=1e-6, atol=1e-6, equal_nan=True)
