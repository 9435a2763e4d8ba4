"""The demo's ground truth: nodule measurements on what was written, ``demo_truth.json`` and the mask archive."""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["measure_nodule", "background_patch_count", "write_npz", "write_truth"]


def background_patch_count(lung: np.ndarray, mask: np.ndarray, k_max: int, side: int, stride: int = 2) -> int:
    """Positions (stride ``stride``) of side×side patches fully in lung and free of nodule, slices k_max ± 2."""
    count = 0
    nz, ny, nx = lung.shape
    if side < 1 or side > min(ny, nx):
        return 0
    for k in range(max(0, k_max - 2), min(nz, k_max + 3)):
        ok = (lung[k] & (mask[k] == 0)).astype(np.int32)
        ii = np.pad(ok.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        sums = ii[side:, side:] - ii[:-side, side:] - ii[side:, :-side] + ii[:-side, :-side]
        count += int((sums[::stride, ::stride] == side * side).sum())
    return count


def measure_nodule(
    hu: np.ndarray, lung: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]
) -> dict[str, Any]:
    """Size, HU statistics, extent and crop side of the nodule as written (the ``measured`` truth entry).

    The crop side is twice the larger side of the nodule's bounding box on its largest slice; the background
    patch count says how many nodule-free lung patches of that side the largest slice and its neighbours hold.

    Args:
        hu: the CT volume (HU, NaN outside the field of view).
        lung: lung mask.
        mask: nodule mask (non-empty).
        spacing: ``(dz, dy, dx)`` in mm.

    Returns:
        the measurements, JSON-ready.
    """
    dz, dy, dx = spacing
    areas = mask.sum(axis=(1, 2))
    k_max = int(np.argmax(areas))
    yy, xx = np.nonzero(mask[k_max])
    bbox = [int(yy.min()), int(xx.min()), int(yy.max()) + 1, int(xx.max()) + 1]
    side = 2 * max(bbox[2] - bbox[0], bbox[3] - bbox[1])
    vals = hu[mask > 0].astype(np.float64)
    zk = np.nonzero(areas)[0]
    return {
        "n_voxels": int(mask.sum()),
        "volume_ml": round(float(mask.sum()) * dx * dy * dz / 1000.0, 6),
        "equivalent_radius_mm": round((3 * float(mask.sum()) * dx * dy * dz / (4 * math.pi)) ** (1 / 3), 6),
        "mean_hu": round(float(vals.mean()), 4),
        "std_hu": round(float(vals.std()), 4),
        "slices": [int(zk.min()), int(zk.max())],
        "max_area_slice": k_max,
        "max_area": int(areas[k_max]),
        "bbox_yxyx": bbox,
        "crop_side": side,
        "background_patches_in_lung": background_patch_count(lung, mask, k_max, side),
    }


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps (byte-identical output)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1990, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def write_truth(path: Path, header: Mapping[str, Any], patients: Mapping[str, Any]) -> None:
    """Write ``demo_truth.json``: format tag and version, then ``header``'s entries, then the patients by ID.

    Args:
        path: the JSON file.
        header: seed, layout, file names, geometry, genes, modules, phenotype definitions, categories.
        patients: patient ID -> truth entry.
    """
    truth = {"format": "rggan-demo-truth", "version": 1, **header, "patients": dict(sorted(patients.items()))}
    path.write_text(json.dumps(truth, indent=1) + "\n")
