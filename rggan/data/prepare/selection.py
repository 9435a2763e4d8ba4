"""Which patients the prepare step computes, reuses or excludes (and why), and which unusable files are theirs.

A patient needs a CT series, exactly one DICOM SEG and one RNA-seq column; every other patient is excluded with
a reason for the report.
"""

from __future__ import annotations

from pathlib import Path

from rggan.data import dicom
from rggan.data.prepare.config import PrepareConfig
from rggan.data.prepare.extract import PatientJob
from rggan.data.prepare.manifest import files_signature, read_json, sha
from rggan.data.prepare.result import PatientRecord
from rggan.data.prepare.samples import SAMPLE_FILES
from rggan.data.rna import RNATable
from rggan.errors import PatientDataError

__all__ = ["attribute_problems", "describe_problem", "plan_jobs", "split_reused", "note_unusable_files"]


def attribute_problems(index: dicom.DicomIndex) -> dict[str, list[dicom.FileProblem]]:
    """Patient -> the unusable files of that patient (those whose patient can be told).

    A file whose header named its series belongs to that series' patient; any other file belongs to the patient
    of the nearest enclosing folder that holds the series of exactly one patient (its series or study folder in
    both NBIA layouts). Files above the patient folders (``metadata.csv``, the collection's LICENSE) belong to
    nobody; they stay in the report's list of skipped files.

    Args:
        index: the download index.

    Returns:
        PatientID -> its unusable files, in index order.
    """
    owners: dict[Path, set[str]] = {}
    for series in index.series.values():
        folder = series.folder
        for parent in (folder, *folder.parents):
            owners.setdefault(parent, set()).add(series.patient_id)
            if parent == index.root:
                break
    out: dict[str, list[dicom.FileProblem]] = {}
    for problem in index.problems:
        patient = None
        if problem.series_uid in index.series:
            patient = index.series[problem.series_uid].patient_id
        else:
            for parent in problem.path.parents:
                found = owners.get(parent)
                if found is not None or parent == index.root:
                    patient = next(iter(found)) if found is not None and len(found) == 1 else None
                    break
        if patient is not None:
            out.setdefault(patient, []).append(problem)
    return out


def describe_problem(problem: dicom.FileProblem, root: Path) -> str:
    """``relative/path (kind: reason)`` of an unusable file, for the report.

    Args:
        problem: the unusable file.
        root: the input folder the path is shown relative to.

    Returns:
        The description.
    """
    try:
        where = problem.path.relative_to(root)
    except ValueError:
        where = problem.path
    return f"{where} ({problem.kind}: {problem.reason})"


def _exclusion_reason(
    patient: str,
    segs: list[dicom.SeriesInfo],
    imaging: set[str],
    rna_patients: set[str],
    duplicate_rna: set[str],
    rna_file: Path,
) -> str:
    """Why a patient cannot be prepared, from the download and the RNA table alone ('' when it can be tried).

    Args:
        patient: PatientID.
        segs: the patient's SEG series.
        imaging: the patients with DICOM files.
        rna_patients: the patients with one RNA-seq column.
        duplicate_rna: the patients with several RNA-seq columns.
        rna_file: the RNA table (named in the reasons).

    Returns:
        The reason, or ''.
    """
    if patient in duplicate_rna:
        return f"the RNA table {rna_file.name} has several columns for this patient; keep one"
    if patient not in imaging:
        return "in the RNA table but no DICOM files in the download"
    if not segs:
        return "no DICOM SEG (tumour mask) in the download"
    if len(segs) > 1:
        uids = ", ".join(s.series_uid for s in segs)
        return f"{len(segs)} SEG series ({uids}): ambiguous which tumour mask to use; keep one"
    if patient not in rna_patients:
        return f"no RNA-seq column in {rna_file.name}"
    return ""


def plan_jobs(
    index: dicom.DicomIndex,
    rna: RNATable,
    rna_file: Path,
    input_dir: Path,
    output_dir: Path,
    config: PrepareConfig,
    unusable_of: dict[str, list[dicom.FileProblem]],
) -> tuple[dict[str, PatientRecord], list[PatientJob]]:
    """One job per patient that can be tried; a record for every patient excluded before any pixel is read.

    Args:
        index: the download index.
        rna: the RNA table.
        rna_file: its path (named in the reasons).
        input_dir: the input folder (file signatures are relative to it).
        output_dir: the prepared dataset folder.
        config: the settings.
        unusable_of: from :func:`attribute_problems`.

    Returns:
        ``(patient -> record of the excluded patients, jobs in patient order)``.
    """
    imaging, rna_patients, duplicate_rna = set(index.patients), set(rna.expression.index), set(rna.duplicate_patients)
    records: dict[str, PatientRecord] = {}
    jobs: list[PatientJob] = []
    for patient in sorted(imaging | rna_patients | duplicate_rna):
        segs = dicom.find_patient_segs(index, patient)
        reason = _exclusion_reason(patient, segs, imaging, rna_patients, duplicate_rna, rna_file)
        if reason:
            records[patient] = PatientRecord(patient, "excluded", reason)
            continue
        try:
            ct = dicom.resolve_referenced_ct(index, segs[0])
        except PatientDataError as err:
            records[patient] = PatientRecord(patient, "excluded", err.reason)
            continue
        # Unusable files that may be slices of this CT: those in its folder not known to belong to another series.
        unusable = [
            p for p in unusable_of.get(patient, [])
            if p.path.parent == ct.folder and p.series_uid in ("", ct.series_uid)
        ]  # fmt: skip
        files = ct.files + segs[0].files + [p.path for p in unusable]  # a repaired file prepares the patient again
        fingerprint = sha("\n".join([config.image_fingerprint(), files_signature(files, input_dir)]))
        jobs.append(PatientJob(patient, segs[0], ct, output_dir / "samples" / patient, fingerprint, config, unusable))
    return records, jobs


def split_reused(jobs: list[PatientJob], records: dict[str, PatientRecord]) -> tuple[list[PatientJob], list[str]]:
    """Split the jobs into those to compute and those whose sample is complete and up to date.

    Args:
        jobs: from :func:`plan_jobs`.
        records: patient -> record; the reused patients are recorded as included here.

    Returns:
        ``(jobs to compute, reused patients)``.
    """
    todo, reused = [], []
    for job in jobs:
        done = read_json(job.out_dir / "fingerprint.json")
        complete = all((job.out_dir / f).is_file() for f in SAMPLE_FILES)
        if done and done.get("fingerprint") == job.fingerprint and complete:
            records[job.patient] = PatientRecord(job.patient, "included", details=done["details"])
            reused.append(job.patient)
        else:
            todo.append(job)
    return todo, reused


def note_unusable_files(
    records: dict[str, PatientRecord], unusable_of: dict[str, list[dicom.FileProblem]], input_dir: Path
) -> None:
    """Name every unusable file of a patient in its record, whether the patient was kept or not.

    Args:
        records: patient -> record, updated here.
        unusable_of: from :func:`attribute_problems`.
        input_dir: the input folder the paths are shown relative to.
    """
    for patient, problems in unusable_of.items():
        if patient in records:
            records[patient].details["unusable_files"] = [describe_problem(p, input_dir) for p in problems]
