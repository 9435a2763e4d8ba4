"""The files of a generated nodule: NIfTI image and mask, a PNG preview, and the ``index.csv`` table.

Written by :class:`rggan.handlers.GeneratedNoduleWriter`; :func:`outlined` is also used for the
traversal strips of the radiogenomic map.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INDEX_NAME", "write_nifti", "to_uint8", "outlined", "preview_png", "safe_name", "write_index"]

#: name of the table of generated nodules in an inference output folder
INDEX_NAME = "index.csv"


def write_nifti(path: str | os.PathLike, array_rc: np.ndarray, spacing: Sequence[float], dtype: Any) -> None:
    """Write a (row, col) slice as NIfTI voxels (col, row, 1) with affine diag(col mm, row mm, 1 mm).

    Args:
        path: destination ``.nii`` / ``.nii.gz``.
        array_rc: the (row, col) slice.
        spacing: (row, col) pixel spacing in mm.
        dtype: voxel type written.
    """
    import nibabel as nib

    data = np.ascontiguousarray(np.asarray(array_rc).T[:, :, None].astype(dtype))
    affine = np.diag([float(spacing[1]), float(spacing[0]), 1.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    nib.save(img, str(path))


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Grey levels 0..255 of an image in [-1, 1] (values outside are clipped)."""
    return ((np.clip(x, -1, 1) + 1) * 127.5).round().astype(np.uint8)


def outlined(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An image with the outline of its mask drawn in.

    Args:
        image: (H, W) in [-1, 1].
        mask: (H, W); the region is ``mask > 0``.

    Returns:
        RGB uint8 (H, W, 3), the region's border pixels (4-connectivity) in red.
    """
    g = to_uint8(image)
    inside = mask > 0
    pad = np.pad(inside, 1)
    edge = inside & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
    rgb = np.stack([g, g, g], -1)
    rgb[edge] = (255, 40, 40)
    return rgb


def preview_png(base: np.ndarray, image: np.ndarray, mask: np.ndarray, min_side: int = 128) -> np.ndarray:
    """The preview of one generated nodule.

    Args:
        base: (S, S) background patch in [-1, 1].
        image: (S, S) generated image in [-1, 1].
        mask: (S, S) generated mask.
        min_side: tiles are enlarged by an integer factor to at least this height.

    Returns:
        RGB uint8 (H, 3W, 3): background | generated image | generated image with the mask outline in red.
    """
    b, g = to_uint8(base), to_uint8(image)
    tiles = [np.stack([b, b, b], -1), np.stack([g, g, g], -1), outlined(image, mask)]
    row = np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], axis=1)
    scale = max(1, int(math.ceil(min_side / base.shape[0])))
    return np.repeat(np.repeat(row, scale, axis=0), scale, axis=1)


def safe_name(text: str) -> str:
    """``text`` usable as a file name: characters other than letters, digits, ``-_.`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)) or "x"


def write_index(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write the rows as CSV (columns: the keys of the first row; just ``id`` when there is none).

    Args:
        path: destination file.
        rows: one mapping per nodule.

    Returns:
        The path written.
    """
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["id"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(path)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path
