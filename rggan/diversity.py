"""Diversity of generated nodules: mean pairwise MS-SSIM of images and Dice of masks, both from MONAI.

Within one patient (pairs of latents: 1 = every latent gives the same nodule) and across patients (one
generated nodule per patient, next to the same figure for the real nodules, which are one per patient).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch

__all__ = ["MS_SSIM_WEIGHTS", "ms_ssim_metric", "mask_dice", "pairwise_diversity", "diversity_metrics"]

#: MONAI's default MS-SSIM scale weights (5 scales)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_metric(image_size: int, kernel_size: int = 11) -> tuple[Any, int]:
    """``MultiScaleSSIMMetric`` for [-1, 1] images of side ``image_size``, with as many scales as fit.

    MONAI needs ``image_size > (kernel_size - 1) * 2 ** (scales - 1)``; with one scale this is SSIM.
    The weights of the scales used are MONAI's defaults, renormalised to sum 1 (kernel 11: 2 scales at
    32 px, 3 at 64, 4 at 128).

    Args:
        image_size: side of the images.
        kernel_size: Gaussian kernel size.

    Returns:
        ``(metric, number of scales)``.
    """
    from monai.metrics import MultiScaleSSIMMetric

    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and image_size > (kernel_size - 1) * 2**scales:
        scales += 1
    w = MS_SSIM_WEIGHTS[:scales]
    weights = tuple(v / sum(w) for v in w)
    return MultiScaleSSIMMetric(spatial_dims=2, data_range=2.0, kernel_size=kernel_size, weights=weights), scales


def mask_dice(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dice of the masks ``a > 0`` and ``b > 0``, pair by pair (``monai.metrics.compute_dice``).

    Two empty masks count as identical (Dice 1, MONAI's ``ignore_empty=False``), not as NaN, so a
    generator that makes no nodule for two latents scores "no diversity" rather than dropping the pair.

    Args:
        a, b: (N, 1, ...) masks (values > 0 are inside).

    Returns:
        float32 (N,) Dice per pair.
    """
    from monai.metrics import compute_dice

    y_pred, y = (a > 0).float(), (b > 0).float()
    return compute_dice(y_pred, y, include_background=True, ignore_empty=False).reshape(-1)


def pairwise_diversity(images: torch.Tensor, masks: torch.Tensor, groups: Sequence[str]) -> dict[str, Any]:
    """Mean pairwise MS-SSIM of images and Dice of masks within each group (patient), over all groups.

    Args:
        images, masks: (N, 1, S, S) in [-1, 1].
        groups: N group labels (pairs are only formed within a group).

    Returns:
        ``ms_ssim``, ``mask_dice`` (NaN without pairs), ``pairs`` and ``ms_ssim_scales``.
    """
    metric, scales = ms_ssim_metric(int(images.shape[-1]))
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(str(g), []).append(i)
    pairs = [(i, j) for idx in by_group.values() for i, j in combinations(idx, 2)]
    if not pairs:
        return {"ms_ssim": float("nan"), "mask_dice": float("nan"), "pairs": 0, "ms_ssim_scales": scales}
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    ssim = metric(images[a].float(), images[b].float()).flatten()
    dice = mask_dice(masks[a], masks[b])
    return {
        "ms_ssim": float(np.nanmean(ssim.numpy())),
        "mask_dice": float(dice.mean()),
        "pairs": len(pairs),
        "ms_ssim_scales": scales,
    }


def diversity_metrics(
    images: torch.Tensor,
    masks: torch.Tensor,
    patients: Sequence[str],
    real_images: torch.Tensor,
    real_masks: torch.Tensor,
) -> dict[str, Any]:
    """Diversity across latents (within each patient) and across patients, generated and real.

    Args:
        images, masks: (N, 1, S, S) generated nodules in [-1, 1], grouped by patient in request order.
        patients: N patient IDs.
        real_images: (M, 1, S, S) real nodules in [-1, 1], one per patient.
        real_masks: (M, 1, S, S) bool masks of the real nodules.

    Returns:
        :func:`pairwise_diversity` within patients, plus ``*_diversity`` (1 - similarity) within patients
        and across patients (the first sample of each patient), and the same across the real nodules.
    """
    within = pairwise_diversity(images, masks, patients)
    first = [i for i, p in enumerate(patients) if i == 0 or p != patients[i - 1]]
    across = pairwise_diversity(images[first], masks[first], ["all"] * len(first))
    real_masks_pm = real_masks.float() * 2 - 1
    real_across = pairwise_diversity(real_images.float(), real_masks_pm, ["all"] * len(real_images))
    return {
        **within,
        "ms_ssim_diversity": 1.0 - within["ms_ssim"],
        "mask_dice_diversity": 1.0 - within["mask_dice"],
        "across_patients_ms_ssim_diversity": 1.0 - across["ms_ssim"],
        "real_across_patients_ms_ssim_diversity": 1.0 - real_across["ms_ssim"],
        "across_patients_mask_dice_diversity": 1.0 - across["mask_dice"],
        "real_across_patients_mask_dice_diversity": 1.0 - real_across["mask_dice"],
    }
