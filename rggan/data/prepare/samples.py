"""One patient's sample files: the crops resized to ``image_size``, scaled to [-1, 1] and written atomically."""

from __future__ import annotations

from typing import Any

import numpy as np

from rggan.data.prepare.extract import PatientJob
from rggan.intensity import hu_to_unit
from rggan.io import atomic_save_npy, atomic_write_json

__all__ = ["SAMPLE_FILES", "resize", "write_patient"]

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


def write_patient(job: PatientJob, crops: dict[str, Any]) -> dict[str, Any]:
    """Resize, normalise and atomically write one patient's arrays; the fingerprint file goes last.

    Args:
        job: the patient's job (sample folder, settings, fingerprint).
        crops: from :func:`rggan.data.prepare.extract.extract_patient`.

    Returns:
        The sample's details for the report.
    """
    cfg, out = job.config, job.out_dir
    image = resize(crops["image"][None], cfg.image_size, "auto")
    mask = resize(crops["mask"][None].astype(np.float32), cfg.image_size, "bilinear") >= 0.5
    bases = resize(crops["bases"], cfg.image_size, "auto")
    atomic_save_npy(out / "image.npy", hu_to_unit(image, (cfg.hu_min, cfg.hu_max)))
    atomic_save_npy(out / "mask.npy", np.where(mask, 1.0, -1.0).astype(np.float32))
    atomic_save_npy(out / "bases.npy", hu_to_unit(bases, (cfg.hu_min, cfg.hu_max)))
    # Written last: a patient interrupted half-way is prepared again next time.
    atomic_write_json(out / "fingerprint.json", {"fingerprint": job.fingerprint, "details": crops["details"]})
    return crops["details"]
