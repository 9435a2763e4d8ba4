"""What a prepare run reports: one :class:`PatientRecord` per patient and the run's :class:`PrepareResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PatientRecord", "PrepareResult"]


@dataclass
class PatientRecord:
    """What happened to one patient.

    Args:
        patient: PatientID.
        status: ``"included"`` or ``"excluded"``.
        reason: why a patient was excluded ('' when included).
        split: ``"training"`` / ``"validation"`` for included patients.
        details: facts about the sample (CT series, slice, crop, nodule area, ...).
    """

    patient: str
    status: str
    reason: str = ""
    split: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrepareResult:
    """Summary of a prepare run.

    Args:
        output_dir: the prepared dataset folder.
        datalist: path of ``datalist.json``.
        report: path of ``report.json`` (``report.txt`` beside it).
        patients: one record per patient seen in the imaging or the RNA table.
        skipped_files: ``(path, reason)`` of files that were not usable DICOM.
        prepared: patients whose images were (re)computed in this run.
        reused: patients whose images were up to date.
        no_op: True when nothing had changed and nothing was written.
        seconds: wall time.
    """

    output_dir: Path
    datalist: Path
    report: Path
    patients: list[PatientRecord]
    skipped_files: list[tuple[str, str]]
    prepared: list[str]
    reused: list[str]
    no_op: bool
    seconds: float

    @property
    def included(self) -> list[str]:
        """IDs of the included patients."""
        return [r.patient for r in self.patients if r.status == "included"]

    @property
    def excluded(self) -> dict[str, str]:
        """Excluded patient ID -> reason."""
        return {r.patient: r.reason for r in self.patients if r.status == "excluded"}
