"""The demo's image-series writer: one axial CT (or PET) series, one DICOM file per slice."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset

from rggan.demo.headers import (
    StudyInfo,
    add_ctp_private,
    ds_string,
    file_meta,
    set_dates,
    set_equipment,
    set_patient_study,
)
from rggan.demo.identifiers import CT_IMAGE_STORAGE, PET_IMAGE_STORAGE, demo_uid
from rggan.demo.nbia import nbia_file_names

__all__ = ["write_ct_series"]


@dataclass(frozen=True)
class _Encoding:
    """How HU (or PET) values become stored pixel values."""

    signed: bool
    intercept: float
    slope: float
    lo: int
    hi: int
    padding: int | None

    @property
    def fill(self) -> int:
        """Stored value of voxels outside the field of view (NaN in the volume)."""
        return self.padding if self.padding is not None else self.lo

    def stored(self, sl: np.ndarray) -> np.ndarray:
        """Stored pixel values of one slice ``sl`` (NaN -> :attr:`fill`)."""
        nan = np.isnan(sl)
        raw = np.clip(np.rint((np.where(nan, 0.0, sl) - self.intercept) / self.slope), self.lo, self.hi)
        raw[nan] = self.fill
        return raw.astype(np.int16 if self.signed else np.uint16)


def _encoding(pet: bool, signed: bool, padding_value: int | None) -> _Encoding:
    """PET: unsigned, intercept 0, no padding. CT: intercept -1024, int16 or 12-bit unsigned, padding if storable."""
    if pet:
        return _Encoding(signed=False, intercept=0.0, slope=1.0, lo=0, hi=32767, padding=None)
    lo, hi = (-32768, 32767) if signed else (0, 4095)
    padding = padding_value
    if padding is not None and not (lo <= padding <= (hi if signed else 65535)):
        padding = None
    return _Encoding(signed=signed, intercept=-1024.0, slope=1.0, lo=lo, hi=hi, padding=padding)


def _series_header(
    tpl: Dataset,
    *,
    sop_class: str,
    modality: str,
    image_type: Sequence[str],
    date: str,
    time: str,
    manufacturer: str,
    model: str,
    description: str,
    thickness: float,
    feet_first: bool,
) -> None:
    """Write the series, equipment and acquisition attributes of the template ``tpl``."""
    tpl.SpecificCharacterSet = "ISO_IR 100"
    tpl.ImageType = list(image_type)
    tpl.SOPClassUID = sop_class
    tpl.SOPInstanceUID = ""
    set_dates(tpl, date, time, ("Series", "Acquisition", "Content"))
    tpl.Modality = modality
    set_equipment(tpl, manufacturer, model)
    tpl.InstitutionName = ""
    tpl.SeriesDescription = description
    tpl.BodyPartExamined = "CHEST"
    tpl.SliceThickness = ds_string(thickness)
    if modality != "PT":
        tpl.KVP = "120"
        tpl.ConvolutionKernel = "STANDARD"
    tpl.PatientPosition = "FFS" if feet_first else "HFS"


def _image_header(
    tpl: Dataset, enc: _Encoding, pet: bool, rows: int, columns: int, pixel_spacing: tuple[float, float]
) -> None:
    """Write the image pixel, rescale and window (or PET units) attributes of the template ``tpl``."""
    tpl.SamplesPerPixel = 1
    tpl.PhotometricInterpretation = "MONOCHROME2"
    tpl.Rows = rows
    tpl.Columns = columns
    tpl.PixelSpacing = [ds_string(v) for v in pixel_spacing]
    tpl.BitsAllocated = 16
    tpl.BitsStored = 16 if enc.signed else (16 if pet else 12)
    tpl.HighBit = tpl.BitsStored - 1
    tpl.PixelRepresentation = 1 if enc.signed else 0
    if enc.padding is not None:
        tpl.add_new(0x00280120, "SS" if enc.signed else "US", int(enc.padding))  # PixelPaddingValue
    if pet:
        tpl.Units = "BQML"
        tpl.RescaleIntercept = "0"
        tpl.RescaleSlope = "1"
        tpl.CorrectedImage = ["ATTN", "DECY"]
        tpl.DecayCorrection = "START"
    else:
        tpl.WindowCenter = "-600"
        tpl.WindowWidth = "1600"
        tpl.RescaleIntercept = ds_string(enc.intercept)
        tpl.RescaleSlope = ds_string(enc.slope)
        tpl.RescaleType = "HU"


def _frame_header(tpl: Dataset, series_uid: str, series_number: int, origin: np.ndarray, iop: np.ndarray) -> None:
    """Write the series identity and frame-of-reference attributes shared by every slice of ``tpl``."""
    tpl.SeriesInstanceUID = series_uid
    tpl.SeriesNumber = int(series_number)
    tpl.AcquisitionNumber = 1
    tpl.InstanceNumber = 1
    tpl.ImagePositionPatient = [ds_string(v) for v in origin]
    tpl.ImageOrientationPatient = [ds_string(v) for v in iop]
    tpl.PositionReferenceIndicator = ""
    tpl.SliceLocation = "0"


def _write_slices(
    folder: Path,
    tpl: Dataset,
    vol: np.ndarray,
    enc: _Encoding,
    geometry: tuple[np.ndarray, np.ndarray, float],
    feet_first: bool,
    file_names: str,
) -> list[Dataset]:
    """Save one file per slice of ``vol`` from the template ``tpl``; return the headers in volume order.

    Args:
        folder: the series folder.
        tpl: header template (every attribute except the per-slice ones).
        vol: ``(Z, Y, X)`` values in ascending-normal order.
        enc: value encoding.
        geometry: ``(origin, normal, dz)``: slice ``k`` lies at ``origin + k * dz * normal``.
        feet_first: InstanceNumber runs from the top slice down.
        file_names: ``"nbia"`` or ``"legacy"`` (see :func:`rggan.demo.nbia.nbia_file_names`).

    Returns:
        the headers, pixel data removed, in volume order.
    """
    org, normal, spacing_z = geometry
    nz = vol.shape[0]
    order = list(range(nz))[::-1] if feet_first else list(range(nz))  # order[rank-1] = volume index
    rank_of = {k: r + 1 for r, k in enumerate(order)}
    names = nbia_file_names(nz, file_names)
    series_uid = str(tpl.SeriesInstanceUID)
    headers: list[Dataset] = []
    with disable_value_validation():
        for k in range(nz):
            inst = rank_of[k]
            sop_uid = demo_uid("sop", series_uid, k)
            ds = Dataset(dict(tpl.items()))
            ds.file_meta = file_meta(str(tpl.SOPClassUID), sop_uid)
            ipp = org + k * spacing_z * normal
            # add_new replaces the (shared) template elements instead of changing them in place
            ds.add_new(0x00080018, "UI", sop_uid)  # SOPInstanceUID
            ds.add_new(0x00200013, "IS", inst)  # InstanceNumber
            ds.add_new(0x00200032, "DS", [ds_string(v) for v in ipp])  # ImagePositionPatient
            ds.add_new(0x00201041, "DS", ds_string(float(np.dot(ipp, normal))))  # SliceLocation
            ds.PixelData = enc.stored(vol[k]).tobytes()
            ds.save_as(folder / names[inst - 1], enforce_file_format=True)
            del ds.PixelData
            headers.append(ds)
    return headers


def write_ct_series(
    folder: Path,
    volume_hu: np.ndarray,
    *,
    patient_id: str,
    study: StudyInfo | Mapping[str, Any],
    series_uid: str,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    description: str,
    series_number: int,
    feet_first: bool = False,
    signed: bool = True,
    padding_value: int | None = -2000,
    file_names: str = "nbia",
    frame_of_reference_uid: str | None = None,
    modality: Literal["CT", "PT"] = "CT",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    manufacturer: str = "GE MEDICAL SYSTEMS",
    model: str = "LightSpeed16",
    series_date: str | None = None,
    series_time: str | None = None,
) -> list[Dataset]:
    """Write an image series, one file per slice, and return the headers (no pixel data) in volume order.

    ``volume_hu`` is ``(Z, Y, X)`` sorted by ascending position along the slice normal
    ``n = cross(orientation[:3], orientation[3:])``; slice ``k`` has ImagePositionPatient
    ``origin + k * dz * n`` (``origin`` = IPP of the first slice, pixel (0, 0)); ``spacing = (dz, dy, dx)``,
    PixelSpacing ``[dy, dx]``.

    * InstanceNumber (and the NBIA file-name rank) runs along the volume (1 = lowest slice) by default; with
      ``feet_first=True`` it runs from the top slice down (and PatientPosition is ``FFS``).
    * ``signed``: int16 with PixelRepresentation 1, BitsStored 16; otherwise uint16, PixelRepresentation 0,
      BitsStored 12 (stored values clipped to 0..4095). RescaleIntercept −1024, slope 1 in both cases.
    * ``padding_value``: written as PixelPaddingValue when representable (ignored if negative and unsigned);
      voxels that are NaN in ``volume_hu`` are stored as that value (outside the scan field of view).
      Without a padding value, NaN voxels are stored as the lowest storable value.
    * ``file_names``: ``"nbia"`` (``1-01.dcm``...) or ``"legacy"`` (``000000.dcm``...).
    * ``modality="PT"`` writes PET Image Storage with Units ``BQML`` (values taken as given, intercept 0).
    * ``frame_of_reference_uid`` defaults to one derived from ``series_uid``; ``series_date``/``series_time``
      default to the study's.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study = StudyInfo.coerce(study)
    vol = np.asarray(volume_hu)
    if vol.ndim != 3:
        raise ValueError(f"volume_hu must be (Z, Y, X), got shape {vol.shape}")
    dz, dy, dx = (float(s) for s in spacing)
    iop = np.asarray(orientation, dtype=float)
    pet = modality == "PT"
    enc = _encoding(pet, signed, padding_value)
    tpl = Dataset()
    _series_header(
        tpl, sop_class=PET_IMAGE_STORAGE if pet else CT_IMAGE_STORAGE, modality=modality, image_type=image_type,
        date=series_date or study.date, time=series_time or study.time, manufacturer=manufacturer, model=model,
        description=description, thickness=dz, feet_first=feet_first,
    )  # fmt: skip
    set_patient_study(tpl, patient_id, study)
    add_ctp_private(tpl)
    org = np.asarray(origin, dtype=float)
    _frame_header(tpl, series_uid, series_number, org, iop)
    tpl.FrameOfReferenceUID = frame_of_reference_uid or demo_uid("for", series_uid)
    _image_header(tpl, enc, pet, vol.shape[1], vol.shape[2], (dy, dx))
    geometry = (org, np.cross(iop[:3], iop[3:]), dz)
    return _write_slices(folder, tpl, vol, enc, geometry, feet_first, file_names)
