"""Settings of the prepare step (:class:`PrepareConfig`); every field enters the output fingerprint."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from rggan.data.prepare.manifest import sha
from rggan.data.rna import GeneTransformConfig
from rggan.intensity import DEFAULT_HU_RANGE

__all__ = ["PrepareConfig"]


@dataclass
class PrepareConfig:
    """Settings of the prepare step; every field enters the output fingerprint.

    Args:
        image_size: side of the saved crops and patches in pixels (power of two for the networks).
        num_bases: background patches per patient.
        seed: seed of the train/validation split and of the patch positions.
        val_fraction: fraction of included patients held out for validation (patient level).
        hu_min: lower HU clip; maps to -1.
        hu_max: upper HU clip; maps to +1.
        lung_hu: HU threshold below which a pixel inside the body counts as lung.
        min_lung_fraction: minimal fraction of lung pixels in a background patch (halved when no patch
            qualifies, e.g. for a small lung): the patches should look like the parenchyma around a nodule.
        base_slice_radius: background patches come from slices within this many slices of the nodule slice.
        crop_mm: crop side in mm (a fixed field of view, so nodule size stays visible in pixels); None: the
            original research code's ``2 * max(w, h)`` of the tumour's bounding box, which scales every
            nodule to about the same size in pixels.
        genes: gene preprocessing (see :class:`rggan.data.rna.GeneTransformConfig`).
        permute_rna: negative control. A seed: the expression profiles are shuffled among the included
            patients (each patient gets another patient's whole RNA column), which breaks every true
            gene-image link while keeping the genes' joint distribution; None (default): no shuffling.
        margin_slices: > 0: each patient's margin irregularity is also measured on every slice within this
            many slices of the nodule slice that holds tumour (same crop box, resize and normalisation as
            the nodule crop) and their mean is stored in the datalist (``margin``), a steadier training
            target than one slice's outline; 0 (default): not measured. Left out of the fingerprints
            when 0, so folders prepared before the setting existed stay up to date.
        margin_mm: > 0: the same margin target over the tumour's slices within this distance (mm) of the nodule
            slice, converted per patient to the nearest whole number of slices of its CT series (8 mm: 2 slices
            at 4 mm, 6 at 1.25 mm; 0 slices, the nodule slice alone, when the slices are thicker than twice
            this), so the depth averaged is the same whatever each scanner's slice spacing; 0 (default): off.
            At most one of ``margin_slices`` and ``margin_mm`` is set. Left out of the fingerprints when 0.
    """

    image_size: int = 128
    num_bases: int = 10
    seed: int = 12345
    val_fraction: float = 0.2
    hu_min: float = DEFAULT_HU_RANGE[0]
    hu_max: float = DEFAULT_HU_RANGE[1]
    lung_hu: float = -400.0
    min_lung_fraction: float = 0.9
    base_slice_radius: int = 2
    crop_mm: float | None = None
    genes: GeneTransformConfig = field(default_factory=GeneTransformConfig)
    permute_rna: int | None = None
    margin_slices: int = 0
    margin_mm: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.margin_slices, bool) or not isinstance(self.margin_slices, int) or self.margin_slices < 0:
            raise ValueError(f"margin_slices must be an int >= 0 (0: off), got {self.margin_slices!r}")
        if isinstance(self.margin_mm, bool) or not isinstance(self.margin_mm, (int, float)) or not (
            math.isfinite(self.margin_mm) and self.margin_mm >= 0
        ):
            raise ValueError(f"margin_mm must be a finite number >= 0 (0: off), got {self.margin_mm!r}")
        if self.margin_slices and self.margin_mm:
            raise ValueError(
                f"set one of margin_slices ({self.margin_slices}) and margin_mm ({self.margin_mm}), not both: "
                "margin_mm gives each patient the number of slices that spans that many mm"
            )
        self.margin_mm = float(self.margin_mm)

    @property
    def measures_margin(self) -> bool:
        """Whether each patient's slice-averaged margin is measured (``margin_slices`` or ``margin_mm`` set)."""
        return bool(self.margin_slices or self.margin_mm)

    def margin_radius(self, slice_spacing: float) -> int:
        """Slices on each side of the nodule slice that the margin target averages, for a series' spacing.

        Args:
            slice_spacing: the CT series' distance between slices in mm.

        Returns:
            ``margin_slices``, or ``margin_mm`` in whole slices (nearest), or 0 when neither is set.
        """
        if self.margin_slices or not self.margin_mm:
            return self.margin_slices
        return int(self.margin_mm / slice_spacing + 0.5)

    def _settings(self) -> dict:
        d = dataclasses.asdict(self)
        if not self.margin_slices:  # added in 0.12: the default keeps earlier fingerprints
            d.pop("margin_slices")
        if not self.margin_mm:  # added in 0.12.1: the same
            d.pop("margin_mm")
        return d

    def image_fingerprint(self) -> str:
        """Hash of the settings that change the per-patient image files."""
        d = self._settings()
        for key in ("genes", "val_fraction", "permute_rna"):
            d.pop(key)
        return sha(json.dumps(d, sort_keys=True))

    def fingerprint(self) -> str:
        """Hash of every setting."""
        return sha(json.dumps(self._settings(), sort_keys=True, default=str))
