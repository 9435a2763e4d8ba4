"""DICOM header pieces shared by the demo's CT/PET and SEG writers: study identity, file meta, value formats."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from rggan.demo.identifiers import COLLECTION

__all__ = [
    "StudyInfo",
    "ds_string",
    "file_meta",
    "set_patient_study",
    "set_dates",
    "set_equipment",
    "add_ctp_private",
]


@dataclass(frozen=True)
class StudyInfo:
    """Study-level attributes shared by every series of a study (``write_ct_series(study=...)``).

    ``date`` is ``YYYYMMDD``, ``time`` ``HHMMSS``. ``study_id`` is empty in TCIA data (appears as ``NA``
    in descriptive folder names).
    """

    study_uid: str
    date: str = "19900906"
    time: str = "101500"
    description: str = "CT CHEST WO CONTRAST"
    accession: str = ""
    study_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = "M"
    patient_age: str = ""
    referring_physician: str = ""

    @classmethod
    def coerce(cls, study: StudyInfo | Mapping[str, Any]) -> StudyInfo:
        """Return ``study`` itself, or a :class:`StudyInfo` built from a mapping of its fields."""
        if isinstance(study, StudyInfo):
            return study
        return cls(**dict(study))


def ds_string(value: float) -> str:
    """A DS (decimal string) value of at most 16 characters for ``value``, without trailing zeros."""
    s = f"{value:.6f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s[:16]


def file_meta(sop_class: str, sop_uid: str, implementation_class_uid: str = "1.2.40.0.13.1.1.1") -> FileMetaDataset:
    """File meta information (Explicit VR Little Endian) in the style of the collection's dcm4che files.

    Args:
        sop_class: MediaStorageSOPClassUID.
        sop_uid: MediaStorageSOPInstanceUID.
        implementation_class_uid: ImplementationClassUID (dcm4che's by default).

    Returns:
        the file meta dataset.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = implementation_class_uid
    meta.ImplementationVersionName = "dcm4che-1.4.35"
    return meta


def set_patient_study(ds: Dataset, patient_id: str, study: StudyInfo) -> None:
    """Write the patient and study modules of ``ds`` (PatientName is the PatientID, as in TCIA data)."""
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    if study.patient_age:
        ds.PatientAge = study.patient_age
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.AccessionNumber = study.accession
    ds.StudyID = study.study_id
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyDescription = study.description


def set_dates(ds: Dataset, date: str, time: str, modules: tuple[str, ...] = ("Series", "Content")) -> None:
    """Set ``<module>Date`` to ``date`` and ``<module>Time`` to ``time`` for each of ``modules``."""
    for module in modules:
        setattr(ds, f"{module}Date", date)
        setattr(ds, f"{module}Time", time)


def set_equipment(
    ds: Dataset, manufacturer: str, model: str, software_versions: str | None = None, serial: str | None = None
) -> None:
    """Set the general-equipment attributes (SoftwareVersions and DeviceSerialNumber only when given)."""
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    if software_versions is not None:
        ds.SoftwareVersions = software_versions
    if serial is not None:
        ds.DeviceSerialNumber = serial


def add_ctp_private(ds: Dataset) -> None:
    """Add the private ``CTP`` block (collection name and site id) that TCIA's anonymiser writes."""
    block = ds.private_block(0x0013, "CTP", create=True)
    block.add_new(0x10, "LO", COLLECTION)
    block.add_new(0x13, "LO", "43341501")
