"""One file's DICOM header: SOP class, the checks that make a file unusable, and the facts the index keeps.

Only headers are read here (the pixel data's offset and length, not its value), so indexing a download is fast
and a truncated file is found without decoding it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from rggan.data.dicom.records import FileProblem, InstanceInfo
from rggan.data.dicom.values import get_text, quiet, to_float, to_floats, to_int

__all__ = ["SEG_SOP_CLASS", "CT_SOP_CLASSES", "PET_SOP_CLASSES", "classify_instance", "read_header"]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: CT Image Storage, Enhanced CT Image Storage, Legacy Converted Enhanced CT Image Storage.
CT_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"})
#: PET Image Storage, Enhanced PET Image Storage, Legacy Converted Enhanced PET Image Storage.
PET_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.128.1"}
)

_PIXEL_DATA_TAG = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
# A valid UID: digits and dots, at most 64 characters (PS3.5 9.1). A flipped byte in a UID breaks this.
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def classify_instance(sop_class_uid: str, modality: str) -> str:
    """Classify an instance by SOPClassUID, falling back to Modality when the class is unknown.

    Args:
        sop_class_uid: SOPClassUID ('' when absent).
        modality: Modality ('' when absent).

    Returns:
        ``"SEG"``, ``"CT"``, ``"PT"`` or ``"other"``. A Secondary Capture or dose report with Modality
        CT is ``"other"``: only image storage classes count.
    """
    if sop_class_uid == SEG_SOP_CLASS:
        return "SEG"
    if sop_class_uid in CT_SOP_CLASSES:
        return "CT"
    if sop_class_uid in PET_SOP_CLASSES:
        return "PT"
    if not sop_class_uid and modality in ("SEG", "CT", "PT"):
        return modality
    return "other"


def _looks_like_headerless_dicom(head: bytes) -> bool:
    """A DICOM stream without preamble starts with a group 0002 or 0008 element (little endian)."""
    return len(head) >= 4 and head[:2] in (b"\x02\x00", b"\x08\x00")


def _damaged_value(ds: Dataset, keyword: str, value: str) -> str:
    """Why a UID or PatientID value cannot be trusted ('' when it looks right)."""
    if keyword == "PatientID":
        if not value:
            return "no PatientID"
        control = any(ord(c) < 32 or ord(c) == 127 for c in value)
        if control or (not value.isascii() and "SpecificCharacterSet" not in ds):
            return f"PatientID {value!r} holds invalid characters"
        return ""
    if value and (len(value) > 64 or not _UID_RE.match(value)):
        return f"{keyword} {value!r} is not a valid UID"
    return ""


@quiet
def read_header(path: Path) -> tuple[InstanceInfo, dict[str, str]] | FileProblem:
    """Read one file's header (pixel data not read); never raises for a bad file.

    Args:
        path: any file of the download.

    Returns:
        ``(instance, series-level fields)``, or the :class:`FileProblem` that makes the file unusable.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as e:
        return FileProblem(path, "unreadable", f"cannot open: {e}")
    if size == 0:
        return FileProblem(path, "not_dicom", "empty file")
    has_preamble = len(head) == 132 and head[128:132] == b"DICM"
    if not has_preamble and not _looks_like_headerless_dicom(head):
        return FileProblem(path, "not_dicom", "not a DICOM file (no DICM preamble)")
    try:
        # defer_size: the pixel data value is not read, but its offset and length are recorded,
        # which lets us detect files truncated inside the pixel data without decoding anything.
        # pydicom's warnings on invalid values are silenced (@quiet): such values are checked and reported per file.
        ds = pydicom.dcmread(path, defer_size=1024, force=not has_preamble)
    except InvalidDicomError as e:
        return FileProblem(path, "not_dicom", f"not a DICOM file: {e}")
    except Exception as e:  # noqa: BLE001 - any parser failure is recorded, never raised
        return FileProblem(path, "unreadable", f"cannot parse DICOM header ({type(e).__name__}: {e})")
    try:
        return _instance_of(path, ds, size, has_preamble)
    except Exception as e:  # noqa: BLE001 - malformed values: record, never raise
        return FileProblem(path, "unreadable", f"malformed DICOM header ({type(e).__name__}: {e})")


def _pixel_data_problem(ds: Dataset, size: int) -> str:
    """Why an image file's pixel data is unusable ('' when it is complete), read from a deferred header.

    Args:
        ds: the header read with ``defer_size``: the pixel data's offset and length are known, its value is not read.
        size: the file size in bytes.

    Returns:
        The reason, or ''.
    """
    raw = ds.get_item(_PIXEL_DATA_TAG, keep_deferred=True)  # value not read, offset and length known
    if raw is None:
        return "image file without pixel data (truncated?)"
    length = getattr(raw, "length", None)
    tell = getattr(raw, "value_tell", None)
    if length is not None and tell is not None and length != _UNDEFINED_LENGTH and tell + length > size:
        return f"file truncated: pixel data needs {tell + length} bytes, file has {size}"
    return ""


def _instance_of(
    path: Path, ds: Dataset, size: int, has_preamble: bool
) -> tuple[InstanceInfo, dict[str, str]] | FileProblem:
    """The :class:`InstanceInfo` and series fields of a parsed header, or the FileProblem that makes it unusable."""
    sop_uid = get_text(ds, "SOPInstanceUID")
    series_uid = get_text(ds, "SeriesInstanceUID")
    missing = [k for k, v in (("SOPInstanceUID", sop_uid), ("SeriesInstanceUID", series_uid)) if not v]
    if missing:
        why = "truncated or incomplete DICOM header" if has_preamble else "not a DICOM file"
        kind = "incomplete" if has_preamble else "not_dicom"
        return FileProblem(path, kind, f"{why}: missing {', '.join(missing)}")
    sop_class = get_text(ds, "SOPClassUID")
    modality = get_text(ds, "Modality")
    kind = classify_instance(sop_class, modality)
    position = to_floats(ds.get("ImagePositionPatient"), 3)
    damage = [
        why
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "SOPClassUID", "PatientID")
        if (why := _damaged_value(ds, keyword, get_text(ds, keyword)))
    ]
    if damage:
        # the series UID is kept only when it is itself valid: it then tells which series lost this file
        known = "" if _damaged_value(ds, "SeriesInstanceUID", series_uid) else series_uid
        return FileProblem(
            path, "damaged", f"damaged DICOM header: {'; '.join(damage)}", known, position  # type: ignore[arg-type]
        )
    rows = to_int(ds.get("Rows")) or 0
    cols = to_int(ds.get("Columns")) or 0
    if kind in ("CT", "PT", "SEG") and (truncated := _pixel_data_problem(ds, size)):
        return FileProblem(path, "truncated", truncated, series_uid, position)  # type: ignore[arg-type]
    spacing = to_floats(ds.get("PixelSpacing"), 2)
    inst = InstanceInfo(
        path=path,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        kind=kind,
        instance_number=to_int(ds.get("InstanceNumber")),
        position=position,  # type: ignore[arg-type]
        orientation=to_floats(ds.get("ImageOrientationPatient"), 6),
        rows=rows,
        cols=cols,
        pixel_spacing=spacing,  # type: ignore[arg-type]
        slice_thickness=to_float(ds.get("SliceThickness")),
        spacing_between_slices=to_float(ds.get("SpacingBetweenSlices")),
        number_of_frames=to_int(ds.get("NumberOfFrames")) or 1,
        patient_id=get_text(ds, "PatientID"),
        study_uid=get_text(ds, "StudyInstanceUID"),
    )
    series_fields = {
        "patient_id": inst.patient_id,
        "study_uid": inst.study_uid,
        "series_uid": series_uid,
        "modality": modality,
        "description": get_text(ds, "SeriesDescription"),
        "frame_of_reference_uid": get_text(ds, "FrameOfReferenceUID"),
        "series_number": get_text(ds, "SeriesNumber"),
    }
    return inst, series_fields
