"""CT intensity scaling: HU <-> the networks' [-1, 1], with the window the prepared dataset was made with.

``rggan prepare`` clips HU to ``hu_range`` (``PrepareConfig.hu_min``/``hu_max``, default [-1000, 500]) and maps it
linearly to [-1, 1], and records ``hu_range`` in ``datalist.json``.  Everything that turns images back into HU
(inference, features, evaluation) or a user's HU patch into a network input reads that range through
:func:`hu_range_of`; :data:`DEFAULT_HU_RANGE` is the only window written in the code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_HU_RANGE", "hu_per_unit", "hu_range_of", "hu_to_unit", "unit_to_hu"]

#: the prepare step's default HU window (``PrepareConfig.hu_min``, ``hu_max``)
DEFAULT_HU_RANGE: tuple[float, float] = (-1000.0, 500.0)


def hu_range_of(dataset_dir: str | os.PathLike | None) -> tuple[float, float]:
    """The ``hu_range`` recorded in a prepared folder's ``datalist.json`` (the default if it has none or no folder)."""
    if dataset_dir is None:
        return DEFAULT_HU_RANGE
    path = Path(dataset_dir) / "datalist.json"
    if not path.is_file():
        return DEFAULT_HU_RANGE
    value = json.loads(path.read_text(encoding="utf-8")).get("hu_range") or DEFAULT_HU_RANGE
    lo, hi = (float(v) for v in value)
    if not hi > lo:
        raise ValueError(f"{path}: hu_range {value} is not an increasing pair")
    return lo, hi


def hu_to_unit(hu: np.ndarray, hu_range: Sequence[float] = DEFAULT_HU_RANGE) -> np.ndarray:
    """Clip HU to ``hu_range`` and map linearly to [-1, 1] (float32).

    Equivalent to ``monai.transforms.ScaleIntensityRange(lo, hi, -1, 1, clip=True)``, without importing MONAI
    into the prepare step (its import alone costs seconds).
    """
    lo, hi = (float(v) for v in hu_range)
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo) * 2.0 - 1.0).astype(np.float32)


def hu_per_unit(hu_range: Sequence[float] = DEFAULT_HU_RANGE) -> float:
    """HU per unit of the networks' [-1, 1] scale (750 for the default window): converts intensity differences.

    Args:
        hu_range: the window (lo, hi) the images were normalised with.

    Returns:
        ``(hi - lo) / 2``.
    """
    lo, hi = (float(v) for v in hu_range)
    return (hi - lo) / 2.0


def unit_to_hu(x: Any, hu_range: Sequence[float] = DEFAULT_HU_RANGE) -> Any:
    """Inverse of :func:`hu_to_unit` within the window; numpy arrays and torch tensors keep their type."""
    return (x + 1.0) * hu_per_unit(hu_range) + float(hu_range[0])
