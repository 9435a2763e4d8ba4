"""One patient's sample files: the crops resized to ``image_size``, scaled to [-1, 1] and written atomically."""

from __future__ import annotations

from typing import Any

import numpy as np

from rggan.data.prepare.config import PrepareConfig
from rggan.data.prepare.extract import PatientJob
from rggan.intensity import hu_to_unit
from rggan.io import atomic_save_npy, atomic_write_json

__all__ = ["SAMPLE_FILES", "margin_irregularity", "resize", "write_patient"]

#: the image files of a patient's sample folder (``rna.npy`` is written once the split is known)
SAMPLE_FILES = ("image.npy", "mask.npy", "bases.npy")


def resize(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize ``(C, H, W)`` to ``(C, size, size)``: area interpolation when shrinking, bilinear when enlarging.

    Args:
        array: the images.
        size: the output side in pixels.
        mode: ``"auto"`` (that rule) or a ``torch.nn.functional.interpolate`` mode.

    Returns:
        float32 ``(C, size, size)``.
    """
    import torch  # lazy: the worker processes of the prepare step never import torch
    import torch.nn.functional as F

    if mode == "auto":
        mode = "area" if max(array.shape[1:]) > size else "bilinear"
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs)[0].numpy()


def _resized_pair(image: np.ndarray, mask: np.ndarray, size: int, hu_range: tuple[float, float]) -> np.ndarray:
    """(C, h, w) HU and 0/1 crops -> (2, C, size, size): the image in [-1, 1] and the mask in {-1, 1}, as saved."""
    img = hu_to_unit(resize(image, size, "auto"), hu_range)
    msk = np.where(resize(mask.astype(np.float32), size, "bilinear") >= 0.5, 1.0, -1.0).astype(np.float32)
    return np.stack([img, msk])


def margin_irregularity(images: np.ndarray, masks: np.ndarray, config: PrepareConfig, spacing: Any) -> np.ndarray:
    """The ``irregularity`` feature of each slice's crop, measured as the evaluation measures the nodule crop.

    Args:
        images: (n, h, w) HU crops; masks: (n, h, w) 0/1 tumour masks in the same crop box.
        config: ``image_size`` and the HU window the crops are resized and normalised with.
        spacing: (row, col) mm per pixel of the resized crops.

    Returns:
        (n,) float64; NaN for a slice whose resized mask is empty.
    """
    import torch

    from rggan.features import nodule_features

    hu_range = (config.hu_min, config.hu_max)
    pair = torch.from_numpy(_resized_pair(images, masks, config.image_size, hu_range))
    return nodule_features(pair[0], pair[1], spacing, hu_range=hu_range)["irregularity"].numpy()


def write_patient(job: PatientJob, crops: dict[str, Any]) -> dict[str, Any]:
    """Resize, normalise and atomically write one patient's arrays; the fingerprint file goes last.

    Args:
        job: the patient's job (sample folder, settings, fingerprint).
        crops: from :func:`rggan.data.prepare.extract.extract_patient`.

    Returns:
        The sample's details for the report.
    """
    cfg, out = job.config, job.out_dir
    image, mask = _resized_pair(crops["image"][None], crops["mask"][None], cfg.image_size, (cfg.hu_min, cfg.hu_max))
    bases = resize(crops["bases"], cfg.image_size, "auto")
    details = crops["details"]
    if "margin_images" in crops:  # the margin target: mean over the slices whose resized mask holds tumour
        values = margin_irregularity(crops["margin_images"], crops["margin_masks"], cfg, details["spacing"])
        ok = np.isfinite(values)
        details["margin_slices"] = [s for s, keep in zip(details["margin_slices"], ok) if keep]
        details["margin"] = float(values[ok].mean()) if ok.any() else None
    atomic_save_npy(out / "image.npy", image)
    atomic_save_npy(out / "mask.npy", mask)
    atomic_save_npy(out / "bases.npy", hu_to_unit(bases, (cfg.hu_min, cfg.hu_max)))
    # Written last: a patient interrupted half-way is prepared again next time.
    atomic_write_json(out / "fingerprint.json", {"fingerprint": job.fingerprint, "details": details})
    return details
