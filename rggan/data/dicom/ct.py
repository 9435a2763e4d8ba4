"""CT pixels: selected slices of a sorted CT series decoded to Hounsfield units."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset

from rggan.data.dicom.geometry import CTGeometry
from rggan.data.dicom.values import quiet, read_dataset, to_float, to_int
from rggan.errors import PatientDataError

__all__ = ["PADDING_HU", "read_ct_slices", "read_ct_volume"]

#: HU value given to PixelPaddingValue pixels (air).
PADDING_HU = -1024.0


def _padding_mask(ds: Dataset, raw: np.ndarray) -> np.ndarray | None:
    """Pixels equal to PixelPaddingValue (or inside its range with PixelPaddingRangeLimit); None without padding.

    Args:
        ds: the CT slice's dataset.
        raw: its stored pixel values.

    Returns:
        Boolean mask of padding pixels, or None.
    """
    pad = to_int(ds.get("PixelPaddingValue"))
    if pad is None:
        return None
    limit = to_int(ds.get("PixelPaddingRangeLimit"))
    bits = int(ds.get("BitsAllocated", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1

    def fix(v: int) -> int:
        # The value may have been written with the other signedness (US vs SS): reinterpret its bits.
        if signed and v >= 2 ** (bits - 1):
            return v - 2**bits
        if not signed and v < 0:
            return v + 2**bits
        return v

    lo = hi = fix(pad)
    if limit is not None:
        lo, hi = sorted((lo, fix(limit)))
    return (raw >= lo) & (raw <= hi)


@quiet
def read_ct_slices(geometry: CTGeometry, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Decode CT slices to Hounsfield units; only the requested files are read.

    HU = stored * RescaleSlope + RescaleIntercept (defaults 1 and 0), signed or unsigned storage. Pixels equal
    to PixelPaddingValue (or inside its range with PixelPaddingRangeLimit) become :data:`PADDING_HU`.

    Args:
        geometry: from :func:`read_ct_geometry`.
        indices: slice indices in the sorted order (negative allowed); None for all slices.

    Returns:
        float32 array ``(n, rows, cols)`` in the order of ``indices``.

    Raises:
        PatientDataError: a slice cannot be decoded, has no usable file (:attr:`CTGeometry.missing`) or does not
            match the geometry.
    """
    n = len(geometry.files)
    idx = list(range(n)) if indices is None else [int(i) for i in np.asarray(indices).ravel()]
    out = np.empty((len(idx), geometry.rows, geometry.cols), dtype=np.float32)
    for k, i in enumerate(idx):
        if not -n <= i < n:
            raise IndexError(f"slice index {i} out of range for {n} slices")
        path = geometry.files[i]
        if path is None:
            why = geometry.missing.get(i % n, "no file")
            raise PatientDataError(geometry.patient_id, f"CT slice {i % n} is unusable: {why}", None)
        try:
            ds = read_dataset(path)
            raw = ds.pixel_array
        except Exception as e:  # noqa: BLE001
            raise PatientDataError(
                geometry.patient_id, f"cannot decode CT pixel data ({type(e).__name__}: {e})", path
            ) from e
        if raw.shape != (geometry.rows, geometry.cols):
            raise PatientDataError(
                geometry.patient_id,
                f"CT slice pixel array has shape {raw.shape}, expected 2-D {geometry.rows}x{geometry.cols}",
                path,
            )
        slope = to_float(ds.get("RescaleSlope"))
        intercept = to_float(ds.get("RescaleIntercept"))
        hu = raw.astype(np.float64) * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
        pad = _padding_mask(ds, raw)
        if pad is not None:
            hu[pad] = PADDING_HU
        out[k] = hu
    return out


def read_ct_volume(geometry: CTGeometry) -> np.ndarray:
    """Decode the whole CT in HU, ``(Z, rows, cols)`` float32 (see :func:`read_ct_slices`).

    Args:
        geometry: from :func:`read_ct_geometry`.

    Returns:
        float32 array ``(Z, rows, cols)``.
    """
    return read_ct_slices(geometry, None)
