"""A user's background patch for the generator: a 2-D NIfTI or DICOM CT slice in HU, made network-ready.

Used by inference when expression comes from an RNA table and the background patches from files
(``--backgrounds``); prepared datasets carry their own normalised patches (``bases.npy``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rggan.errors import InputError
from rggan.intensity import DEFAULT_HU_RANGE, hu_to_unit

__all__ = ["read_hu_slice", "load_background"]


def _read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """(row, col) HU of a 2-D NIfTI stored as (column, row[, 1]) voxels, and its (row, col) spacing."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.get_fdata(dtype=np.float32))
    zooms = tuple(float(z) for z in img.header.get_zooms()[:2])
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim != 2:
        raise InputError(f"background {path} has shape {data.shape}; pass a 2-D patch (one axial slice) in HU")
    return data.T, (zooms[1], zooms[0])


def _read_dicom(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """HU of a single-frame DICOM CT slice (rescale slope/intercept applied) and its pixel spacing."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    if "PixelData" not in ds:
        raise InputError(f"background {path} is a DICOM file without pixel data; pass a CT slice")
    arr = ds.pixel_array.astype(np.float32)
    if arr.ndim != 2:
        raise InputError(f"background {path} holds {arr.shape[0]} frames; pass a single CT slice")
    hu = arr * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))
    ps = getattr(ds, "PixelSpacing", None) or (1.0, 1.0)
    return hu, (float(ps[0]), float(ps[1]))


def read_hu_slice(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float]]:
    """One axial slice in HU from a 2-D NIfTI (``.nii``/``.nii.gz``) or a single DICOM CT slice.

    NIfTI arrays are read as (column, row[, 1]) voxels, the layout :func:`rggan.nodule_files.write_nifti`
    writes.

    Args:
        path: the file.

    Returns:
        ``((row, col) HU array, (row, col) spacing in mm)``.

    Raises:
        InputError: missing or unreadable file, not 2-D, or no pixel data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"background file {path} not found")
    try:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            return _read_nifti(path)
        return _read_dicom(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(f"cannot read background {path} as NIfTI or DICOM: {exc}") from exc


def load_background(
    path: str | os.PathLike, image_size: int, hu_range: Sequence[float] = DEFAULT_HU_RANGE
) -> tuple[np.ndarray, tuple[float, float]]:
    """A user background patch (:func:`read_hu_slice`), made a generator input.

    The patch is centre-cropped to a square, resized to ``image_size`` (area interpolation when
    shrinking, bilinear when enlarging), clipped to ``hu_range`` (the prepared dataset's) and normalised
    to [-1, 1].

    Args:
        path: a 2-D NIfTI or DICOM CT slice in HU.
        image_size: side of the generator's patches.
        hu_range: the HU window mapped to [-1, 1].

    Returns:
        ``((1, S, S) float32 normalised patch, (row, col) spacing in mm of the resized patch)``.

    Raises:
        InputError: missing or unreadable file, not 2-D, or no pixel data.
    """
    hu, spacing = read_hu_slice(path)
    h, w = hu.shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = torch.from_numpy(np.ascontiguousarray(hu_to_unit(hu[y0 : y0 + side, x0 : x0 + side], hu_range)))[None, None]
    mode = "area" if side >= image_size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    patch = F.interpolate(crop, size=(image_size, image_size), mode=mode, **kwargs)[0].clamp(-1, 1).numpy()
    factor = side / image_size
    return patch.astype(np.float32), (spacing[0] * factor, spacing[1] * factor)
