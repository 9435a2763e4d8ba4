"""The index of a download: one record per file, per series and per unusable file, and the index holding them."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rggan.data.dicom.values import slice_normal

__all__ = ["InstanceInfo", "SeriesInfo", "FileProblem", "DicomIndex"]


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
                n = slice_normal(inst.orientation)
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
