"""The per-patient work of the prepare step, run in worker processes: DICOM -> nodule crop + background patches."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rggan.data import dicom
from rggan.data.prepare.config import PrepareConfig
from rggan.data.prepare.crop import find_background_patches, nodule_crop_box
from rggan.errors import PatientDataError

__all__ = ["PatientJob", "extract_patient", "run_job"]

logger = logging.getLogger(__name__)


@dataclass
class PatientJob:
    """One patient to prepare (pickled to a worker process).

    Attributes:
        patient: PatientID.
        seg: the patient's SEG series.
        ct: the CT series the SEG was drawn on.
        out_dir: the patient's sample folder.
        fingerprint: hash of the image settings and the patient's input files.
        config: the settings.
        unusable: unusable files that may be slices of this CT.
    """

    patient: str
    seg: dicom.SeriesInfo
    ct: dicom.SeriesInfo
    out_dir: Path
    fingerprint: str
    config: PrepareConfig
    unusable: list[dicom.FileProblem] = field(default_factory=list)


def extract_patient(job: PatientJob) -> dict[str, Any]:
    """Read one patient's DICOM and cut the nodule crop and the background patches (worker side).

    Only the headers, the SEG and the few CT slices used are read. No torch/MONAI here, so worker
    processes start fast.

    Args:
        job: the patient's series and settings.

    Returns:
        ``image`` (h, w) HU, ``mask`` (h, w) 0/1, ``bases`` (K, h, w) HU and ``details`` for the report;
        with ``margin_slices`` or ``margin_mm`` set also ``margin_images`` (n, h, w) HU and ``margin_masks``
        (n, h, w) 0/1, the crop box on the nodule slice (first) and the other slices of the margin target.

    Raises:
        PatientDataError: any problem of this patient's data.
    """
    cfg = job.config
    cover = [pos for seg_file in job.seg.files for pos in dicom.seg_frame_positions(seg_file)] if job.unusable else []
    geometry = dicom.read_ct_geometry(job.ct, unusable=job.unusable, cover=cover)
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    for seg_file in job.seg.files:
        mask |= dicom.read_seg_mask(seg_file, geometry)
    areas = mask.reshape(mask.shape[0], -1).sum(1)
    z = int(np.argmax(areas))
    side = None if cfg.crop_mm is None else int(round(cfg.crop_mm / min(geometry.pixel_spacing)))
    y0, x0, y1, x1 = nodule_crop_box(mask[z], side)
    h, w = y1 - y0, x1 - x0
    r = cfg.base_slice_radius
    slices = [z] + [s for d in range(1, r + 1) for s in (z - d, z + d) if 0 <= s < geometry.shape[0]]
    for s in slices:  # a damaged file elsewhere in the series is harmless; on these slices it is not
        if s in geometry.missing:
            role = "the nodule slice" if s == z else f"background slice {s} (within {r} slices of the nodule slice {z})"
            raise PatientDataError(
                job.patient, f"{role} has no usable CT file: {geometry.missing[s]}", job.ct.folder
            )
    # the margin target's slices: those within margin_slices (or margin_mm) of z that hold tumour inside the
    # crop box and have a usable CT file (a missing one only shortens the average)
    k = cfg.margin_radius(geometry.slice_spacing)
    near = [s for d in range(1, k + 1) for s in (z - d, z + d) if 0 <= s < geometry.shape[0]]
    tumour = [s for s in near if mask[s, y0:y1, x0:x1].any() and s not in geometry.missing]
    margin = [z, *tumour] if cfg.measures_margin else []
    read = slices + [s for s in margin if s not in slices]
    hu_all = dicom.read_ct_slices(geometry, read)
    hu = hu_all[: len(slices)]
    rng = np.random.default_rng([cfg.seed, zlib.crc32(job.patient.encode())])
    try:
        patches = find_background_patches(hu, mask[slices], slices, h, w, cfg.num_bases, cfg, rng)
    except ValueError as err:
        raise PatientDataError(job.patient, f"cannot extract background patches: {err}", job.ct.folder) from err
    bases = np.stack([hu[slices.index(s), py : py + h, px : px + w] for s, py, px in patches])
    details = {
        "ct_series": job.ct.series_uid,
        "ct_description": job.ct.description,
        "seg_series": job.seg.series_uid,
        "slice_index": z,
        "tumour_slices": int((areas > 0).sum()),
        "nodule_area_px": int(areas[z]),
        "crop_box": [y0, x0, y1, x1],
        "spacing": [geometry.pixel_spacing[0] * h / cfg.image_size, geometry.pixel_spacing[1] * w / cfg.image_size],
        "base_patches": [list(p) for p in patches],
    }
    if geometry.missing or geometry.set_aside:  # kept: none of them is on a slice used here
        details["unusable_slices"] = {str(k): why for k, why in sorted(geometry.missing.items())}
        details["set_aside_files"] = [f"{path.name}: {why}" for path, why in geometry.set_aside]
    crops = {"image": hu[0, y0:y1, x0:x1], "mask": mask[z, y0:y1, x0:x1], "bases": bases, "details": details}
    if margin:
        rows = [read.index(s) for s in margin]
        crops["margin_images"] = hu_all[rows, y0:y1, x0:x1]
        crops["margin_masks"] = mask[margin, y0:y1, x0:x1]
        details["margin_slices"] = margin
    return crops


def run_job(job: PatientJob) -> tuple[PatientJob, dict[str, Any] | None, str]:
    """Worker entry point: never raises for a patient's data problem.

    Args:
        job: the patient's series and settings.

    Returns:
        ``(job, crops or None, '' or the reason the patient is excluded)``.
    """
    try:
        return job, extract_patient(job), ""
    except PatientDataError as err:
        return job, None, err.reason + (f" ({err.path})" if err.path else "")
    except Exception as err:  # noqa: BLE001 - a bug on one patient must not stop the batch; it is reported
        logger.exception("unexpected error while preparing %s", job.patient)
        return job, None, f"unexpected error: {type(err).__name__}: {err}"
