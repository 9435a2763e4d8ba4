"""pydicom-based reader for a TCIA NSCLC-Radiogenomics download (NBIA Data Retriever output).

The tree is walked and every file's header is read; folder names, file names and ``metadata.csv``
are never interpreted, so both NBIA layouts (descriptive and classic) and renamed copies work.

Main entry points:

* :func:`index_dicom_tree` - index a download: series grouped by SeriesInstanceUID and classified
  by SOPClassUID/Modality as ``"CT"``, ``"PT"``, ``"SEG"`` or ``"other"``; unreadable files are
  recorded in :attr:`DicomIndex.problems`, never raised.
* :func:`find_patient_segs` / :func:`resolve_referenced_ct` - the SEG series of a patient and the
  CT series it was drawn on (UIDs from every reference location, then fallbacks).
* :func:`read_ct_geometry` / :func:`read_ct_slices` - CT geometry from headers only (slices sorted by
  ascending ``dot(IPP, n)``, ``n = cross(IOP[:3], IOP[3:])``) and HU pixels of selected slices.
* :func:`read_seg_mask` - a DICOM SEG as a ``uint8`` ``(Z, rows, cols)`` mask aligned with the
  sorted CT, frames placed by geometry (works for 3D Slicer, ePAD and conformant SEGs).

Conventions (see ``docs/architecture.md``): a CT volume is ``(Z, Y, X)``, slices sorted by ascending
position along the slice normal; masks use the same order.

Documented choices:

* All segments of a SEG are OR-ed into one binary mask (labels are meaningless in this collection);
  pass ``segments=`` to :func:`read_seg_mask` to keep only some segment numbers.
* FRACTIONAL SEGs are thresholded at half of MaximumFractionalValue (``value >= max / 2``).
* Pixels equal to PixelPaddingValue (or inside the PixelPaddingValue..PixelPaddingRangeLimit range)
  are set to :data:`PADDING_HU` (-1024 HU, air).
* The SEG frame count is ``len(PerFrameFunctionalGroupsSequence)``, not NumberOfFrames. If the
  pixel data holds fewer frames than that but exactly the declared NumberOfFrames (pydicom's
  ``liver_1frame.dcm``), the frames present are used and the extra per-frame items are ignored
  with a warning; any other shortfall is an error (truncated file).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rggan.errors import PatientDataError

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "CT_SOP_CLASSES",
    "PET_SOP_CLASSES",
    "SEG_SOP_CLASS",
    "PADDING_HU",
    "InstanceInfo",
    "SeriesInfo",
    "FileProblem",
    "DicomIndex",
    "CTGeometry",
    "SegReferences",
    "index_dicom_tree",
    "classify_instance",
    "find_patient_segs",
    "seg_references",
    "resolve_referenced_ct",
    "seg_frame_positions",
    "read_ct_geometry",
    "read_ct_slices",
    "read_ct_volume",
    "read_seg_mask",
    "decode_seg_frames",
]

logger = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: CT Image Storage, Enhanced CT Image Storage, Legacy Converted Enhanced CT Image Storage.
CT_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"})
#: PET Image Storage, Enhanced PET Image Storage, Legacy Converted Enhanced PET Image Storage.
PET_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.128.1"}
)
#: HU value given to PixelPaddingValue pixels (air).
PADDING_HU = -1024.0

# Transfer syntaxes whose pixel data is stored natively (not encapsulated).
_NATIVE_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
)
_PIXEL_DATA_TAG = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
# A valid UID: digits and dots, at most 64 characters (PS3.5 9.1). A flipped byte in a UID breaks this.
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


# ----------------------------------------------------------------------------------------------------------------------
# Data classes
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceInfo:
    """Header facts of one DICOM file, enough to sort and check CT slices without re-reading.

    Attributes:
        path: the file.
        sop_instance_uid: SOPInstanceUID.
        sop_class_uid: SOPClassUID ('' when absent).
        kind: ``"CT"``, ``"PT"``, ``"SEG"`` or ``"other"`` (see :func:`classify_instance`).
        instance_number: InstanceNumber or None (never used for ordering).
        position: ImagePositionPatient or None.
        orientation: ImageOrientationPatient (6 values) or None.
        rows: Rows (0 when absent).
        cols: Columns (0 when absent).
        pixel_spacing: PixelSpacing (row spacing, column spacing) or None.
        slice_thickness: SliceThickness or None.
        spacing_between_slices: SpacingBetweenSlices or None.
        number_of_frames: NumberOfFrames (1 when absent).
        patient_id: PatientID of this file ('' when absent).
        study_uid: StudyInstanceUID of this file ('' when absent).
    """

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    kind: str
    instance_number: int | None = None
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    rows: int = 0
    cols: int = 0
    pixel_spacing: tuple[float, float] | None = None
    slice_thickness: float | None = None
    spacing_between_slices: float | None = None
    number_of_frames: int = 1
    patient_id: str = ""
    study_uid: str = ""


@dataclass
class SeriesInfo:
    """One series of the download (all files sharing a SeriesInstanceUID).

    Attributes:
        patient_id: PatientID.
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        modality: the header's Modality (e.g. ``"CT"``, ``"PT"``, ``"SEG"``, ``"SR"``).
        kind: classification by SOPClassUID then Modality: ``"CT"``, ``"PT"``, ``"SEG"`` or ``"other"``.
        sop_class_uid: the most common SOPClassUID of the series.
        description: SeriesDescription ('' when absent).
        frame_of_reference_uid: FrameOfReferenceUID ('' when absent).
        series_number: SeriesNumber or None.
        instances: one :class:`InstanceInfo` per file, sorted by path.
    """

    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    kind: str
    sop_class_uid: str
    description: str = ""
    frame_of_reference_uid: str = ""
    series_number: int | None = None
    instances: list[InstanceInfo] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """The series' files, sorted by path (not a slice order)."""
        return [inst.path for inst in self.instances]

    @property
    def n_files(self) -> int:
        """Number of files (instances) in the series."""
        return len(self.instances)

    @property
    def folder(self) -> Path:
        """The deepest folder holding all the series' files."""
        return Path(os.path.commonpath([str(p.parent) for p in self.files])) if self.instances else Path()

    @property
    def is_axial(self) -> bool:
        """True when the first oriented instance's slice normal is within ~37 degrees of the patient z axis."""
        for inst in self.instances:
            if inst.orientation is not None and len(inst.orientation) == 6:
                n = _normal(inst.orientation)
                return bool(abs(n[2]) > 0.8)
        return False


@dataclass(frozen=True)
class FileProblem:
    """A file that was not indexed, and why.

    Attributes:
        path: the file.
        kind: ``"not_dicom"``, ``"unreadable"``, ``"truncated"``, ``"incomplete"`` (required tag missing),
            ``"damaged"`` (a UID or the PatientID is not a valid value, or the PatientID differs from the other
            files of its study: a damaged header) or ``"duplicate"`` (SOPInstanceUID already indexed from
            another file).
        reason: readable explanation.
        series_uid: the SeriesInstanceUID when the header could be read ('' otherwise).
        position: the ImagePositionPatient when the header could be read (None otherwise): it lets a CT
            series name the file behind a missing slice.
    """

    path: Path
    kind: str
    reason: str
    series_uid: str = ""
    position: tuple[float, float, float] | None = None


@dataclass
class DicomIndex:
    """Index of a downloaded tree.

    Attributes:
        root: the folder that was walked.
        series: SeriesInstanceUID -> :class:`SeriesInfo`.
        problems: files that were skipped (non-DICOM side files such as metadata.csv included).
        sop_to_series: SOPInstanceUID -> SeriesInstanceUID.
    """

    root: Path
    series: dict[str, SeriesInfo] = field(default_factory=dict)
    problems: list[FileProblem] = field(default_factory=list)
    sop_to_series: dict[str, str] = field(default_factory=dict)

    @property
    def patients(self) -> dict[str, list[SeriesInfo]]:
        """PatientID -> its series (sorted by study UID, kind, description, series UID); patients sorted."""
        out: dict[str, list[SeriesInfo]] = defaultdict(list)
        for s in self.series.values():
            out[s.patient_id].append(s)
        return {
            p: sorted(v, key=lambda s: (s.study_uid, s.kind, s.description, s.series_uid))
            for p, v in sorted(out.items())
        }

    def series_of_instance(self, sop_instance_uid: str) -> SeriesInfo | None:
        """Return the series holding an instance, or None.

        Args:
            sop_instance_uid: a SOPInstanceUID.

        Returns:
            The :class:`SeriesInfo` or None when the instance is not in the download.
        """
        uid = self.sop_to_series.get(sop_instance_uid)
        return self.series.get(uid) if uid is not None else None

    def study_series(self, study_uid: str, kind: str | None = None) -> list[SeriesInfo]:
        """Return the series of one study, optionally only those of one kind.

        Args:
            study_uid: StudyInstanceUID.
            kind: ``"CT"``, ``"PT"``, ``"SEG"``, ``"other"`` or None for all.

        Returns:
            The matching series sorted by SeriesInstanceUID.
        """
        return sorted(
            (s for s in self.series.values() if s.study_uid == study_uid and (kind is None or s.kind == kind)),
            key=lambda s: s.series_uid,
        )


@dataclass
class CTGeometry:
    """Geometry of a CT series read from headers, slices in ascending ``dot(IPP, normal)`` order.

    Attributes:
        patient_id: PatientID.
        series_uid: SeriesInstanceUID.
        study_uid: StudyInstanceUID.
        frame_of_reference_uid: FrameOfReferenceUID ('' when absent).
        files: one file per slice, sorted (None for a slice listed in ``missing``).
        sop_instance_uids: SOPInstanceUID per slice, sorted.
        positions: ``(Z, 3)`` ImagePositionPatient per slice, sorted.
        orientation: ``(6,)`` ImageOrientationPatient (row direction, column direction).
        normal: ``(3,)`` unit slice normal ``cross(IOP[:3], IOP[3:])``.
        slice_positions: ``(Z,)`` ``dot(IPP, normal)`` per slice, ascending.
        rows: Rows.
        cols: Columns.
        pixel_spacing: (row spacing, column spacing) in mm, i.e. the Y and X spacing.
        slice_spacing: distance between adjacent slices in mm (SpacingBetweenSlices, then SliceThickness,
            then 1.0 for a single slice).
        missing: slice index -> why that slice has no usable file (an unreadable or damaged file left a hole in
            the otherwise regular grid of slices); ``files[i]`` is None and ``sop_instance_uids[i]`` '' there.
        set_aside: ``(file, reason)`` of CT files of the series left out because their header disagrees with
            the rest of the series (damaged header).
    """

    patient_id: str
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    files: list[Path | None]
    sop_instance_uids: list[str]
    positions: np.ndarray
    orientation: np.ndarray
    normal: np.ndarray
    slice_positions: np.ndarray
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    missing: dict[int, str] = field(default_factory=dict)
    set_aside: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, rows, cols)``."""
        return (len(self.files), self.rows, self.cols)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """``(slice spacing, row spacing, column spacing)`` in mm, matching :attr:`shape`."""
        return (self.slice_spacing, self.pixel_spacing[0], self.pixel_spacing[1])

    def nearest_slice(self, position: Sequence[float]) -> tuple[int, float]:
        """Return the slice closest to a patient-space point along the normal.

        Args:
            position: an (x, y, z) point in mm, e.g. a SEG frame's ImagePositionPatient.

        Returns:
            (slice index, absolute distance in mm along the normal).
        """
        z = float(np.dot(np.asarray(position, dtype=float), self.normal))
        i = int(np.argmin(np.abs(self.slice_positions - z)))
        return i, abs(float(self.slice_positions[i]) - z)


@dataclass
class SegReferences:
    """Source references found in a SEG header.

    Attributes:
        instance_uids: every ReferencedSOPInstanceUID found (any location), sorted.
        series_uids: SeriesInstanceUIDs named by ReferencedSeriesSequence, sorted.
    """

    instance_uids: list[str]
    series_uids: list[str]


# ----------------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------------


def _quiet(func: Callable[P, R]) -> Callable[P, R]:
    """Silence pydicom's warnings on invalid values while ``func`` runs: damaged values are reported per file."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return func(*args, **kwargs)

    return wrapper


def _normal(iop: Sequence[float]) -> np.ndarray:
    r = np.asarray(iop[:3], dtype=float)
    c = np.asarray(iop[3:6], dtype=float)
    n = np.cross(r, c)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


def _floats(value, n: int | None = None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        seq = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
        vals = tuple(float(v) for v in seq)
    except (TypeError, ValueError):
        return None
    if n is not None and len(vals) != n:
        return None
    return vals


def _float(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


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
    # A DICOM stream without preamble starts with a group 0002 or 0008 element (little endian).
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


@_quiet
def _read_header(path: Path) -> tuple[InstanceInfo, dict[str, str]] | FileProblem:
    """Read one file's header; return (instance, series-level fields) or a FileProblem."""
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
        # pydicom's warnings on invalid values are silenced (@_quiet): such values are checked and reported per file.
        ds = pydicom.dcmread(path, defer_size=1024, force=not has_preamble)
    except InvalidDicomError as e:
        return FileProblem(path, "not_dicom", f"not a DICOM file: {e}")
    except Exception as e:  # noqa: BLE001 - any parser failure is recorded, never raised
        return FileProblem(path, "unreadable", f"cannot parse DICOM header ({type(e).__name__}: {e})")
    try:
        return _instance_of(path, ds, size, has_preamble)
    except Exception as e:  # noqa: BLE001 - malformed values: record, never raise
        return FileProblem(path, "unreadable", f"malformed DICOM header ({type(e).__name__}: {e})")


def _instance_of(
    path: Path, ds: Dataset, size: int, has_preamble: bool
) -> tuple[InstanceInfo, dict[str, str]] | FileProblem:
    """The :class:`InstanceInfo` and series fields of a parsed header, or the FileProblem that makes it unusable."""
    sop_uid = _str(ds, "SOPInstanceUID")
    series_uid = _str(ds, "SeriesInstanceUID")
    missing = [k for k, v in (("SOPInstanceUID", sop_uid), ("SeriesInstanceUID", series_uid)) if not v]
    if missing:
        why = "truncated or incomplete DICOM header" if has_preamble else "not a DICOM file"
        kind = "incomplete" if has_preamble else "not_dicom"
        return FileProblem(path, kind, f"{why}: missing {', '.join(missing)}")
    sop_class = _str(ds, "SOPClassUID")
    modality = _str(ds, "Modality")
    kind = classify_instance(sop_class, modality)
    position = _floats(ds.get("ImagePositionPatient"), 3)
    damage = [
        why
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "SOPClassUID", "PatientID")
        if (why := _damaged_value(ds, keyword, _str(ds, keyword)))
    ]
    if damage:
        # the series UID is kept only when it is itself valid: it then tells which series lost this file
        known = "" if _damaged_value(ds, "SeriesInstanceUID", series_uid) else series_uid
        return FileProblem(
            path, "damaged", f"damaged DICOM header: {'; '.join(damage)}", known, position  # type: ignore[arg-type]
        )
    rows = _int(ds.get("Rows")) or 0
    cols = _int(ds.get("Columns")) or 0
    if kind in ("CT", "PT", "SEG"):
        raw = ds.get_item(_PIXEL_DATA_TAG, keep_deferred=True)  # value not read, offset and length known
        if raw is None:
            return FileProblem(
                path, "truncated", "image file without pixel data (truncated?)", series_uid, position  # type: ignore[arg-type]
            )
        length = getattr(raw, "length", None)
        tell = getattr(raw, "value_tell", None)
        if length is not None and tell is not None and length != _UNDEFINED_LENGTH and tell + length > size:
            return FileProblem(
                path,
                "truncated",
                f"file truncated: pixel data needs {tell + length} bytes, file has {size}",
                series_uid,
                position,  # type: ignore[arg-type]
            )
    spacing = _floats(ds.get("PixelSpacing"), 2)
    inst = InstanceInfo(
        path=path,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        kind=kind,
        instance_number=_int(ds.get("InstanceNumber")),
        position=position,  # type: ignore[arg-type]
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        rows=rows,
        cols=cols,
        pixel_spacing=spacing,  # type: ignore[arg-type]
        slice_thickness=_float(ds.get("SliceThickness")),
        spacing_between_slices=_float(ds.get("SpacingBetweenSlices")),
        number_of_frames=_int(ds.get("NumberOfFrames")) or 1,
        patient_id=_str(ds, "PatientID"),
        study_uid=_str(ds, "StudyInstanceUID"),
    )
    series_fields = {
        "patient_id": inst.patient_id,
        "study_uid": inst.study_uid,
        "series_uid": series_uid,
        "modality": modality,
        "description": _str(ds, "SeriesDescription"),
        "frame_of_reference_uid": _str(ds, "FrameOfReferenceUID"),
        "series_number": _str(ds, "SeriesNumber"),
    }
    return inst, series_fields


# ----------------------------------------------------------------------------------------------------------------------
# Index
# ----------------------------------------------------------------------------------------------------------------------


def index_dicom_tree(root: str | Path) -> DicomIndex:
    """Walk a download and index every DICOM file by header (pixels are not read).

    Folder and file names are never interpreted (both NBIA layouts work); ``metadata.csv``, LICENSE and
    other non-DICOM files end up in :attr:`DicomIndex.problems` with kind ``"not_dicom"``. Truncated,
    unreadable, damaged (an invalid UID or PatientID, or a PatientID that differs from the one of the other files
    of its study) and duplicate files are recorded there too, by path; nothing raises.

    Args:
        root: folder to walk (recursively, following no symlinked folders).

    Returns:
        The :class:`DicomIndex`.
    """
    root = Path(root)
    index = DicomIndex(root=root)
    if not root.is_dir():
        index.problems.append(FileProblem(root, "unreadable", "not a folder"))
        return index
    paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        paths.extend(Path(dirpath) / name for name in sorted(filenames))
    read: list[tuple[InstanceInfo, dict[str, str]]] = []
    seen: dict[str, Path] = {}
    for path in paths:
        result = _read_header(path)
        if isinstance(result, FileProblem):
            index.problems.append(result)
            continue
        inst = result[0]
        if inst.sop_instance_uid in seen:
            index.problems.append(
                FileProblem(
                    path,
                    "duplicate",
                    f"SOPInstanceUID {inst.sop_instance_uid} already read from {seen[inst.sop_instance_uid]}",
                )
            )
            continue
        seen[inst.sop_instance_uid] = path
        read.append(result)
    # One patient per study: a file whose PatientID differs from that of most files of its study has a
    # damaged header (a flipped byte in the value or in the tag); it is set aside, reported by its path.
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for inst, _ in read:
        votes[inst.study_uid][inst.patient_id] += 1
    fields_of: dict[str, dict[str, str]] = {}
    members: dict[str, list[InstanceInfo]] = defaultdict(list)
    for inst, fields in read:
        (majority, n_major), *rest = votes[inst.study_uid].most_common()
        if inst.patient_id != majority and n_major > 1 and (not rest or n_major > rest[0][1]):
            index.problems.append(
                FileProblem(
                    inst.path,
                    "damaged",
                    f"damaged DICOM header: PatientID {inst.patient_id!r} differs from the {majority!r} of the other "
                    f"{n_major} files of its study",
                    fields["series_uid"],
                    inst.position,
                )
            )
            continue
        uid = fields["series_uid"]
        fields_of.setdefault(uid, fields)
        members[uid].append(inst)
    for uid, insts in members.items():
        f = fields_of[uid]
        kind = Counter(i.kind for i in insts).most_common(1)[0][0]
        sop_class = Counter(i.sop_class_uid for i in insts).most_common(1)[0][0]
        index.series[uid] = SeriesInfo(
            patient_id=f["patient_id"],
            study_uid=f["study_uid"],
            series_uid=uid,
            modality=f["modality"],
            kind=kind,
            sop_class_uid=sop_class,
            description=f["description"],
            frame_of_reference_uid=f["frame_of_reference_uid"],
            series_number=_int(f["series_number"]),
            instances=sorted(insts, key=lambda i: str(i.path)),
        )
        for inst in insts:
            index.sop_to_series[inst.sop_instance_uid] = uid
    return index


def find_patient_segs(index: DicomIndex, patient: str) -> list[SeriesInfo]:
    """Return a patient's SEG series (found by SOP class, not by description).

    Args:
        index: the download index.
        patient: PatientID.

    Returns:
        The SEG series, sorted by SeriesInstanceUID (empty when the patient has none).
    """
    return sorted(
        (s for s in index.series.values() if s.patient_id == patient and s.kind == "SEG"), key=lambda s: s.series_uid
    )


# ----------------------------------------------------------------------------------------------------------------------
# SEG -> CT
# ----------------------------------------------------------------------------------------------------------------------


def _ref_uids_in(items: Iterable[Dataset] | None, out: set[str]) -> None:
    """Collect ReferencedSOPInstanceUIDs from Derivation/Source/ReferencedImage sequence items."""
    for item in items or []:
        for keyword in ("SourceImageSequence", "ReferencedImageSequence"):
            for ref in item.get(keyword) or []:
                uid = _str(ref, "ReferencedSOPInstanceUID")
                if uid:
                    out.add(uid)
        uid = _str(item, "ReferencedSOPInstanceUID")
        if uid:
            out.add(uid)


def seg_references(ds: Dataset) -> SegReferences:
    """Collect a SEG's source references from every location producers use.

    Looked at: ReferencedSeriesSequence (series UIDs and their ReferencedInstanceSequence), top-level
    SourceImageSequence and ReferencedImageSequence, Shared and per-frame functional groups'
    DerivationImageSequence > SourceImageSequence and ReferencedImageSequence.

    Args:
        ds: the SEG dataset (pixel data not needed).

    Returns:
        The :class:`SegReferences`.
    """
    instances: set[str] = set()
    series: set[str] = set()
    for item in ds.get("ReferencedSeriesSequence") or []:
        uid = _str(item, "SeriesInstanceUID")
        if uid:
            series.add(uid)
        for ref in item.get("ReferencedInstanceSequence") or []:
            uid = _str(ref, "ReferencedSOPInstanceUID")
            if uid:
                instances.add(uid)
    _ref_uids_in([ds], instances)
    groups = list(ds.get("SharedFunctionalGroupsSequence") or []) + list(
        ds.get("PerFrameFunctionalGroupsSequence") or []
    )
    for group in groups:
        _ref_uids_in(group.get("DerivationImageSequence"), instances)
        _ref_uids_in(group.get("ReferencedImageSequence"), instances)
    return SegReferences(sorted(instances), sorted(series))


@_quiet
def seg_frame_positions(path: str | Path) -> list[tuple[float, float, float]]:
    """The ImagePositionPatient of every frame of a SEG file, read from its header ([] when unreadable).

    Args:
        path: a DICOM SEG file.

    Returns:
        One (x, y, z) per frame that has a position.
    """
    try:
        return _seg_frame_positions(pydicom.dcmread(path, stop_before_pixels=True, force=True))
    except Exception:  # noqa: BLE001 - the SEG is read again (and its problem reported) by read_seg_mask
        return []


def _seg_frame_positions(ds: Dataset) -> list[tuple[float, float, float]]:
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    out = []
    for item in ds.get("PerFrameFunctionalGroupsSequence") or []:
        pos = _frame_position(item, shared)
        if pos is not None:
            out.append(pos)
    return out


def _frame_position(item: Dataset | None, shared: Dataset | None) -> tuple[float, float, float] | None:
    for group in (item, shared):
        if group is not None and group.get("PlanePositionSequence"):
            pos = _floats(group.PlanePositionSequence[0].get("ImagePositionPatient"), 3)
            if pos is not None:
                return pos  # type: ignore[return-value]
    return None


def _series_list(uids: Iterable[str]) -> str:
    return ", ".join(sorted(uids))


@_quiet
def resolve_referenced_ct(index: DicomIndex, seg: SeriesInfo) -> SeriesInfo:
    """Find the CT series a SEG was drawn on.

    Order: (1) CT series holding the SEG's referenced SOP instances (every location, see
    :func:`seg_references`), (2) CT series named by ReferencedSeriesSequence, (3) fallback within the
    SEG's study: the only CT series; else the only multi-slice axial CT series; else the only one sharing
    the SEG's FrameOfReferenceUID; else the only one whose slice positions contain every SEG frame
    position.

    Args:
        index: the download index.
        seg: a SEG series of that index.

    Returns:
        The CT :class:`SeriesInfo`.

    Raises:
        PatientDataError: no unique CT series can be determined; the reason says why.
    """
    patient = seg.patient_id
    seg_path = seg.files[0] if seg.files else seg.folder
    if seg.n_files != 1:
        logger.warning("%s: SEG series %s has %d files; using the first", patient, seg.series_uid, seg.n_files)
    try:
        ds = pydicom.dcmread(seg_path, stop_before_pixels=True, force=True)
        refs = seg_references(ds)
    except Exception as e:  # noqa: BLE001
        raise PatientDataError(patient, f"cannot read SEG header ({type(e).__name__}: {e})", seg_path) from e

    # (1) referenced instances
    ct_hits: Counter[str] = Counter()
    for uid in refs.instance_uids:
        s = index.series_of_instance(uid)
        if s is not None and s.kind == "CT":
            ct_hits[s.series_uid] += 1
    if len(ct_hits) == 1:
        return index.series[next(iter(ct_hits))]
    if len(ct_hits) > 1:
        raise PatientDataError(
            patient, f"SEG references instances of {len(ct_hits)} CT series: {_series_list(ct_hits)}", seg_path
        )
    # (2) referenced series
    named_ct = [u for u in refs.series_uids if u in index.series and index.series[u].kind == "CT"]
    if len(named_ct) == 1:
        return index.series[named_ct[0]]
    if len(named_ct) > 1:
        raise PatientDataError(patient, f"SEG references {len(named_ct)} CT series: {_series_list(named_ct)}", seg_path)
    missing_series = [u for u in refs.series_uids if u not in index.series]
    if missing_series:
        why = f"SEG references CT series {_series_list(missing_series)} which is not in the download"
    elif refs.instance_uids:
        why = f"none of the {len(refs.instance_uids)} CT instances the SEG references is in the download"
    else:
        why = "SEG holds no source references"

    # (3) fallbacks within the study
    study_cts = index.study_series(seg.study_uid, "CT")
    if len(study_cts) == 1:
        logger.warning("%s: %s; using the only CT series of the SEG's study", patient, why)
        return study_cts[0]
    if not study_cts:
        raise PatientDataError(patient, f"{why}, and the SEG's study holds no CT series", seg_path)
    volumes = [s for s in study_cts if s.n_files > 1 and s.is_axial]
    if len(volumes) == 1:
        logger.warning("%s: %s; using the only axial multi-slice CT series of the SEG's study", patient, why)
        return volumes[0]
    candidates = volumes or study_cts
    seg_for = _str(ds, "FrameOfReferenceUID")
    same_for = [s for s in candidates if seg_for and s.frame_of_reference_uid == seg_for]
    if len(same_for) == 1:
        logger.warning("%s: %s; using the only CT series sharing the SEG's FrameOfReferenceUID", patient, why)
        return same_for[0]
    frame_pos = _seg_frame_positions(ds)
    if frame_pos:
        by_ipp = [s for s in candidates if _positions_contain(s, frame_pos)]
        if len(by_ipp) == 1:
            logger.warning("%s: %s; using the only CT series whose slice positions hold every SEG frame", patient, why)
            return by_ipp[0]
    raise PatientDataError(
        patient,
        f"{why}; the SEG's study holds {len(study_cts)} CT series and the SEG references none of them "
        f"({_series_list(s.series_uid for s in study_cts)})",
        seg_path,
    )


def _positions_contain(series: SeriesInfo, positions: list[tuple[float, float, float]], tol: float = 0.1) -> bool:
    have = np.array([i.position for i in series.instances if i.position is not None], dtype=float)
    if have.size == 0:
        return False
    for p in positions:
        if np.min(np.max(np.abs(have - np.asarray(p)), axis=1)) > tol:
            return False
    return True


# ----------------------------------------------------------------------------------------------------------------------
# CT
# ----------------------------------------------------------------------------------------------------------------------


def _set_aside(insts: list[InstanceInfo]) -> tuple[list[InstanceInfo], list[tuple[InstanceInfo, str]]]:
    """Split CT instances into those agreeing with the series and those whose header disagrees with it.

    An instance is set aside when it lacks IPP, IOP, pixel spacing or rows/cols, is multi-frame, or when its
    orientation, size or pixel spacing differs from that of most instances.
    """
    bad: list[tuple[InstanceInfo, str]] = []
    complete = []
    for inst in insts:
        missing = [
            name
            for name, v in (
                ("ImagePositionPatient", inst.position),
                ("ImageOrientationPatient", inst.orientation),
                ("PixelSpacing", inst.pixel_spacing),
            )
            if v is None
        ]
        if not inst.rows or not inst.cols:
            missing.append("Rows/Columns")
        if inst.number_of_frames != 1:
            bad.append((inst, "multi-frame (enhanced) CT is not supported"))
        elif missing:
            bad.append((inst, f"CT slice lacks {', '.join(missing)}"))
        else:
            complete.append(inst)
    if not complete:
        return [], bad

    def key(inst: InstanceInfo) -> tuple:
        return (
            tuple(np.round(inst.orientation, 4)),  # type: ignore[arg-type]
            (inst.rows, inst.cols),
            tuple(np.round(inst.pixel_spacing, 4)),  # type: ignore[arg-type]
        )

    ref = Counter(key(i) for i in complete).most_common(1)[0][0]
    good = []
    for inst in complete:
        k = key(inst)
        if k == ref:
            good.append(inst)
        elif k[0] != ref[0]:
            bad.append((inst, f"CT slices have different orientations ({list(ref[0])} vs {list(inst.orientation)})"))  # type: ignore[arg-type]
        elif k[1] != ref[1]:
            bad.append((inst, f"CT slices have different sizes ({ref[1][0]}x{ref[1][1]} vs {inst.rows}x{inst.cols})"))
        else:
            bad.append((inst, f"CT slices have different pixel spacings ({ref[2]} vs {inst.pixel_spacing})"))
    return good, bad


def read_ct_geometry(
    series: SeriesInfo,
    spacing_rtol: float = 0.01,
    spacing_atol: float = 0.01,
    unusable: Sequence[FileProblem] = (),
    cover: Sequence[Sequence[float]] | np.ndarray = (),
) -> CTGeometry:
    """Build a CT series' geometry from the indexed headers (no pixel data is read).

    Slices are sorted by ascending ``dot(IPP, normal)``. Checked: every slice is a single-frame CT image
    with IPP, IOP, rows/cols and pixel spacing; orientation, rows, cols and pixel spacing are the same on all
    slices; no two slices share a position; the spacing between adjacent slices is uniform within
    ``spacing_atol + spacing_rtol * median``.

    A damaged download is tolerated where the damage can be accounted for: a file whose header disagrees with
    the rest of the series is set aside (:attr:`CTGeometry.set_aside`), and a gap of a whole number of slices is
    accepted as missing slices (:attr:`CTGeometry.missing`) when there are at least as many set-aside or
    ``unusable`` files as missing slices (likewise slices lost at either end, when ``cover`` reaches them). A gap
    that no unusable file explains (a file absent from the download) still fails the spacing check.

    Args:
        series: a CT series from :func:`index_dicom_tree`.
        spacing_rtol: relative tolerance on slice-spacing uniformity.
        spacing_atol: absolute tolerance in mm on slice-spacing uniformity.
        unusable: files of the download that could belong to this series but were not indexed (unreadable,
            truncated, damaged; e.g. the :attr:`DicomIndex.problems` in the series' folder).
        cover: patient-space points the volume must reach (the SEG frames' positions, see
            :func:`seg_frame_positions`): with unusable files to account for them, slices lost at either end are
            added as missing slices.

    Returns:
        The :class:`CTGeometry`.

    Raises:
        PatientDataError: the series is not a usable CT volume; the reason says why.
    """
    patient = series.patient_id
    where = series.folder
    insts = [i for i in series.instances if i.kind == "CT"]
    if not insts:
        raise PatientDataError(patient, f"series {series.series_uid} holds no CT image", where)
    good, bad = _set_aside(insts)

    def fail(reason: str, path: Path) -> PatientDataError:
        if bad:
            reason += "; set aside: " + ", ".join(f"{i.path.name} ({why})" for i, why in bad)
        return PatientDataError(patient, reason, path)

    if not good:
        raise fail(bad[0][1], bad[0][0].path)
    ref = good[0]
    iop = np.asarray(ref.orientation, dtype=float)
    normal = _normal(iop)
    if np.linalg.norm(normal) == 0:
        raise PatientDataError(patient, f"degenerate ImageOrientationPatient {list(iop)}", ref.path)
    pos = np.array([i.position for i in good], dtype=float)
    z = pos @ normal
    order = np.argsort(z, kind="stable")
    z = z[order]
    pos = pos[order]
    sorted_insts: list[InstanceInfo | None] = [good[k] for k in order]
    missing: dict[int, str] = {}
    if len(z) > 1:
        d = np.diff(z)
        if np.min(d) < 1e-3:
            k = int(np.argmin(d))
            raise fail(
                f"two CT slices at the same position {z[k]:.3f} mm (several acquisitions in one series?): "
                f"{sorted_insts[k].path.name}, {sorted_insts[k + 1].path.name}",  # type: ignore[union-attr]
                where,
            )
        step = float(np.median(d))
        steps = np.maximum(np.round(d / step), 1)
        bad_gap = np.abs(d - steps * step) > spacing_atol + spacing_rtol * step * steps
        n_missing = int(steps.sum() - len(d))
        budget = len(bad) + len(unusable)
        if np.any(bad_gap) or n_missing > budget:
            k = int(np.argmax(bad_gap | (steps > 1)))
            explained = f", {budget} unusable file(s) in the series" if n_missing else ""
            raise fail(
                f"non-uniform CT slice spacing: {d[k]:.3f} mm between slices {k} and {k + 1} "
                f"(median {step:.3f} mm; missing slices?{explained})",
                where,
            )
    else:
        step = ref.spacing_between_slices or ref.slice_thickness or 1.0
        steps = np.zeros(0)
        n_missing, budget = 0, len(bad) + len(unusable)
    # Lost slices at either end are invisible in the spacing; the SEG frames (``cover``) reveal them.
    before = after = 0
    if len(cover) and budget > n_missing:
        zc = np.asarray(cover, dtype=float).reshape(-1, 3) @ normal
        k_lo, k_hi = (z[0] - zc.min()) / step, (zc.max() - z[-1]) / step
        before = int(round(k_lo)) if k_lo > 0.5 and abs(k_lo - round(k_lo)) < 0.25 else 0
        after = int(round(k_hi)) if k_hi > 0.5 and abs(k_hi - round(k_hi)) < 0.25 else 0
        if n_missing + before + after > budget:
            before = after = 0
    if n_missing or before or after:
        sorted_insts, pos, z, missing = _fill_gaps(
            sorted_insts, pos, steps, (pos[-1] - pos[0]) / steps.sum() if len(steps) else normal * step, before, after,
            normal, bad, unusable,
        )  # fmt: skip
    return CTGeometry(
        patient_id=patient,
        series_uid=series.series_uid,
        study_uid=series.study_uid,
        frame_of_reference_uid=series.frame_of_reference_uid,
        files=[None if i is None else i.path for i in sorted_insts],
        sop_instance_uids=["" if i is None else i.sop_instance_uid for i in sorted_insts],
        positions=pos,
        orientation=iop,
        normal=normal,
        slice_positions=z,
        rows=ref.rows,
        cols=ref.cols,
        pixel_spacing=(float(ref.pixel_spacing[0]), float(ref.pixel_spacing[1])),  # type: ignore[index]
        slice_spacing=float(step),
        missing=missing,
        set_aside=[(i.path, why) for i, why in bad],
    )


def _fill_gaps(
    insts: list[InstanceInfo | None],
    pos: np.ndarray,
    steps: np.ndarray,
    delta: np.ndarray,
    before: int,
    after: int,
    normal: np.ndarray,
    bad: list[tuple[InstanceInfo, str]],
    unusable: Sequence[FileProblem],
) -> tuple[list[InstanceInfo | None], np.ndarray, np.ndarray, dict[int, str]]:
    """Insert the lost slices: inside whole-slice gaps (positions interpolated) and ``before``/``after`` the ends
    (positions extrapolated by ``delta``, one slice step along the normal); say which file each one lost."""
    known = [(i.position, f"{i.path.name} set aside: {why}") for i, why in bad if i.position is not None]
    known += [(p.position, f"{p.path.name} unusable: {p.reason}") for p in unusable if p.position is not None]
    others = [f"{i.path.name}" for i, _ in bad if i.position is None] + [
        f"{p.path.name} ({p.reason})" for p in unusable if p.position is None
    ]
    tol = 0.25 * float(np.linalg.norm(delta))
    slots: list[tuple[InstanceInfo | None, np.ndarray]] = [(None, pos[0] - delta * j) for j in range(before, 0, -1)]
    slots.append((insts[0], pos[0]))
    for k in range(1, len(insts)):
        m = int(steps[k - 1])
        slots += [(None, pos[k - 1] + (pos[k] - pos[k - 1]) * j / m) for j in range(1, m)]
        slots.append((insts[k], pos[k]))
    slots += [(None, pos[-1] + delta * j) for j in range(1, after + 1)]
    missing: dict[int, str] = {}
    for i, (inst, p) in enumerate(slots):
        if inst is None:
            hit = [why for q, why in known if np.max(np.abs(np.asarray(q) - p)) < tol]
            missing[i] = hit[0] if hit else "no readable file at this position; unusable files in the series: " + (
                ", ".join(others) or "none with a known position"
            )
    new_pos = np.asarray([p for _, p in slots])
    return [inst for inst, _ in slots], new_pos, new_pos @ normal, missing


def _dcmread_full(path: Path) -> Dataset:
    """Read a whole file; for a file without File Meta, set the transfer syntax it was read with."""
    ds = pydicom.dcmread(path, force=True)  # indexed files are DICOM, with or without preamble
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        implicit, little = ds.original_encoding
        if implicit is not None:
            if not hasattr(ds, "file_meta"):
                ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            )
    return ds


def _padding_mask(ds: Dataset, raw: np.ndarray) -> np.ndarray | None:
    pad = _int(ds.get("PixelPaddingValue"))
    if pad is None:
        return None
    limit = _int(ds.get("PixelPaddingRangeLimit"))
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


@_quiet
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
            ds = _dcmread_full(path)
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
        slope = _float(ds.get("RescaleSlope"))
        intercept = _float(ds.get("RescaleIntercept"))
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


# ----------------------------------------------------------------------------------------------------------------------
# SEG
# ----------------------------------------------------------------------------------------------------------------------


def decode_seg_frames(ds: Dataset, patient: str = "", path: str | Path | None = None) -> np.ndarray:
    """Decode a SEG's frames to a binary ``(frames, rows, cols)`` uint8 array.

    The frame count is ``len(PerFrameFunctionalGroupsSequence)`` (NumberOfFrames when absent), see the module
    notes for a pixel data shorter than that. BINARY native data is unpacked here (bits packed across frames,
    LSB first), so a wrong NumberOfFrames does not matter. FRACTIONAL frames are thresholded at half of
    MaximumFractionalValue. Encapsulated data is decoded by pydicom after fixing NumberOfFrames in memory.

    Args:
        ds: the SEG dataset, pixel data included.
        patient: PatientID for errors.
        path: file for errors.

    Returns:
        uint8 array of 0/1, one frame per per-frame functional group item actually present.

    Raises:
        PatientDataError: no pixel data, an unsupported encoding or a truncated pixel data.
    """
    patient = patient or _str(ds, "PatientID")
    if "PixelData" not in ds:
        raise PatientDataError(patient, "SEG has no pixel data", path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    declared = _int(ds.get("NumberOfFrames"))
    declared = 1 if declared is None else declared
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    n = len(per_frame) if per_frame is not None else declared
    if n == 0:
        return np.zeros((0, rows, cols), dtype=np.uint8)
    seg_type = _str(ds, "SegmentationType").upper() or "BINARY"
    bits = int(ds.get("BitsAllocated", 1))
    file_meta = getattr(ds, "file_meta", None)
    syntax = str(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else ""
    data = ds.PixelData
    if syntax in _NATIVE_SYNTAXES or not syntax:
        frame_px = rows * cols
        if bits == 1:
            available = len(data) * 8 // frame_px
        elif bits == 8:
            available = len(data) // frame_px
        else:
            raise PatientDataError(patient, f"unsupported SEG BitsAllocated {bits}", path)
        if available < n:
            if available >= min(declared, n) and available > 0:
                logger.warning(
                    "%s: SEG has %d per-frame items but pixel data for %d frame(s) (NumberOfFrames %s); "
                    "using the frames present",
                    patient,
                    n,
                    available,
                    ds.get("NumberOfFrames"),
                )
                n = available
            else:
                raise PatientDataError(
                    patient, f"SEG pixel data holds {available} frames but {n} are described (truncated file?)", path
                )
        if bits == 1:
            flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: n * frame_px]
            frames = flat.reshape(n, rows, cols)
        else:
            frames = np.frombuffer(data, dtype=np.uint8)[: n * frame_px].reshape(n, rows, cols)
    else:
        try:
            ds.NumberOfFrames = n
            frames = np.asarray(ds.pixel_array).reshape(n, rows, cols)
        except Exception as e:  # noqa: BLE001
            raise PatientDataError(patient, f"cannot decode SEG pixel data ({type(e).__name__}: {e})", path) from e
    if seg_type == "FRACTIONAL":
        max_value = _float(ds.get("MaximumFractionalValue")) or 255.0
        return (frames.astype(np.float32) >= max_value / 2.0).astype(np.uint8)
    return (frames != 0).astype(np.uint8)


def _segment_number(item: Dataset | None, shared: Dataset | None) -> int:
    for group in (item, shared):
        if group is not None and group.get("SegmentIdentificationSequence"):
            num = _int(group.SegmentIdentificationSequence[0].get("ReferencedSegmentNumber"))
            if num is not None:
                return num
    return 1


def _frame_source_uid(item: Dataset | None) -> str | None:
    if item is None:
        return None
    found: set[str] = set()
    _ref_uids_in(item.get("DerivationImageSequence"), found)
    return next(iter(found)) if len(found) == 1 else None


def _group_attr(ds: Dataset, shared: Dataset | None, first: Dataset | None, seq: str, keyword: str):
    for group in (shared, first):
        if group is not None and group.get(seq):
            value = group.get(seq)[0].get(keyword)
            if value is not None:
                return value
    return ds.get(keyword)


@_quiet
def read_seg_mask(
    seg_path: str | Path, geometry: CTGeometry, segments: Iterable[int] | None = None, pos_tol: float | None = None
) -> np.ndarray:
    """Read a DICOM SEG as a binary mask aligned with the sorted CT.

    Each frame is placed by geometry: its ImagePositionPatient (per-frame PlanePositionSequence, else shared)
    projected on the CT normal is matched to the CT slice within half a slice spacing; a frame without any
    position is placed by its per-frame source SOPInstanceUID. Frame order, sparse frames and InstanceNumber
    order therefore do not matter. The segment number is per-frame, else shared, else 1; all segments are
    OR-ed unless ``segments`` is given.

    Args:
        seg_path: the SEG file.
        geometry: the referenced CT's geometry (:func:`read_ct_geometry`).
        segments: segment numbers to keep; None keeps all.
        pos_tol: maximal distance along the normal in mm; default half the slice spacing.

    Returns:
        uint8 array ``(Z, rows, cols)`` of 0/1.

    Raises:
        PatientDataError: unreadable SEG, rows/cols/pixel-spacing/orientation mismatch, frame matching no CT
            slice or lying off the CT grid in-plane, or no foreground pixel ("SEG has no foreground pixels").
    """
    seg_path = Path(seg_path)
    patient = geometry.patient_id
    try:
        ds = _dcmread_full(seg_path)
    except Exception as e:  # noqa: BLE001
        raise PatientDataError(patient, f"cannot read SEG ({type(e).__name__}: {e})", seg_path) from e
    if _str(ds, "SOPClassUID") != SEG_SOP_CLASS and _str(ds, "Modality") != "SEG":
        raise PatientDataError(patient, "file is not a DICOM SEG", seg_path)
    rows, cols = _int(ds.get("Rows")), _int(ds.get("Columns"))
    if (rows, cols) != (geometry.rows, geometry.cols):
        raise PatientDataError(
            patient, f"SEG frames are {rows}x{cols} but the CT slices are {geometry.rows}x{geometry.cols}", seg_path
        )
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    first = per_frame[0] if per_frame else None
    spacing = _floats(_group_attr(ds, shared, first, "PixelMeasuresSequence", "PixelSpacing"), 2)
    if spacing is not None and not np.allclose(spacing, geometry.pixel_spacing, rtol=1e-3, atol=1e-4):
        raise PatientDataError(
            patient, f"SEG pixel spacing {list(spacing)} differs from the CT's {list(geometry.pixel_spacing)}", seg_path
        )
    iop = _floats(_group_attr(ds, shared, first, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    if iop is not None and not np.allclose(iop, geometry.orientation, atol=1e-3):
        raise PatientDataError(
            patient, f"SEG orientation {list(iop)} differs from the CT's {list(geometry.orientation)}", seg_path
        )
    frames = decode_seg_frames(ds, patient, seg_path)
    keep = None if segments is None else {int(s) for s in segments}
    tol = 0.5 * geometry.slice_spacing if pos_tol is None else pos_tol
    row_dir, col_dir = geometry.orientation[:3], geometry.orientation[3:]
    uid_to_slice = {u: k for k, u in enumerate(geometry.sop_instance_uids)}
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    for f in range(frames.shape[0]):
        item = per_frame[f] if f < len(per_frame) else None
        if keep is not None and _segment_number(item, shared) not in keep:
            continue
        pos = _frame_position(item, shared)
        if pos is None:
            src = _frame_source_uid(item)
            if src is None or src not in uid_to_slice:
                raise PatientDataError(
                    patient, f"SEG frame {f + 1} has neither a position nor a known source slice", seg_path
                )
            z = uid_to_slice[src]
        else:
            z, dist = geometry.nearest_slice(pos)
            if dist > tol:
                raise PatientDataError(
                    patient,
                    f"SEG frame {f + 1} at {float(np.dot(pos, geometry.normal)):.3f} mm along the slice normal matches "
                    f"no CT slice (nearest is {dist:.3f} mm away, tolerance {tol:.3f} mm)",
                    seg_path,
                )
            offset = np.asarray(pos) - geometry.positions[z]
            dx, dy = float(np.dot(offset, row_dir)), float(np.dot(offset, col_dir))
            if abs(dx) > 0.5 * geometry.pixel_spacing[1] or abs(dy) > 0.5 * geometry.pixel_spacing[0]:
                raise PatientDataError(
                    patient,
                    f"SEG frame {f + 1} is shifted in-plane by ({dy:.2f}, {dx:.2f}) mm (row, col) from CT slice {z}",
                    seg_path,
                )
        mask[z] |= frames[f]
    if not mask.any():
        raise PatientDataError(patient, "SEG has no foreground pixels", seg_path)
    return mask
