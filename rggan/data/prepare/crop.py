"""The crop rule and the background patches: where a patient's nodule crop and its ``num_bases`` patches lie.

The crop is a square of side ``2 * max(w, h)`` of the tumour mask's bounding box on the nodule slice, centred on
the box (or a fixed side in mm, ``PrepareConfig.crop_mm``); see ``docs/spec.md``, "Crop rule". The background
patches are nodule-free lung patches of the crop's size from the same or neighbouring slices.
"""

from __future__ import annotations

import numpy as np

from rggan.data.prepare.config import PrepareConfig

__all__ = ["nodule_crop_box", "lung_mask", "find_background_patches"]


def nodule_crop_box(mask2d: np.ndarray, side: int | None = None) -> tuple[int, int, int, int]:
    """Square crop around a 2-D mask, centred on its bounding box.

    Args:
        mask2d: the tumour mask of one slice.
        side: crop side in pixels; default ``2 * max(w, h)`` of the bounding box (the original research
            code's rule). A given side is enlarged when the nodule would not fit.

    The square is shifted to lie inside the image and clipped only when the image is smaller than the side.

    Returns:
        ``(y0, x0, y1, x1)`` with exclusive ends.
    """
    ys, xs = np.nonzero(mask2d)
    y_lo, y_hi, x_lo, x_hi = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    extent = int(max(y_hi - y_lo, x_hi - x_lo))
    side = 2 * extent if side is None else max(int(side), extent + 2)
    rows, cols = mask2d.shape

    def place(lo: int, hi: int, n: int) -> tuple[int, int]:
        start = (lo + hi) // 2 - side // 2
        start = max(0, min(start, n - side))
        return start, min(n, start + side)

    y0, y1 = place(y_lo, y_hi, rows)
    x0, x1 = place(x_lo, x_hi, cols)
    return int(y0), int(x0), int(y1), int(x1)


def _box_sums(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sum of ``a`` over every ``h × w`` window; entry ``[y, x]`` is the window with top-left ``(y, x)``."""
    c = np.pad(a.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return c[h:, w:] - c[:-h, w:] - c[h:, :-w] + c[:-h, :-w]


def lung_mask(hu: np.ndarray, threshold: float = -400.0) -> np.ndarray:
    """Air inside the body on one axial slice: air components not connected to the image corners.

    The outside air reaches the corners of an axial chest CT; the lungs do not, even when the field of
    view cuts the body's sides.

    Args:
        hu: ``(rows, cols)`` HU.
        threshold: HU at or below which a pixel is air.

    Returns:
        Boolean mask of the lungs (and other internal air).
    """
    from scipy import ndimage

    labels, _ = ndimage.label(hu <= threshold)
    outside = {labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]} - {0}
    return (labels > 0) & ~np.isin(labels, list(outside))


def find_background_patches(
    hu: np.ndarray,
    mask: np.ndarray,
    slices: list[int],
    h: int,
    w: int,
    k: int,
    config: PrepareConfig,
    rng: np.random.Generator,
) -> list[tuple[int, int, int]]:
    """Pick ``k`` nodule-free lung patches of ``h × w`` pixels.

    Args:
        hu: ``(n, rows, cols)`` HU of the candidate slices.
        mask: ``(n, rows, cols)`` tumour mask of the same slices.
        slices: the CT slice index of each of the ``n`` slices.
        h: patch height.
        w: patch width.
        k: number of patches.
        config: thresholds.
        rng: numpy Generator.

    Returns:
        ``(slice index, y0, x0)`` per patch; patches may repeat when fewer than ``k`` positions exist.

    Raises:
        ValueError: no position satisfies the constraints.
    """
    candidates = []
    for fraction in (config.min_lung_fraction, config.min_lung_fraction / 2):
        for i, z in enumerate(slices):
            lung = lung_mask(hu[i], config.lung_hu)
            ok = (_box_sums(mask[i], h, w) == 0) & (_box_sums(lung, h, w) >= fraction * h * w)
            ys, xs = np.nonzero(ok)
            candidates += [(z, int(y), int(x)) for y, x in zip(ys, xs)]
        if candidates:
            break
    if not candidates:
        raise ValueError(f"no nodule-free lung patch of {h}x{w} px on slices {slices}")
    pick = rng.choice(len(candidates), size=k, replace=len(candidates) < k)
    return [candidates[i] for i in sorted(pick)]
